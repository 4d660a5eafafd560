"""The config base class: config.json in, attributes out, config.json back.

Keys a config class does not know are kept as attributes and written back unchanged, so a config
round-trips through fastformers without losing anything transformers (or another tool) stored in it.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from typing import Any, Dict, Optional

from .loading.hub import no_duplicate_keys, refuse_remote_code, resolve_file

CONFIG_NAME = "config.json"

# Attributes every config has, with transformers' defaults.
_COMMON_DEFAULTS: Dict[str, Any] = {
    "architectures": None,
    "problem_type": None,
    "pad_token_id": None,
    "bos_token_id": None,
    "eos_token_id": None,
    "tie_word_embeddings": True,
    "is_decoder": False,
    "is_encoder_decoder": False,
    "output_hidden_states": False,
    "output_attentions": False,
    "return_dict": True,
    "dtype": None,
}


def read_json(path: str) -> Dict[str, Any]:
    """Read a JSON object from a file, with an error that names the file when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f, object_pairs_hook=no_duplicate_keys)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    except ValueError as e:  # a key twice
        raise ValueError(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def read_config_dict(name_or_path, gguf_file: Optional[str] = None, **hub) -> tuple:
    """(source path, config dict) from config.json, or from a GGUF file's metadata."""
    if gguf_file is not None:
        from .loading.gguf import read_gguf

        path = resolve_file(name_or_path, gguf_file, **hub)
        return path, read_gguf(path).config_dict()
    path = resolve_file(name_or_path, CONFIG_NAME, **hub)
    return path, read_json(path)


class PretrainedConfig:
    """Base config. Subclasses set `model_type` and `defaults` (their architecture's keys)."""

    model_type: str = ""
    defaults: Dict[str, Any] = {}
    # Alternative names for attributes (e.g. GPT-2's n_embd for hidden_size): alias -> attribute.
    attribute_map: Dict[str, str] = {}

    def __init__(self, **kwargs: Any) -> None:
        # Keys given explicitly (from a config.json or by the caller) are always written back.
        object.__setattr__(self, "_given_keys", set(kwargs))
        if "torch_dtype" in kwargs:  # transformers < 5 spelled it torch_dtype
            dtype = kwargs.pop("torch_dtype")
            kwargs.setdefault("dtype", dtype)
            self._given_keys.discard("torch_dtype")
            self._given_keys.add("dtype")
        id2label = kwargs.pop("id2label", None)
        label2id = kwargs.pop("label2id", None)
        num_labels = kwargs.pop("num_labels", None)
        for key, value in {**_COMMON_DEFAULTS, **self.defaults}.items():
            setattr(self, key, copy.deepcopy(value))
        for key, value in kwargs.items():
            setattr(self, key, value)
        if id2label is not None and num_labels is not None and num_labels != len(id2label):
            # an explicit num_labels (e.g. from_pretrained(..., num_labels=5)) wins, as in transformers
            logging.getLogger("fastformers").warning(
                "num_labels=%d differs from the %d labels of id2label: using %d generic labels",
                num_labels, len(id2label), num_labels)
            id2label = label2id = None
        if id2label is not None:
            self.id2label = {int(k): v for k, v in id2label.items()}
        else:
            self.num_labels = 2 if num_labels is None else num_labels
        self.label2id = {v: k for k, v in self.id2label.items()} if label2id is None else dict(label2id)
        self._given_keys.update({"id2label", "label2id"} if id2label is not None else set())
        check_size_fields(self)

    # -- attribute aliases ------------------------------------------------------------------
    def __setattr__(self, key: str, value: Any) -> None:
        key = self.attribute_map.get(key, key)
        object.__setattr__(self, key, value)

    def __getattr__(self, key: str) -> Any:  # only called when normal lookup fails
        mapped = type(self).attribute_map.get(key)
        if mapped is not None:
            return getattr(self, mapped)
        raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")

    # -- labels -----------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"num_labels must be a positive integer, got {n!r}")
        if getattr(self, "id2label", None) is None or len(self.id2label) != n:
            self.id2label = {i: f"LABEL_{i}" for i in range(n)}
            self.label2id = {v: k for k, v in self.id2label.items()}

    @property
    def use_return_dict(self) -> bool:
        return self.return_dict

    def get_text_config(self, decoder: Optional[bool] = None, encoder: Optional[bool] = None) -> "PretrainedConfig":
        """The config of the text model: this one (no multimodal configs here). Trainer reads special token ids
        through it."""
        return self

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """Every attribute, as JSON-ready values."""
        out = {k: copy.deepcopy(v) for k, v in self.__dict__.items() if not k.startswith("_")}
        out["model_type"] = self.model_type
        if out.get("dtype") is not None and not isinstance(out["dtype"], str):
            out["dtype"] = str(out["dtype"]).removeprefix("torch.")
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return out

    def to_json_dict(self) -> Dict[str, Any]:
        """What save_pretrained writes: the architecture's keys, every key that was given (unknown
        ones included, unchanged unless changed here), and common keys that differ from default."""
        full = self.to_dict()
        labels_default = self.id2label == {i: f"LABEL_{i}" for i in range(len(self.id2label))}
        keep = {}
        for key, value in full.items():
            if key in self.defaults or key in self._given_keys or key == "model_type":
                keep[key] = value
            elif key in ("id2label", "label2id"):
                if not labels_default:
                    keep[key] = value
            elif _COMMON_DEFAULTS.get(key, object()) != value:
                keep[key] = value
        return keep

    def to_json_string(self) -> str:
        return json.dumps(self.to_json_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, CONFIG_NAME), "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    @classmethod
    def from_dict(cls, config_dict: Dict[str, Any], **kwargs: Any) -> "PretrainedConfig":
        config_dict = {k: v for k, v in config_dict.items() if k != "model_type"}
        config_dict.update(kwargs)
        return cls(**config_dict)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, revision: Optional[str] = None,
                        cache_dir=None, local_files_only: bool = False, token=None,
                        trust_remote_code: bool = False, gguf_file: Optional[str] = None,
                        **kwargs: Any) -> "PretrainedConfig":
        refuse_remote_code(trust_remote_code)
        path, data = read_config_dict(name_or_path, gguf_file, revision=revision, cache_dir=cache_dir,
                                      local_files_only=local_files_only, token=token)
        model_type = data.get("model_type")
        if cls.model_type and model_type and model_type != cls.model_type:
            raise ValueError(f"{path} is for model_type {model_type!r}, not {cls.model_type!r} ({cls.__name__})")
        config = cls.from_dict(data, **kwargs)
        config._name_or_path = os.fspath(name_or_path)
        return config

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PretrainedConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)}"


