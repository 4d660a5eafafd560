"""Registries: model_type -> config class and model classes per head, and the Auto classes.

Architecture modules are imported on first use, so `import fastformers` stays light.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Dict

from .configuration import PretrainedConfig, read_config_dict
from .loading.hub import refuse_remote_code

# model_type -> module under fastformers.models
MODEL_MODULES: Dict[str, str] = {
    "bart": "bart",
    "bert": "bert",
    "distilbert": "distilbert",
    "electra": "electra",
    "gpt2": "gpt2",
    "llama": "llama",
    "marian": "marian",
    "mistral": "llama",
    "qwen2": "llama",
    "qwen3": "llama",
    "roberta": "roberta",
    "t5": "t5",
    "xlm-roberta": "xlm_roberta",
}


def _module(model_type: Any, source: str):
    if model_type not in MODEL_MODULES:
        raise ValueError(
            f"{source}: model_type {model_type!r} is not supported by fastformers; "
            f"supported: {', '.join(sorted(MODEL_MODULES))}"
        )
    return importlib.import_module(f".models.{MODEL_MODULES[model_type]}", __package__)


def config_class_for(model_type: str, source: str = "config") -> type:
    module = _module(model_type, source)
    return next(c for c in vars(module).values()
                if isinstance(c, type) and issubclass(c, PretrainedConfig) and c.model_type == model_type)


def _model_classes(model_type: str, source: str) -> Dict[str, type]:
    """task name -> class for a model_type (a module may serve several types, e.g. the Llama family)."""
    module = _module(model_type, source)
    by_type = getattr(module, "MODEL_CLASSES_BY_TYPE", None)
    return by_type[model_type] if by_type else module.MODEL_CLASSES


class AutoConfig:
    """Reads config.json and returns the config class of its model_type."""

    def __init__(self) -> None:
        raise TypeError("AutoConfig is not instantiated: use AutoConfig.from_pretrained(...) or AutoConfig.for_model(...)")

    @staticmethod
    def for_model(model_type: str, **kwargs: Any) -> PretrainedConfig:
        return config_class_for(model_type, "AutoConfig.for_model")(**kwargs)

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, *, revision=None, cache_dir=None, local_files_only=False,
                        token=None, trust_remote_code: bool = False, gguf_file: str | None = None,
                        **kwargs: Any) -> PretrainedConfig:
        refuse_remote_code(trust_remote_code)
        path, data = read_config_dict(name_or_path, gguf_file, revision=revision, cache_dir=cache_dir,
                                      local_files_only=local_files_only, token=token)
        if "model_type" not in data:
            raise ValueError(f"{path} has no 'model_type' key; supported model types: {', '.join(sorted(MODEL_MODULES))}")
        config = config_class_for(data["model_type"], path).from_dict(data, **kwargs)
        config._name_or_path = os.fspath(name_or_path)
        return config


class _AutoModel:
    task = "AutoModel"

    def __init__(self) -> None:
        raise TypeError(f"{type(self).__name__} is not instantiated: use .from_pretrained(...) or .from_config(...)")

    @classmethod
    def model_class(cls, config: PretrainedConfig) -> type:
        classes = _model_classes(config.model_type, cls.__name__)
        if cls.task not in classes:
            have = [t for t in MODEL_MODULES if cls.task in _model_classes(t, cls.__name__)]
            raise ValueError(f"{cls.__name__} does not support model_type {config.model_type!r}; "
                             f"it supports: {', '.join(sorted(have))}")
        return classes[cls.task]

    @classmethod
    def from_config(cls, config: PretrainedConfig, **kwargs: Any):
        return cls.model_class(config).from_config(config, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, config: PretrainedConfig | None = None,
                        revision=None, cache_dir=None, local_files_only=False, token=None,
                        trust_remote_code: bool = False, **kwargs: Any):
        refuse_remote_code(trust_remote_code)
        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        if config is None:
            model_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _LOAD_ARGS}
            config = AutoConfig.from_pretrained(name_or_path, **hub, gguf_file=kwargs.get("gguf_file"),
                                                **{k: v for k, v in kwargs.items() if k != "gguf_file"})
            kwargs = dict(model_kwargs, gguf_file=kwargs.get("gguf_file"))
        return cls.model_class(config).from_pretrained(name_or_path, config=config, **hub, **kwargs)


# from_pretrained arguments of the model, not config attributes (the quantization request included: it goes to
# the loading as it is, never through the config)
_LOAD_ARGS = {"torch_dtype", "dtype", "device", "device_map", "use_safetensors", "attn_implementation",
              "quantization_config", "load_in_8bit", "load_in_4bit"}


def _auto(task: str) -> type:
    return type(task, (_AutoModel,), {"task": task, "__doc__": f"Picks the {task} class for a config's model_type."})


AutoModel = _auto("AutoModel")
AutoModelForMaskedLM = _auto("AutoModelForMaskedLM")
AutoModelForSequenceClassification = _auto("AutoModelForSequenceClassification")
AutoModelForTokenClassification = _auto("AutoModelForTokenClassification")
AutoModelForQuestionAnswering = _auto("AutoModelForQuestionAnswering")
AutoModelForMultipleChoice = _auto("AutoModelForMultipleChoice")
AutoModelForPreTraining = _auto("AutoModelForPreTraining")
AutoModelForCausalLM = _auto("AutoModelForCausalLM")
AutoModelForSeq2SeqLM = _auto("AutoModelForSeq2SeqLM")
AutoModelForTextEncoding = _auto("AutoModelForTextEncoding")
