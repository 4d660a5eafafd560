"""fastformers: transformers' API, compiled kernels underneath.

Change `from transformers import ...` to `from fastformers import ...`.
"""

__version__ = "0.1.0"

from . import ops
from .auto import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from .configuration import PretrainedConfig
from .modeling import PreTrainedModel
from .models.bert import (
    BertConfig,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from .tokenization import AutoTokenizer, BatchEncoding, PreTrainedTokenizerFast

__all__ = [name for name in dir() if not name.startswith("_")]