# -- size sanity: what a config would make us allocate ---------------------------------------------------
# Keys that size a model (every family's spelling). They must be positive integers; None is accepted where
# it means "the model's default" (_NONE_MEANS_DEFAULT).
_SIZE_KEYS = frozenset((
    "vocab_size", "hidden_size", "d_model", "dim", "n_embd", "embedding_size", "num_hidden_layers", "num_layers",
    "n_layer", "n_layers", "encoder_layers", "decoder_layers", "num_decoder_layers", "num_attention_heads",
    "num_heads", "n_head", "n_heads", "encoder_attention_heads", "decoder_attention_heads", "num_key_value_heads",
    "intermediate_size", "d_ff", "hidden_dim", "n_inner", "encoder_ffn_dim", "decoder_ffn_dim",
    "max_position_embeddings", "n_positions", "head_dim", "d_kv", "decoder_vocab_size",
    "relative_attention_num_buckets", "type_vocab_size"))
_NONE_MEANS_DEFAULT = frozenset(("num_key_value_heads", "head_dim", "num_decoder_layers", "n_inner",
                                 "decoder_vocab_size"))
_CORE = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")  # read through attribute_map
# a layer's Python modules and tensor headers, beyond its parameters (measured ~47 KB for a tiny Llama layer)
_LAYER_OVERHEAD = 32 * 1024
_TOO_MANY = 10  # a config implying more than this many times the parameters the weights hold is refused


