"""fastformers: transformers' API, compiled kernels underneath.

Change `from transformers import ...` to `from fastformers import ...`. Architecture classes
(`BertModel`, `RobertaForMaskedLM`, `DistilBertConfig`, ...) are importable from here too; their
modules load on first use.
"""

__version__ = "0.1.0"

import importlib as _importlib

from . import layers, ops
from .auto import (
    MODEL_MODULES as _MODEL_MODULES,
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTextEncoding,
    AutoModelForTokenClassification,
)
from .configuration import PretrainedConfig
from .generation import GenerationConfig, TextIteratorStreamer, TextStreamer
from .layers import weights_changed
from .modeling import PreTrainedModel
from .pipelines import pipeline
from .quantization import QuantizationConfig
from .tokenization import AutoTokenizer, BatchEncoding, PreTrainedTokenizerFast


def __getattr__(name: str):
    """`from fastformers import XLMRobertaForMaskedLM` and friends, imported lazily."""
    for module_name in dict.fromkeys(_MODEL_MODULES.values()):
        module = _importlib.import_module(f".models.{module_name}", __name__)
        if not name.startswith("_") and isinstance(getattr(module, name, None), type) and name[0].isupper():
            value = getattr(module, name)
            if value.__module__ == module.__name__:
                globals()[name] = value
                return value
    raise AttributeError(f"module 'fastformers' has no attribute {name!r}")