def check_config_sizes(config: "PretrainedConfig") -> None:
    """Types and signs of the size keys, and heads that divide the hidden size: a clear error naming the key
    and value before anything is allocated (a zero, negative, fractional or string size otherwise fails deep
    inside torch, or allocates absurdly)."""
    check_size_fields(config)
    vocab = config.vocab_size
    pad = getattr(config, "pad_token_id", None)
    if pad is not None and not (type(pad) is int and -vocab <= pad < vocab):
        # the embedding's padding row in most families (torch asserts on it); generate's filler in the others
        raise ValueError(f"{type(config).__name__}: pad_token_id={pad!r} must be a token id of the vocabulary "
                         f"(vocab_size={vocab})")
    for key in ("bos_token_id", "eos_token_id", "decoder_start_token_id"):
        value = getattr(config, key, None)
        ids = value if isinstance(value, list) else [value]
        if value is not None and not all(type(v) is int for v in ids):
            raise ValueError(f"{type(config).__name__}: {key}={value!r} must be a token id, a list of them or null")
    hidden, heads = config.hidden_size, config.num_attention_heads
    # configs with their own head_dim (T5's d_kv, Llama's head_dim or hidden // heads) need no division
    if getattr(config, "head_dim", None) is None and not hasattr(type(config), "attention_head_dim") \
            and hidden % heads:
        raise ValueError(f"{type(config).__name__}: {_spelling(config, 'hidden_size')}={hidden} is not a multiple "
                         f"of {_spelling(config, 'num_attention_heads')}={heads}")


def check_size_fields(config: "PretrainedConfig") -> None:
    """Each size key that is set is a positive integer (run when a config is made, so that a subclass's own
    arithmetic on them, e.g. Llama's heads per key/value head, never divides by zero)."""
    for key, value in config.__dict__.items():
        if key in _SIZE_KEYS and (value is not None or key not in _NONE_MEANS_DEFAULT) \
                and (type(value) is not int or value < 1):
            raise ValueError(f"{type(config).__name__}: {key}={value!r} must be a positive integer")
    for key in _CORE:  # these have no default to fall back to
        value = getattr(config, key, None)
        if type(value) is not int or value < 1:
            raise ValueError(f"{type(config).__name__}: {_spelling(config, key)}={value!r} must be a positive integer")


def _spelling(config: "PretrainedConfig", key: str) -> str:
    """The name the config stores `key` under (GPT-2's n_embd for hidden_size)."""
    return type(config).attribute_map.get(key, key)


def implied_parameters(config: "PretrainedConfig") -> int:
    """A lower bound on the parameters a model of this config has: embeddings plus, per layer, attention
    (at least 2 h^2) and the feed-forward block (at least 2 h ffn). Learned position tables are left out
    (RoPE models declare long ranges they never store)."""
    h = config.hidden_size
    sizes = config.__dict__
    layers = _layers(config)
    ffn = next((sizes[k] for k in ("intermediate_size", "d_ff", "hidden_dim", "n_inner", "encoder_ffn_dim")
                if sizes.get(k) is not None), 4 * h)
    return config.vocab_size * h + layers * (2 * h * h + 2 * h * ffn)


def _layers(config: "PretrainedConfig") -> int:
    sizes = config.__dict__
    if sizes.get("encoder_layers") is not None or sizes.get("decoder_layers") is not None:
        return (sizes.get("encoder_layers") or 0) + (sizes.get("decoder_layers") or 0)
    layers = config.num_hidden_layers
    if getattr(config, "is_encoder_decoder", False):
        layers += sizes.get("num_decoder_layers") or layers
    return layers


def _size_keys_text(config: "PretrainedConfig") -> str:
    return ", ".join(f"{k}={v}" for k, v in config.__dict__.items() if k in _SIZE_KEYS and v is not None)


def check_against_weights(config: "PretrainedConfig", weights_params: int, where: str) -> None:
    """Refuse a config implying more than _TOO_MANY times the parameters the weights can hold
    (`weights_params`: an upper bound from the files), before the model is built."""
    implied = implied_parameters(config)
    if implied > _TOO_MANY * max(weights_params, 1):
        raise ValueError(f"the config of {where} implies at least {implied:,} parameters ({_size_keys_text(config)}), "
                         f"more than {_TOO_MANY}x the at most {weights_params:,} its weights hold: the config "
                         f"does not describe these weights")


def check_against_memory(config: "PretrainedConfig", itemsize: int) -> None:
    """Refuse building a model whose parameters alone exceed the memory available (from_config, or a model
    class called with a config): the error names the sizes instead of an allocation failure or swapping."""
    available = available_memory()
    needed = implied_parameters(config) * itemsize + _LAYER_OVERHEAD * _layers(config)
    if available is not None and needed > available:
        raise ValueError(f"a model of this config needs at least {needed:,} bytes for its parameters "
                         f"({_size_keys_text(config)}), more than the {available:,} bytes of memory available")


def available_memory() -> Optional[int]:
    """MemAvailable of /proc/meminfo (Linux), else None (no check)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
