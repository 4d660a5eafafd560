"""Tokenizers with transformers' call signature, on top of the `tokenizers` library.

`AutoTokenizer.from_pretrained` reads the same files as transformers (tokenizer.json, tokenizer_config.json,
special_tokens_map.json, vocab.txt, vocab.json + merges.txt, config.json) and builds the same backend
`tokenizers.Tokenizer` transformers 5 builds for them, so ids, tokens, offsets and decoded text are identical.

Two transformers 5 behaviours worth knowing, both reproduced here:

* For the BERT, RoBERTa and GPT-2 tokenizer classes transformers does *not* use the pipeline stored in
  tokenizer.json as is: it keeps the vocabulary (and merges), then rebuilds normalizer, pre-tokenizer and decoder
  from tokenizer_config.json (`do_lower_case`, `strip_accents`, `add_prefix_space`, ...) and, for BERT and
  RoBERTa, the post-processor from the special tokens. Any other class (or no class) uses tokenizer.json as is.
* `model_input_names` (whether `token_type_ids` is returned) depends on the tokenizer class, not on the file.

``from_pretrained(..., gguf_file="model.gguf")`` builds the tokenizer from a GGUF file's metadata, as transformers
does (see fastformers.loading.gguf). `apply_chat_template` renders the tokenizer's Jinja chat template in jinja2's
immutable sandbox with transformers' globals, filters and post-processing, so text and ids match transformers.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import os
import re
import warnings
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import datetime
from typing import Any, NamedTuple, Optional

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE, Unigram, WordPiece

from fastformers.loading.hub import refuse_remote_code, resolve_file

logger = logging.getLogger(__name__)

__all__ = [
    "AutoTokenizer",
    "BatchEncoding",
    "CharSpan",
    "PreTrainedTokenizerFast",
    "TokenSpan",
    "VERY_LARGE_INTEGER",
]

VERY_LARGE_INTEGER = int(1e30)  # model_max_length of a tokenizer with no declared limit (as in transformers)
LARGE_INTEGER = int(1e20)

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"

SPECIAL_TOKENS_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

# ---------------------------------------------------------------------------------------------------------------
# What transformers does for each tokenizer class
# ---------------------------------------------------------------------------------------------------------------

# Classes transformers implements as (aliases of) BertTokenizer / RobertaTokenizer / GPT2Tokenizer: name -> the
# class transformers really instantiates (the name it writes back on save_pretrained).
_CANONICAL_CLASS = {
    "BertTokenizer": "BertTokenizer",
    "ElectraTokenizer": "BertTokenizer",
    "LayoutLMTokenizer": "BertTokenizer",
    "SqueezeBertTokenizer": "BertTokenizer",
    "MobileBertTokenizer": "BertTokenizer",
    "LxmertTokenizer": "BertTokenizer",
    "DistilBertTokenizer": "DistilBertTokenizer",
    "RobertaTokenizer": "RobertaTokenizer",
    "BartTokenizer": "RobertaTokenizer",
    "LongformerTokenizer": "RobertaTokenizer",
    "LEDTokenizer": "RobertaTokenizer",
    "MvpTokenizer": "RobertaTokenizer",
    "GPT2Tokenizer": "GPT2Tokenizer",
}
_FAMILY = {"BertTokenizer": "bert", "DistilBertTokenizer": "bert", "RobertaTokenizer": "roberta",
           "GPT2Tokenizer": "gpt2", "XLMRobertaTokenizer": "xlmr"}

# Classes whose inputs include token_type_ids (transformers' `model_input_names`); every other class, and a plain
# PreTrainedTokenizerFast, returns input_ids and attention_mask only.
_WITH_TYPE_IDS = ["input_ids", "token_type_ids", "attention_mask"]
_MODEL_INPUT_NAMES = {
    "BertTokenizer": _WITH_TYPE_IDS,
    "ConvBertTokenizer": _WITH_TYPE_IDS,
    "DPRQuestionEncoderTokenizer": _WITH_TYPE_IDS,
    "DPRContextEncoderTokenizer": _WITH_TYPE_IDS,
    "MarkupLMTokenizer": _WITH_TYPE_IDS,
    "CanineTokenizer": ["input_ids", "attention_mask", "token_type_ids"],
    "DebertaTokenizer": ["input_ids", "attention_mask", "token_type_ids"],
    "DebertaV2Tokenizer": ["input_ids", "attention_mask", "token_type_ids"],
    "LayoutLMv2Tokenizer": ["input_ids", "attention_mask", "token_type_ids"],
    "TapasTokenizer": ["input_ids", "attention_mask", "token_type_ids"],
    "FNetTokenizer": ["input_ids", "token_type_ids"],
}
_DEFAULT_MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]

# config.json model_type -> tokenizer class, used when tokenizer_config.json names no class (transformers'
# TOKENIZER_MAPPING; note distilbert maps to BertTokenizer there, so it returns token_type_ids).
_MODEL_TYPE_TO_CLASS = {
    "bert": "BertTokenizer",
    "distilbert": "BertTokenizer",
    "electra": "BertTokenizer",
    "roberta": "RobertaTokenizer",
    "bart": "RobertaTokenizer",
    "longformer": "RobertaTokenizer",
    "xlm-roberta": "XLMRobertaTokenizer",
    "camembert": "CamembertTokenizer",
    "gpt2": "GPT2Tokenizer",
    "mpnet": "MPNetTokenizer",
    "deberta": "DebertaTokenizer",
    "deberta-v2": "DebertaV2Tokenizer",
    "t5": "T5Tokenizer",
    "mt5": "T5Tokenizer",
    "marian": "MarianTokenizer",
}
# Classes without a vocab.json + merges.txt layout of their own that we still read as RoBERTa-style BPE from it.
_ROBERTA_LIKE_SLOW = {"XLMRobertaTokenizer", "CamembertTokenizer"}

_FAMILY_DEFAULTS = {
    "bert": {
        "do_lower_case": True, "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
        "cls_token": "[CLS]", "mask_token": "[MASK]", "tokenize_chinese_chars": True, "strip_accents": None,
    },
    "roberta": {
        "errors": "replace", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>", "add_prefix_space": False,
        "trim_offsets": True,
    },
    "gpt2": {
        "errors": "replace", "unk_token": "<|endoftext|>", "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>", "pad_token": None, "add_prefix_space": False,
    },
    "xlmr": {
        "add_prefix_space": True, "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
    },
}


# ---------------------------------------------------------------------------------------------------------------
# BatchEncoding
# ---------------------------------------------------------------------------------------------------------------

class CharSpan(NamedTuple):
    """A span of characters in the original string: [start, end)."""

    start: int
    end: int


class TokenSpan(NamedTuple):
    """A span of tokens in the encoded sequence: [start, end)."""

    start: int
    end: int


def _flatten(value):
    out = []
    for v in value:
        if isinstance(v, (list, tuple)):
            out.extend(_flatten(v))
        else:
            out.append(v)
    return out


def _tensor_kind(tensor_type) -> Optional[str]:
    if tensor_type is None:
        return None
    kind = getattr(tensor_type, "value", tensor_type)
    if kind in ("pt", "np"):
        return kind
    raise ValueError(f"return_tensors={tensor_type!r} is not supported: use 'pt' (PyTorch), 'np' (NumPy) or None")


def _to_py(obj):
    """Tensors, arrays and numpy scalars -> plain python lists / numbers."""
    if isinstance(obj, Mapping):
        return {k: _to_py(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_py(o) for o in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if type(obj).__module__.startswith("torch") and hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def _is_torch_tensor(obj) -> bool:
    return type(obj).__module__.startswith("torch") and type(obj).__name__ == "Tensor"


class BatchEncoding(dict):
    """The output of a tokenizer call: a dict of lists (or tensors), plus the `tokenizers.Encoding` objects it was
    made from, for mapping between characters, words and tokens."""

    def __init__(self, data=None, encoding=None, tensor_type=None, prepend_batch_axis: bool = False,
                 n_sequences: Optional[int] = None):
        super().__init__(data or {})
        if encoding is not None and not isinstance(encoding, (list, tuple)):
            encoding = [encoding]
        self._encodings = list(encoding) if encoding is not None else None
        if n_sequences is None and self._encodings:
            n_sequences = self._encodings[0].n_sequences
        self._n_sequences = n_sequences
        self.convert_to_tensors(tensor_type=tensor_type, prepend_batch_axis=prepend_batch_axis)

    # -- dict behaviour -----------------------------------------------------------------------------------------
    def __getitem__(self, item):
        if isinstance(item, str):
            return dict.__getitem__(self, item)
        if self.__dict__.get("_encodings") is not None:
            return self._encodings[item]
        if isinstance(item, slice):
            return {key: value[item] for key, value in self.items()}
        raise KeyError(
            "Invalid key. Only three types of key are available: (1) string, (2) integers for backend Encoding, "
            "and (3) slices for data subsetting."
        )

    def __getattr__(self, item: str):
        if item.startswith("__") or item in ("_encodings", "_n_sequences"):
            raise AttributeError(item)
        try:
            return dict.__getitem__(self, item)
        except KeyError:
            raise AttributeError(f"BatchEncoding has no key or attribute {item!r}") from None

    @property
    def data(self) -> dict:
        """The underlying dict (transformers' BatchEncoding is a UserDict; this keeps `.data` working)."""
        return self

    @property
    def n_sequences(self) -> Optional[int]:
        return self._n_sequences

    @property
    def is_fast(self) -> bool:
        return self._encodings is not None

    @property
    def encodings(self):
        """The `tokenizers.Encoding` of each sequence of the batch (overflowing windows included), or None."""
        return self._encodings

    # -- token / word / char mapping ----------------------------------------------------------------------------
    def _encoding(self, batch_index: int):
        if not self._encodings:
            raise ValueError("this BatchEncoding holds no tokenizers.Encoding (it was not made by a tokenizer call)")
        return self._encodings[batch_index]

    @staticmethod
    def _split(batch_or_index: int, index: Optional[int]):
        return (batch_or_index, index) if index is not None else (0, batch_or_index)

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self._encoding(batch_index).tokens

    def sequence_ids(self, batch_index: int = 0) -> list[Optional[int]]:
        return self._encoding(batch_index).sequence_ids

    def word_ids(self, batch_index: int = 0) -> list[Optional[int]]:
        return self._encoding(batch_index).word_ids

    def words(self, batch_index: int = 0) -> list[Optional[int]]:
        return self.word_ids(batch_index)

    def _seq_len(self, batch_index: int) -> int:
        return len(self._encoding(batch_index).ids)

    def token_to_sequence(self, batch_or_token_index: int, token_index: Optional[int] = None) -> Optional[int]:
        b, t = self._split(batch_or_token_index, token_index)
        b = b if b >= 0 else len(self._encodings or []) + b
        t = t if t >= 0 else self._seq_len(b) + t
        return self._encoding(b).token_to_sequence(t)

    def token_to_word(self, batch_or_token_index: int, token_index: Optional[int] = None) -> Optional[int]:
        b, t = self._split(batch_or_token_index, token_index)
        b = b if b >= 0 else len(self._encodings or []) + b
        t = t if t >= 0 else self._seq_len(b) + t
        return self._encoding(b).token_to_word(t)

    def word_to_tokens(self, batch_or_word_index: int, word_index: Optional[int] = None,
                       sequence_index: int = 0) -> Optional[TokenSpan]:
        b, w = self._split(batch_or_word_index, word_index)
        b = b if b >= 0 else len(self._encodings or []) + b
        w = w if w >= 0 else self._seq_len(b) + w
        span = self._encoding(b).word_to_tokens(w, sequence_index)
        return TokenSpan(*span) if span is not None else None

    def token_to_chars(self, batch_or_token_index: int, token_index: Optional[int] = None) -> Optional[CharSpan]:
        b, t = self._split(batch_or_token_index, token_index)
        span = self._encoding(b).token_to_chars(t)
        return CharSpan(*span) if span is not None else None

    def char_to_token(self, batch_or_char_index: int, char_index: Optional[int] = None,
                      sequence_index: int = 0) -> Optional[int]:
        b, c = self._split(batch_or_char_index, char_index)
        return self._encoding(b).char_to_token(c, sequence_index)

    def word_to_chars(self, batch_or_word_index: int, word_index: Optional[int] = None,
                      sequence_index: int = 0) -> CharSpan:
        b, w = self._split(batch_or_word_index, word_index)
        return CharSpan(*self._encoding(b).word_to_chars(w, sequence_index))

    def char_to_word(self, batch_or_char_index: int, char_index: Optional[int] = None,
                     sequence_index: int = 0) -> Optional[int]:
        b, c = self._split(batch_or_char_index, char_index)
        return self._encoding(b).char_to_word(c, sequence_index)

    # -- tensors ------------------------------------------------------------------------------------------------
    def convert_to_tensors(self, tensor_type=None, prepend_batch_axis: bool = False) -> "BatchEncoding":
        kind = _tensor_kind(tensor_type)
        if kind is None:
            return self
        if kind == "pt":
            import torch

            def as_tensor(value):
                if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
                    return torch.from_numpy(np.array(value))
                dtype = torch.int64 if len(_flatten(value)) == 0 else None
                return torch.tensor(value, dtype=dtype)

            is_tensor = torch.is_tensor
        else:
            def as_tensor(value, dtype=None):
                if (isinstance(value, (list, tuple)) and value
                        and isinstance(value[0], (list, tuple, np.ndarray))):
                    if len({len(v) for v in value}) > 1 and dtype is None:  # ragged: an object array of arrays
                        value = as_tensor([np.asarray(v) for v in value], dtype=object)
                if dtype is None and len(_flatten(value)) == 0:
                    dtype = np.int64
                return np.asarray(value, dtype=dtype)

            def is_tensor(obj):
                return isinstance(obj, np.ndarray)

        for key, value in list(self.items()):
            if prepend_batch_axis:
                value = [value]
            if is_tensor(value):
                continue
            try:
                self[key] = as_tensor(value)
            except Exception as e:
                raise ValueError(
                    "Unable to create tensor, you should probably activate truncation and/or padding with "
                    "'padding=True' 'truncation=True' to have batched tensors with the same length. Perhaps your "
                    f"features (`{key}` in this case) have excessive nesting (inputs type `list` where type `int` "
                    "is expected)."
                ) from e
        return self

    def to(self, device, *, non_blocking: bool = False) -> "BatchEncoding":
        """Move every tensor to `device` (PyTorch only); other values are left as they are."""
        import torch

        if isinstance(device, (str, int, torch.device)):
            for key, value in list(self.items()):
                if hasattr(value, "to") and callable(value.to):
                    self[key] = value.to(device=device, non_blocking=non_blocking)
        else:
            logger.warning("Attempting to cast a BatchEncoding to type %s. This is not supported.", device)
        return self

    def copy(self) -> "BatchEncoding":
        return BatchEncoding(dict(self), self._encodings, n_sequences=self._n_sequences)

    def __repr__(self) -> str:
        return repr(dict(self))

    def __reduce__(self):
        return (self.__class__, (dict(self), self._encodings, None, False, self._n_sequences))


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------

def _as_added_token(value, special: Optional[bool] = None):
    """str / AddedToken / {"content": ..., ...} (optionally with "__type") -> str or AddedToken."""
    if isinstance(value, dict) and "content" in value:
        fields = {k: v for k, v in value.items() if k != "__type"}
        if special is not None:
            fields["special"] = special
        return AddedToken(**fields)
    return value


def _convert_typed_dicts(obj):
    """Turn {"__type": "AddedToken", ...} dicts (transformers' saved form) back into AddedToken objects."""
    if isinstance(obj, dict) and obj.get("__type") == "AddedToken":
        return _as_added_token(obj)
    if isinstance(obj, (list, tuple)):
        return [_convert_typed_dicts(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _convert_typed_dicts(v) for k, v in obj.items()}
    return obj


def _added_token_state(token: AddedToken) -> dict:
    return {"content": token.content, "single_word": token.single_word, "lstrip": token.lstrip,
            "rstrip": token.rstrip, "normalized": token.normalized, "special": token.special}


def _jsonable(obj):
    """Config values -> JSON: AddedToken -> {"__type": "AddedToken", ...} (the form transformers reads back)."""
    if isinstance(obj, AddedToken):
        return {"__type": "AddedToken", **_added_token_state(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(o) for o in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _read_json(path: Optional[str], what: str):
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot parse {what} {path}: {e}") from None


def _clean_up_tokenization(text: str) -> str:
    """transformers' clean-up of spaces before punctuation and in English contractions."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


def _valid_text_input(t) -> bool:
    if isinstance(t, str):
        return True
    if isinstance(t, (list, tuple)):
        if len(t) == 0 or isinstance(t[0], str):
            return True
        if isinstance(t[0], (list, tuple)):
            if len(t[0]) == 0 or isinstance(t[0][0], str):
                return True
            if isinstance(t[0][0], (list, tuple)):
                return len(t[0][0]) == 0 or isinstance(t[0][0][0], str)
    return False


_PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
_TRUNCATION_STRATEGIES = ("only_first", "only_second", "longest_first", "do_not_truncate")


# ---------------------------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------------------------

class PreTrainedTokenizerFast:
    """A `tokenizers.Tokenizer` with transformers' tokenizer API.

    Build it from code with ``tokenizer_object=`` (a `tokenizers.Tokenizer`, copied) or ``tokenizer_file=`` (a
    tokenizer.json path), plus the special tokens and settings transformers' tokenizers take (``bos_token``,
    ``eos_token``, ``unk_token``, ``sep_token``, ``pad_token``, ``cls_token``, ``mask_token``,
    ``additional_special_tokens``/``extra_special_tokens``, ``model_max_length``, ``padding_side``,
    ``truncation_side``, ``clean_up_tokenization_spaces``, ``chat_template``, ``add_bos_token``,
    ``add_eos_token``, ``model_input_names``, ``added_tokens_decoder``, ``name_or_path``...). Special tokens
    missing from the vocabulary are added to it, as transformers does.
    """

    SPECIAL_TOKENS_ATTRIBUTES = list(SPECIAL_TOKENS_ATTRIBUTES)
    model_input_names: list[str] = list(_DEFAULT_MODEL_INPUT_NAMES)
    padding_side: str = "right"
    truncation_side: str = "right"

    def __init__(self, *args, tokenizer_object: Optional[Tokenizer] = None, tokenizer_file: Optional[str] = None,
                 **kwargs):
        if args:
            raise TypeError("PreTrainedTokenizerFast takes keyword arguments only")
        backend = kwargs.pop("_backend", None)
        class_name = kwargs.pop("_tokenizer_class", None)
        default_input_names = kwargs.pop("_default_model_input_names", None)
        if backend is None:
            if tokenizer_object is not None:
                backend = copy.deepcopy(tokenizer_object)
            elif tokenizer_file is not None:
                backend = _tokenizer_from_file(os.fspath(tokenizer_file))
            else:
                raise ValueError(
                    "PreTrainedTokenizerFast needs a backend: pass tokenizer_object (a tokenizers.Tokenizer) or "
                    "tokenizer_file (a tokenizer.json path), or use AutoTokenizer.from_pretrained"
                )
        object.__setattr__(self, "_special_tokens_map", dict.fromkeys(SPECIAL_TOKENS_ATTRIBUTES))
        object.__setattr__(self, "_extra_special_tokens", [])
        self._tokenizer = backend
        self._tokenizer_class = class_name
        if "_id_map" not in self.__dict__:
            self._id_map = None  # backend id -> returned id, for ids the backend needs but the model lacks (Marian)
        if default_input_names is not None:
            self.model_input_names = list(default_input_names)

        # Truncation / padding stored in the backend (tokenizer.json) give the sides and the pad token defaults.
        truncation = backend.truncation
        if truncation is not None:
            kwargs.setdefault("truncation_side", truncation.get("direction", "right"))
        padding = backend.padding
        if padding is not None:
            kwargs.setdefault("pad_token", padding.get("pad_token"))
            kwargs.setdefault("padding_side", padding.get("direction", "right"))

        explicit_bos_eos = "add_bos_token" in kwargs or "add_eos_token" in kwargs
        self._add_bos_token = bool(kwargs.get("add_bos_token", False))
        self._add_eos_token = bool(kwargs.get("add_eos_token", False))

        if "additional_special_tokens" in kwargs and "extra_special_tokens" not in kwargs:
            kwargs["extra_special_tokens"] = kwargs.pop("additional_special_tokens")
        added_tokens_decoder = kwargs.pop("added_tokens_decoder", None) or {}
        self.init_kwargs = copy.deepcopy(kwargs)

        self.name_or_path = os.fspath(kwargs.pop("name_or_path", ""))
        self.verbose = kwargs.pop("verbose", False)
        self._pad_token_type_id = 0
        model_specific = dict(kwargs.pop("model_specific_special_tokens", None) or {})
        for key in list(kwargs):
            value = kwargs[key]
            if key in SPECIAL_TOKENS_ATTRIBUTES:
                kwargs.pop(key)
                value = _as_added_token(value)
                if value is None:
                    continue
                if not isinstance(value, (str, AddedToken)):
                    raise TypeError(f"Special token {key} has to be either str or AddedToken but got: {type(value)}")
                self._special_tokens_map[key] = value
            elif key == "extra_special_tokens":
                kwargs.pop(key)
                if value is None:
                    continue
                if isinstance(value, dict):
                    model_specific.update(value)
                elif isinstance(value, (list, tuple)):
                    self._extra_special_tokens = [_as_added_token(v) for v in value]
                else:
                    raise TypeError("extra_special_tokens must be a list/tuple of tokens or a dict of named tokens")
            elif key.endswith("_token") and isinstance(value, (str, AddedToken)):
                model_specific[key] = kwargs.pop(key)
        if model_specific:
            self.SPECIAL_TOKENS_ATTRIBUTES = list(self.SPECIAL_TOKENS_ATTRIBUTES) + [
                k for k in model_specific if k not in self.SPECIAL_TOKENS_ATTRIBUTES]
            for key, value in model_specific.items():
                self._special_tokens_map[key] = _as_added_token(value)

        model_max_length = kwargs.pop("model_max_length", kwargs.pop("max_len", None))
        self.model_max_length = model_max_length if model_max_length is not None else VERY_LARGE_INTEGER
        self.padding_side = kwargs.pop("padding_side", type(self).padding_side)
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"Padding side should be selected between 'right' and 'left', current value: "
                             f"{self.padding_side}")
        self.truncation_side = kwargs.pop("truncation_side", type(self).truncation_side)
        if self.truncation_side not in ("right", "left"):
            raise ValueError(f"Truncation side should be selected between 'right' and 'left', current value: "
                             f"{self.truncation_side}")
        self.model_input_names = list(kwargs.pop("model_input_names", self.model_input_names))
        self.clean_up_tokenization_spaces = kwargs.pop("clean_up_tokenization_spaces", False)
        self.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = kwargs.pop(
            "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False)
        self.split_special_tokens = kwargs.pop("split_special_tokens", False)
        chat_template = kwargs.pop("chat_template", None)
        if isinstance(chat_template, (list, tuple)):
            chat_template = {t["name"]: t["template"] for t in chat_template}
        self.chat_template = chat_template
        chat_control_tokens = kwargs.pop("chat_control_tokens", None)
        if chat_control_tokens is not None and not isinstance(chat_control_tokens, (list, tuple)):
            raise TypeError(f"`chat_control_tokens` should be a list of strings, got {chat_control_tokens!r}")
        self.chat_control_tokens = chat_control_tokens
        self.add_prefix_space = kwargs.get("add_prefix_space", False)
        self.deprecation_warnings: dict[str, bool] = {}
        self._tokenizer.encode_special_tokens = bool(self.split_special_tokens)

        # Register added tokens (tokenizer_config's added_tokens_decoder) and special tokens the backend does not
        # know as added tokens yet, in transformers' order: by id, then named special tokens, then extra ones.
        present = {repr(t) for t in self._tokenizer.get_added_tokens_decoder().values()}
        decoded = {}
        for index, token in (added_tokens_decoder or {}).items():
            token = _as_added_token(token)
            if isinstance(token, str):
                token = AddedToken(token, special=True)
            decoded[int(index)] = token
        to_add = [tok for _, tok in sorted(decoded.items()) if repr(tok) not in present]
        known = set(self.added_tokens_encoder) | {str(t) for t in to_add}
        named = {str(v) for v in self._special_tokens_map.values() if v is not None}
        for value in list(self._special_tokens_map.values()) + list(self._extra_special_tokens):
            if value is None or str(value) in known:
                continue
            known.add(str(value))
            to_add.append(value)
        if to_add:
            tokens = []
            for tok in to_add:
                if isinstance(tok, str):
                    tok = AddedToken(tok, special=True)
                elif not tok.special and str(tok) in named:
                    tok = AddedToken(**{**_added_token_state(tok), "special": True})
                tokens.append(tok)
            self._tokenizer.add_tokens(tokens)

        if explicit_bos_eos or self._tokenizer.post_processor is None:
            self.update_post_processor()

    # ------------------------------------------------------------------------------------------------------------
    # Special tokens as attributes (bos_token, bos_token_id, ...), like transformers
    # ------------------------------------------------------------------------------------------------------------
    def __getattr__(self, key: str):
        if key.startswith("__"):
            raise AttributeError(key)
        base = key[:-4] if key.endswith("_ids") else key[:-3] if key.endswith("_id") else key
        special_map = self.__dict__.get("_special_tokens_map")
        if special_map is not None and base in special_map:
            value = special_map.get(base)
            if value is None:
                return None
            return self.convert_tokens_to_ids(str(value)) if key != base else str(value)
        if base in ("extra_special_tokens", "additional_special_tokens"):
            tokens = [str(t) for t in self.__dict__.get("_extra_special_tokens", [])]
            return self.convert_tokens_to_ids(tokens) if key != base else tokens
        raise AttributeError(f"{type(self).__name__} has no attribute {key}")

    def __setattr__(self, key: str, value):
        base = key[:-4] if key.endswith("_ids") else key[:-3] if key.endswith("_id") else key
        special_map = self.__dict__.get("_special_tokens_map")
        if special_map is not None and (base in SPECIAL_TOKENS_ATTRIBUTES or base in special_map):
            if key != base and value is not None:
                value = self.convert_ids_to_tokens(value)
            if value is not None and not isinstance(value, (str, AddedToken)):
                raise ValueError(f"Cannot set a non-string value as the {base}")
            special_map[base] = value
            return
        if base in ("extra_special_tokens", "additional_special_tokens") and special_map is not None:
            if key != base and isinstance(value, (list, tuple)):
                value = [self.convert_ids_to_tokens(v) for v in value]
            if value is not None and not isinstance(value, (list, tuple)):
                raise ValueError(f"extra_special_tokens must be a list or tuple, got {type(value)}")
            object.__setattr__(self, "_extra_special_tokens", [] if value is None else list(value))
            return
        object.__setattr__(self, key, value)

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """Named special tokens (bos_token, eos_token, ...) that are set, as strings."""
        return {k: str(self._special_tokens_map[k]) for k in self.SPECIAL_TOKENS_ATTRIBUTES
                if self._special_tokens_map.get(k) is not None}

    @property
    def all_special_tokens(self) -> list[str]:
        seen, out = set(), []
        for value in [self._special_tokens_map.get(k) for k in self.SPECIAL_TOKENS_ATTRIBUTES] + list(
                self._extra_special_tokens):
            if value is not None and str(value) not in seen:
                seen.add(str(value))
                out.append(str(value))
        return out

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    @property
    def pad_token_type_id(self) -> int:
        return self._pad_token_type_id

    # ------------------------------------------------------------------------------------------------------------
    # Vocabulary
    # ------------------------------------------------------------------------------------------------------------
    @property
    def is_fast(self) -> bool:
        return True

    @property
    def backend_tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @property
    def decoder(self):
        return self._tokenizer.decoder

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (without added tokens)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def __bool__(self) -> bool:
        return True

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @property
    def vocab(self) -> dict[str, int]:
        return self.get_vocab()

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return self._tokenizer.get_added_tokens_decoder()

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        return {tok.content: i for i, tok in sorted(self.added_tokens_decoder.items(), key=lambda kv: kv[0])}

    def get_added_vocab(self) -> dict[str, int]:
        return self.added_tokens_encoder

    def convert_tokens_to_ids(self, tokens):
        if tokens is None:
            return None
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(t) for t in tokens]

    def _token_to_id(self, token: str) -> Optional[int]:
        index = self._tokenizer.token_to_id(token)
        if index is None:
            unk = self._special_tokens_map.get("unk_token")
            return None if unk is None else self._tokenizer.token_to_id(str(unk))
        return index

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        """Ids outside the vocabulary give None, as in transformers."""
        ids = _to_py(ids)
        if isinstance(ids, int):
            return self._tokenizer.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._tokenizer.id_to_token(int(i)) for i in ids if int(i) not in skip]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        if self._tokenizer.decoder is not None:
            return self._tokenizer.decoder.decode(tokens)
        return " ".join(tokens)

    def add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        """Add tokens to the vocabulary (those already in it are not added); returns how many were added."""
        if not new_tokens:
            return 0
        if not isinstance(new_tokens, (list, tuple)):
            new_tokens = [new_tokens]
        if special_tokens:
            return self._tokenizer.add_special_tokens(list(new_tokens))
        return self._tokenizer.add_tokens(list(new_tokens))

    def add_special_tokens(self, special_tokens_dict: dict, replace_extra_special_tokens: bool = True) -> int:
        """Set named special tokens ({"pad_token": "[PAD]", "additional_special_tokens": [...]}) and add them to
        the vocabulary when missing; returns how many tokens were added."""
        if not special_tokens_dict:
            return 0
        special_tokens_dict = dict(special_tokens_dict)
        if "additional_special_tokens" in special_tokens_dict and not special_tokens_dict.get(
                "extra_special_tokens"):
            special_tokens_dict["extra_special_tokens"] = special_tokens_dict.pop("additional_special_tokens")
        allowed = set(self.SPECIAL_TOKENS_ATTRIBUTES) | {"extra_special_tokens"}
        to_add = []
        for key, value in special_tokens_dict.items():
            if key not in allowed:
                raise ValueError(f"Key {key} is not a valid special token. Valid keys are: {sorted(allowed)}")
            if key == "extra_special_tokens":
                if not isinstance(value, (list, tuple)) or not all(isinstance(t, (str, AddedToken)) for t in value):
                    raise ValueError(f"Tokens {value} for key {key} should all be str or AddedToken instances")
                current = [str(t) for t in self._extra_special_tokens]
                new = [AddedToken(t, rstrip=False, lstrip=False, normalized=False, special=True)
                       if isinstance(t, str) else t
                       for t in value if replace_extra_special_tokens or str(t) not in current]
                if replace_extra_special_tokens and new:
                    self._extra_special_tokens = list(new)
                else:
                    self._extra_special_tokens.extend(new)
                to_add.extend(new)
            else:
                if not isinstance(value, (str, AddedToken)):
                    raise ValueError(f"Token {value} for key {key} should be a str or an AddedToken instance")
                if isinstance(value, str):
                    value = AddedToken(value, rstrip=False, lstrip=False, normalized=False, special=True)
                self._special_tokens_map[key] = value
                to_add.append(value)
        return self.add_tokens(to_add, special_tokens=True)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self._tokenizer.num_special_tokens_to_add(pair)

    @property
    def max_len_single_sentence(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=False)

    @property
    def max_len_sentences_pair(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=True)

    # ------------------------------------------------------------------------------------------------------------
    # Post-processor (bos/eos templates) and special-token templates on ids
    # ------------------------------------------------------------------------------------------------------------
    @property
    def add_bos_token(self) -> bool:
        return self.__dict__.get("_add_bos_token", False)

    @add_bos_token.setter
    def add_bos_token(self, value: bool):
        object.__setattr__(self, "_add_bos_token", bool(value))
        self.update_post_processor()

    @property
    def add_eos_token(self) -> bool:
        return self.__dict__.get("_add_eos_token", False)

    @add_eos_token.setter
    def add_eos_token(self, value: bool):
        object.__setattr__(self, "_add_eos_token", bool(value))
        self.update_post_processor()

    def update_post_processor(self) -> None:
        """Set a template post-processor adding bos/eos according to add_bos_token / add_eos_token."""
        bos, eos = self.bos_token, self.eos_token
        if bos is None and self._add_bos_token:
            object.__setattr__(self, "_add_bos_token", False)
        if eos is None and self._add_eos_token:
            object.__setattr__(self, "_add_eos_token", False)
        add_bos, add_eos = self._add_bos_token, self._add_eos_token
        single = f"{(bos + ':0 ') if add_bos else ''}$A:0{(' ' + eos + ':0') if add_eos else ''}"
        pair = f"{single}{(' ' + bos + ':1') if add_bos else ''} $B:1{(' ' + eos + ':1') if add_eos else ''}"
        special = []
        if add_bos:
            special.append((bos, self.bos_token_id))
        if add_eos:
            special.append((eos, self.eos_token_id))
        self._tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                                       special_tokens=special)

    def _templates(self):
        """(single, pair) templates of the post-processor as lists of ("seq", 0|1, type_id) / ("tok", [ids],
        type_id); None when the post-processor is one we cannot read."""
        pp = self._tokenizer.post_processor
        if pp is None:
            return [("seq", 0, 0)], [("seq", 0, 0), ("seq", 1, 1)]
        state = json.loads(self._tokenizer.to_str()).get("post_processor")
        return _read_templates(state)

    def _apply_template(self, token_ids_0, token_ids_1=None):
        templates = self._templates()
        if templates is None:
            raise ValueError(
                f"cannot apply post-processor {type(self._tokenizer.post_processor).__name__} to ids")
        template = templates[0] if token_ids_1 is None else templates[1]
        ids, types, special = [], [], []
        seqs = [list(token_ids_0), list(token_ids_1 or [])]
        for kind, value, type_id in template:
            piece = seqs[value] if kind == "seq" else list(value)
            ids += piece
            types += [type_id] * len(piece)
            special += [0 if kind == "seq" else 1] * len(piece)
        return ids, types, special

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None):
        """Add the special tokens of the post-processor ([CLS] A [SEP] B [SEP], <s> A </s></s> B </s>, ...)."""
        return self._apply_template(token_ids_0, token_ids_1)[0]

    def create_token_type_ids_from_sequences(self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None):
        return self._apply_template(token_ids_0, token_ids_1)[1]

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("You should not supply a second sequence if the provided sequence of ids is already "
                                 "formatted with special tokens for the model.")
            special_ids = set(self.all_special_ids)
            return [1 if int(t) in special_ids else 0 for t in token_ids_0]
        return self._apply_template(token_ids_0, token_ids_1)[2]

    # ------------------------------------------------------------------------------------------------------------
    # Encoding
    # ------------------------------------------------------------------------------------------------------------
    def _strategies(self, padding=False, truncation=None, max_length=None, pad_to_multiple_of=None, verbose=True):
        """transformers' resolution of padding / truncation arguments -> (padding, truncation, max_length)."""
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"

        if padding is True:
            if verbose and max_length is not None and truncation in (None, False, "do_not_truncate"):
                warnings.warn("`max_length` is ignored when `padding`=`True` and there is no truncation strategy. "
                              "To pad to max length, use `padding='max_length'`.")
            pad = "longest"
        elif padding is False or padding is None:
            pad = "do_not_pad"
        else:
            pad = getattr(padding, "value", padding)
            if pad not in _PADDING_STRATEGIES:
                raise ValueError(f"{padding!r} is not a valid padding strategy; use one of True, False, "
                                 f"{', '.join(repr(s) for s in _PADDING_STRATEGIES)}")

        if truncation is True:
            trunc = "longest_first"
        elif truncation is False or truncation is None:
            trunc = "do_not_truncate"
        else:
            trunc = getattr(truncation, "value", truncation)
            if trunc not in _TRUNCATION_STRATEGIES:
                raise ValueError(f"{truncation!r} is not a valid truncation strategy; use one of True, False, "
                                 f"{', '.join(repr(s) for s in _TRUNCATION_STRATEGIES)}")

        if max_length is None:
            if pad == "max_length":
                if self.model_max_length > LARGE_INTEGER:
                    pad = "do_not_pad"
                else:
                    max_length = self.model_max_length
            if trunc != "do_not_truncate":
                if self.model_max_length > LARGE_INTEGER:
                    trunc = "do_not_truncate"
                else:
                    max_length = self.model_max_length

        if pad != "do_not_pad" and (self.pad_token is None or self.pad_token_id is None or self.pad_token_id < 0):
            raise ValueError(
                "Asking to pad but the tokenizer does not have a padding token. Please select a token to use as "
                "`pad_token` `(tokenizer.pad_token = tokenizer.eos_token e.g.)` or add a new pad token via "
                "`tokenizer.add_special_tokens({'pad_token': '[PAD]'})`."
            )
        if (trunc != "do_not_truncate" and pad != "do_not_pad" and pad_to_multiple_of is not None
                and max_length is not None and max_length % pad_to_multiple_of != 0):
            raise ValueError("Truncation and padding are both activated but truncation length "
                             f"({max_length}) is not a multiple of pad_to_multiple_of ({pad_to_multiple_of}).")
        return pad, trunc, max_length

    def _configure_backend(self, pad, trunc, max_length, stride, pad_to_multiple_of, padding_side):
        backend = self._tokenizer
        if trunc == "do_not_truncate":
            if backend.truncation is not None:
                backend.no_truncation()
        else:
            target = {"max_length": max_length, "stride": stride, "strategy": trunc,
                      "direction": self.truncation_side}
            current = backend.truncation
            if current is None or {k: current.get(k) for k in target} != target:
                backend.enable_truncation(**target)
        if pad == "do_not_pad":
            if backend.padding is not None:
                backend.no_padding()
        else:
            target = {"length": max_length if pad == "max_length" else None,
                      "direction": padding_side if padding_side is not None else self.padding_side,
                      "pad_id": self.pad_token_id, "pad_token": self.pad_token,
                      "pad_type_id": self.pad_token_type_id, "pad_to_multiple_of": pad_to_multiple_of}
            if backend.padding != target:
                backend.enable_padding(**target)

    def __call__(self, text=None, text_pair=None, text_target=None, text_pair_target=None, *,
                 add_special_tokens: bool = True, padding=False, truncation=None, max_length: Optional[int] = None,
                 stride: int = 0, is_split_into_words: bool = False, pad_to_multiple_of: Optional[int] = None,
                 padding_side: Optional[str] = None, return_tensors=None,
                 return_token_type_ids: Optional[bool] = None, return_attention_mask: Optional[bool] = None,
                 return_overflowing_tokens: bool = False, return_special_tokens_mask: bool = False,
                 return_offsets_mapping: bool = False, return_length: bool = False, verbose: bool = True,
                 **kwargs) -> BatchEncoding:
        """Tokenize a string, a pair, a batch of strings or a batch of pairs (transformers' semantics)."""
        tokenizer_kwargs = kwargs.pop("tokenizer_kwargs", None) or {}
        max_target_length = kwargs.pop("max_target_length", None)
        options = dict(add_special_tokens=add_special_tokens, stride=stride, is_split_into_words=is_split_into_words,
                       pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side,
                       return_tensors=return_tensors, return_token_type_ids=return_token_type_ids,
                       return_attention_mask=return_attention_mask,
                       return_overflowing_tokens=return_overflowing_tokens,
                       return_special_tokens_mask=return_special_tokens_mask,
                       return_offsets_mapping=return_offsets_mapping, return_length=return_length,
                       split_special_tokens=kwargs.pop("split_special_tokens", self.split_special_tokens),
                       verbose=verbose)
        options.update(tokenizer_kwargs)
        options.update(kwargs)
        padding = options.pop("padding", padding)
        truncation = options.pop("truncation", truncation)
        max_length = options.pop("max_length", max_length)
        if text is None and text_target is None:
            raise ValueError("You need to specify either `text` or `text_target`.")
        pad, trunc, max_length = self._strategies(padding, truncation, max_length,
                                                  options.get("pad_to_multiple_of"), options.get("verbose", True))
        if options.pop("sanitize_control_tokens", False) and text is not None:
            # text rendered by apply_chat_template(..., sanitize_control_tokens=True)
            return self._encode_sanitized(text, pad, trunc, max_length, **options)
        options.pop("sanitize_control_tokens", None)
        encodings = targets = None
        if text is not None:
            encodings = self._encode(text, text_pair, pad, trunc, max_length, **options)
        if text_target is not None:
            targets = self._encode(text_target, text_pair_target, pad, trunc,
                                   max_target_length if max_target_length is not None else max_length, **options)
        if targets is None:
            return encodings
        if encodings is None:
            return targets
        encodings["labels"] = targets["input_ids"]
        return encodings

    def _encode(self, text, text_pair=None, pad="do_not_pad", trunc="do_not_truncate", max_length=None, *,
                add_special_tokens=True, stride=0, is_split_into_words=False, pad_to_multiple_of=None,
                padding_side=None, return_tensors=None, return_token_type_ids=None, return_attention_mask=None,
                return_overflowing_tokens=False, return_special_tokens_mask=False, return_offsets_mapping=False,
                return_length=False, verbose=True, split_special_tokens=None, **unused) -> BatchEncoding:
        message = ("text input must be of type `str` (single example), `list[str]` (batch or single pretokenized "
                   "example) or `list[list[str]]` (batch of pretokenized examples) or "
                   "`list[tuple[list[str], list[str]]]` (batch of pretokenized sequence pairs).")
        if not _valid_text_input(text):
            raise ValueError(message)
        if text_pair is not None and not _valid_text_input(text_pair):
            raise ValueError(message)

        if is_split_into_words:
            batched = bool(isinstance(text, (list, tuple)) and text and isinstance(text[0], (list, tuple)))
        else:
            batched = isinstance(text, (list, tuple))
        if batched:
            if isinstance(text_pair, str):
                raise TypeError("when tokenizing batches of text, `text_pair` must be a list or tuple with the same "
                                "length as `text`.")
            if text_pair is not None and len(text) != len(text_pair):
                raise ValueError(f"batch length of `text`: {len(text)} does not match batch length of "
                                 f"`text_pair`: {len(text_pair)}.")
            batch = list(zip(text, text_pair)) if text_pair is not None else list(text)
        else:
            # as transformers: an empty text_pair ("") counts as no pair
            batch = [(text, text_pair)] if text_pair else [text]

        self._configure_backend(pad, trunc, max_length, stride, pad_to_multiple_of, padding_side)
        if split_special_tokens is None:
            split_special_tokens = self.split_special_tokens
        if self._tokenizer.encode_special_tokens != bool(split_special_tokens):
            self._tokenizer.encode_special_tokens = bool(split_special_tokens)

        raw = self._tokenizer.encode_batch(batch, add_special_tokens=add_special_tokens,
                                           is_pretokenized=is_split_into_words)
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names

        keys = ["input_ids"]
        if return_token_type_ids:
            keys.append("token_type_ids")
        if return_attention_mask:
            keys.append("attention_mask")
        if return_special_tokens_mask:
            keys.append("special_tokens_mask")
        if return_offsets_mapping:
            keys.append("offset_mapping")
        if return_length:
            keys.append("length")
        data: dict[str, list] = {k: [] for k in keys}
        flat, mapping = [], []
        for i, encoding in enumerate(raw):
            windows = [encoding] + list(encoding.overflowing) if return_overflowing_tokens else [encoding]
            for e in windows:
                flat.append(e)
                mapping.append(i)
                data["input_ids"].append(e.ids if self._id_map is None else [self._id_map.get(t, t) for t in e.ids])
                if return_token_type_ids:
                    data["token_type_ids"].append(e.type_ids)
                if return_attention_mask:
                    data["attention_mask"].append(e.attention_mask)
                if return_special_tokens_mask:
                    data["special_tokens_mask"].append(e.special_tokens_mask)
                if return_offsets_mapping:
                    data["offset_mapping"].append(e.offsets)
                if return_length:
                    data["length"].append(len(e.ids))
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = mapping
        for ids in data["input_ids"]:
            self._warn_if_too_long(ids, max_length, verbose)

        if not batched and return_tensors is None and not return_overflowing_tokens:
            data = {k: (v[0] if v and isinstance(v[0], list) else v) for k, v in data.items()}
            return BatchEncoding(data, flat)
        return BatchEncoding(data, flat, tensor_type=return_tensors)

    def _encode_sanitized(self, text, pad, trunc, max_length, *, add_special_tokens=True, pad_to_multiple_of=None,
                          padding_side=None, return_tensors=None, return_attention_mask=None,
                          **unused) -> BatchEncoding:
        post_processor = self._tokenizer.post_processor
        if add_special_tokens and post_processor is not None and post_processor.num_special_tokens_to_add(False):
            raise NotImplementedError("`sanitize_control_tokens=True` needs a template that writes special tokens")
        batched = isinstance(text, (list, tuple))
        ids = [self._encode_marked_chat(t) for t in (text if batched else [text])]
        if trunc != "do_not_truncate" and max_length is not None:
            ids = [x[:max_length] if self.truncation_side == "right" else x[-max_length:] for x in ids]
        return self.pad({"input_ids": ids if batched or return_tensors else ids[0]}, padding=pad,
                        max_length=max_length, pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side,
                        return_attention_mask=return_attention_mask, return_tensors=return_tensors)

    def _warn_if_too_long(self, ids, max_length, verbose):
        if (max_length is None and len(ids) > self.model_max_length and verbose and self.model_max_length != 0
                and not self.deprecation_warnings.get("sequence-length-is-longer-than-the-specified-maximum")):
            logger.warning(
                "Token indices sequence length is longer than the specified maximum sequence length for this model "
                "(%d > %d). Running this sequence through the model will result in indexing errors",
                len(ids), self.model_max_length)
            self.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True

    def encode(self, text, text_pair=None, add_special_tokens: bool = True, padding=False, truncation=None,
               max_length: Optional[int] = None, stride: int = 0, padding_side: Optional[str] = None,
               return_tensors=None, **kwargs):
        """The input ids of `text` (and `text_pair`)."""
        pad, trunc, max_length = self._strategies(padding, truncation, max_length, kwargs.get("pad_to_multiple_of"),
                                                  kwargs.get("verbose", True))
        return self._encode(text, text_pair, pad, trunc, max_length, add_special_tokens=add_special_tokens,
                            stride=stride, padding_side=padding_side, return_tensors=return_tensors,
                            **kwargs)["input_ids"]

    def encode_plus(self, text, text_pair=None, **kwargs) -> BatchEncoding:
        """transformers 4 API: same as calling the tokenizer on one text (or pair)."""
        return self(text, text_pair, **kwargs)

    def batch_encode_plus(self, batch_text_or_text_pairs, **kwargs) -> BatchEncoding:
        """transformers 4 API: same as calling the tokenizer on a batch of texts or of (text, pair) tuples."""
        return self(list(batch_text_or_text_pairs), **kwargs)

    def tokenize(self, text: str, pair: Optional[str] = None, add_special_tokens: bool = False, **kwargs) -> list[str]:
        return self._encode(text, pair, add_special_tokens=add_special_tokens, **kwargs).tokens()

    # ------------------------------------------------------------------------------------------------------------
    # Padding encoded inputs
    # ------------------------------------------------------------------------------------------------------------
    def pad(self, encoded_inputs, padding=True, max_length: Optional[int] = None,
            pad_to_multiple_of: Optional[int] = None, padding_side: Optional[str] = None,
            return_attention_mask: Optional[bool] = None, return_tensors=None, verbose: bool = True) -> BatchEncoding:
        """Pad one encoded input or a batch of them (dict of lists, list of dicts, BatchEncoding, tensors)."""
        if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and isinstance(encoded_inputs[0], Mapping):
            encoded_inputs = {key: [example[key] for example in encoded_inputs] for key in encoded_inputs[0]}
        else:
            encoded_inputs = dict(encoded_inputs)
        main = self.model_input_names[0]
        if main not in encoded_inputs:
            raise ValueError("You should supply an encoding or a list of encodings to this method that includes "
                             f"{main}, but you provided {list(encoded_inputs.keys())}")
        required = encoded_inputs[main]
        if required is None or (hasattr(required, "__len__") and len(required) == 0):
            if return_attention_mask:
                encoded_inputs["attention_mask"] = []
            return BatchEncoding(encoded_inputs)

        first = required[0]
        if isinstance(first, (list, tuple)):
            for item in required:
                if len(item) != 0:
                    first = item[0]
                    break
        if not isinstance(first, (int, list, tuple)):
            if _is_torch_tensor(first):
                return_tensors = "pt" if return_tensors is None else return_tensors
            elif isinstance(first, (np.ndarray, np.generic)):
                return_tensors = "np" if return_tensors is None else return_tensors
            else:
                raise ValueError(f"type of {first} unknown: {type(first)}. Should be one of a python, numpy, or "
                                 "pytorch object.")
            encoded_inputs = {k: _to_py(v) for k, v in encoded_inputs.items()}

        pad, _, max_length = self._strategies(padding=padding, max_length=max_length, verbose=verbose)
        required = encoded_inputs[main]
        if required and not isinstance(required[0], (list, tuple)):
            out = self._pad_one(encoded_inputs, max_length, pad, pad_to_multiple_of, padding_side,
                                return_attention_mask)
            return BatchEncoding(out, tensor_type=return_tensors)

        batch_size = len(required)
        if any(len(v) != batch_size for v in encoded_inputs.values()):
            raise ValueError("Some items in the output dictionary have a different batch size than others.")
        if pad == "longest":
            max_length = max(len(x) for x in required)
            pad = "max_length"
        batch: dict[str, list] = {}
        for i in range(batch_size):
            out = self._pad_one({k: v[i] for k, v in encoded_inputs.items()}, max_length, pad, pad_to_multiple_of,
                                padding_side, return_attention_mask)
            for k, v in out.items():
                batch.setdefault(k, []).append(v)
        return BatchEncoding(batch, tensor_type=return_tensors)

    def _pad_one(self, inputs: dict, max_length, pad, pad_to_multiple_of, padding_side, return_attention_mask):
        inputs = dict(inputs)
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        main = self.model_input_names[0]
        required = list(inputs[main])
        if pad == "longest":
            max_length = len(required)
        if max_length is not None and pad_to_multiple_of is not None and max_length % pad_to_multiple_of != 0:
            max_length = (max_length // pad_to_multiple_of + 1) * pad_to_multiple_of
        if return_attention_mask and "attention_mask" not in inputs:
            inputs["attention_mask"] = [1] * len(required)
        if pad != "do_not_pad" and len(required) != max_length:
            n = max_length - len(required)
            side = padding_side if padding_side is not None else self.padding_side
            if side not in ("right", "left"):
                raise ValueError(f"Invalid padding strategy:{side}")

            def extend(values, fill):
                return list(values) + [fill] * n if side == "right" else [fill] * n + list(values)

            if return_attention_mask:
                inputs["attention_mask"] = extend(inputs["attention_mask"], 0)
            if "token_type_ids" in inputs:
                inputs["token_type_ids"] = extend(inputs["token_type_ids"], self.pad_token_type_id)
            if "special_tokens_mask" in inputs:
                inputs["special_tokens_mask"] = extend(inputs["special_tokens_mask"], 1)
            inputs[main] = extend(required, self.pad_token_id)
        return inputs

    # ------------------------------------------------------------------------------------------------------------
    # Decoding
    # ------------------------------------------------------------------------------------------------------------
    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: Optional[bool] = None,
               **kwargs):
        """ids -> text; a batch (list of lists, 2-D tensor) gives a list of texts. Ids outside the vocabulary are
        dropped (as the tokenizers backend, hence transformers, does)."""
        token_ids = _to_py(token_ids)
        if isinstance(token_ids, (list, tuple)) and token_ids and isinstance(token_ids[0], (list, tuple)):
            return [self._decode(seq, skip_special_tokens, clean_up_tokenization_spaces) for seq in token_ids]
        return self._decode(token_ids, skip_special_tokens, clean_up_tokenization_spaces)

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: Optional[bool] = None, **kwargs) -> list[str]:
        result = self.decode(sequences, skip_special_tokens=skip_special_tokens,
                             clean_up_tokenization_spaces=clean_up_tokenization_spaces, **kwargs)
        return [result] if isinstance(result, str) else result

    def _decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        if isinstance(token_ids, dict):
            token_ids = token_ids["input_ids"]
        text = self._tokenizer.decode([int(i) for i in token_ids], skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces:
            # transformers skips this clean-up for BPE models (it would remove real spaces before punctuation)
            if (type(self._tokenizer.model).__name__ != "BPE"
                    or self.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output):
                text = _clean_up_tokenization(text)
        return text

    def clean_up_tokenization(self, text: str) -> str:
        return _clean_up_tokenization(text)

    # ------------------------------------------------------------------------------------------------------------
    # Chat templates
    # ------------------------------------------------------------------------------------------------------------
    def get_chat_template(self, chat_template: Optional[str] = None, tools: Optional[list] = None) -> str:
        """The Jinja template `apply_chat_template` uses: `chat_template` itself, or the named one of several
        (with several and none named: "tool_use" when tools are given, else "default")."""
        if isinstance(self.chat_template, dict):
            templates = self.chat_template
            if chat_template is not None and chat_template in templates:
                return templates[chat_template]
            if chat_template is None:
                if tools is not None and "tool_use" in templates:
                    return templates["tool_use"]
                if "default" in templates:
                    return templates["default"]
                raise ValueError(
                    "This model has multiple chat templates with no default specified! Please either pass a chat "
                    "template or the name of the template you wish to use to the `chat_template` argument. "
                    f"Available template names are {sorted(templates)}.")
            return chat_template
        if chat_template is None:
            if self.chat_template is None:
                raise ValueError(
                    "Cannot use chat template functions because tokenizer.chat_template is not set and no template "
                    "argument was passed! Set tokenizer.chat_template (a Jinja template string) or pass "
                    "chat_template=... (see https://huggingface.co/docs/transformers/main/en/chat_templating)")
            return self.chat_template
        return chat_template

    def apply_chat_template(self, conversation, tools: Optional[list] = None, documents: Optional[list] = None,
                            chat_template: Optional[str] = None, add_generation_prompt: bool = False,
                            continue_final_message=False, tokenize: bool = True,
                            sanitize_control_tokens: bool = False, padding=False, truncation: bool = False,
                            max_length: Optional[int] = None, return_tensors=None, return_dict: bool = True,
                            return_assistant_tokens_mask: bool = False, tokenizer_kwargs: Optional[dict] = None,
                            **kwargs):
        """Render a conversation (a list of {"role": ..., "content": ...} messages), or a batch of them, with the
        tokenizer's Jinja chat template, then tokenize it (transformers 5 semantics: with ``tokenize=True`` the
        result is a BatchEncoding unless ``return_dict=False``, which gives the input ids; ``tokenize=False`` gives
        the text). Extra keyword arguments are template variables. Templates run in jinja2's immutable sandbox:
        they cannot reach Python internals (``__class__``, ``__subclasses__``...) or call unsafe methods.

        ``tools`` are JSON-schema dicts; ``documents`` dicts. ``continue_final_message`` (True, or the field name
        to continue) leaves the last message open for the model to continue; ``return_assistant_tokens_mask``
        marks the tokens inside the template's ``{% generation %}`` blocks; ``sanitize_control_tokens`` encodes
        control tokens found in the inputs as plain text, so only the template itself writes control tokens.
        """
        if not tokenize:
            return_dict = False
        if return_assistant_tokens_mask and not (return_dict and tokenize):
            raise ValueError("`return_assistant_tokens_mask=True` requires `return_dict=True` and `tokenize=True`")
        tokenizer_kwargs = dict(tokenizer_kwargs or {})
        template = self.get_chat_template(chat_template, tools)

        if isinstance(conversation, (list, tuple)) and len(conversation) == 0:
            raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
        batched = isinstance(conversation, (list, tuple)) and (
            isinstance(conversation[0], (list, tuple)) or hasattr(conversation[0], "messages"))
        conversations = list(conversation) if batched else [conversation]
        conversations = [[{k: v for k, v in message.items() if v is not None} if isinstance(message, Mapping)
                          else message for message in getattr(chat, "messages", chat)] for chat in conversations]

        if continue_final_message:
            if add_generation_prompt:
                raise ValueError(
                    "continue_final_message and add_generation_prompt are not compatible. Use continue_final_message "
                    "when you want the model to continue the final message, and add_generation_prompt when you "
                    "want to add a header that will prompt it to start a new assistant message instead.")
            if return_assistant_tokens_mask:
                raise ValueError("continue_final_message is not compatible with return_assistant_tokens_mask.")
        if sanitize_control_tokens:
            if not tokenize or return_assistant_tokens_mask:
                raise ValueError("`sanitize_control_tokens=True` requires `tokenize=True` and is not compatible "
                                 "with `return_assistant_tokens_mask=True`.")
            pattern = _control_token_patterns(self._chat_control_tokens(template))[0]
            conversations = [_mark_control_tokens(chat, pattern) for chat in conversations]
            tools = _mark_control_tokens(tools, pattern)
            documents = _mark_control_tokens(documents, pattern)
            kwargs = _mark_control_tokens(kwargs, pattern)

        template_kwargs = {**self.special_tokens_map, **kwargs}
        rendered, generation_spans = _render_chat(
            conversations, template, tools=tools, documents=documents,
            add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message,
            track_generation=return_assistant_tokens_mask, **template_kwargs)
        if not batched:
            rendered = rendered[0]
        if not tokenize:
            return rendered

        out = self(rendered, padding=padding, truncation=truncation, max_length=max_length,
                   add_special_tokens=False, return_tensors=return_tensors,
                   sanitize_control_tokens=sanitize_control_tokens, **tokenizer_kwargs)
        if not return_dict:
            return out["input_ids"]
        if return_assistant_tokens_mask:
            input_ids = out["input_ids"] if (batched or return_tensors) else [out["input_ids"]]
            masks = []
            for i in range(len(input_ids)):
                mask = [0] * len(input_ids[i])
                for start_char, end_char in generation_spans[i]:
                    start = out.char_to_token(i, start_char)
                    end = out.char_to_token(i, end_char - 1)
                    if start is None:  # cut off by truncation
                        break
                    for index in range(start, end + 1 if end else len(input_ids[i])):
                        mask[index] = 1
                masks.append(mask)
            out["assistant_masks"] = masks if (batched or return_tensors) else masks[0]
            if return_tensors:
                out.convert_to_tensors(tensor_type=return_tensors)
        return out

    def encode_message_with_chat_template(self, message: dict, conversation_history: Optional[list] = None,
                                          **kwargs) -> list[int]:
        """The ids of one message rendered after `conversation_history` (for token-by-token chat streaming)."""
        if "add_generation_prompt" in kwargs:
            raise ValueError("`encode_message_with_chat_template` does not support `add_generation_prompt`. Please "
                             "add the generation prompt separately.")
        if not conversation_history:
            return self.apply_chat_template([message], add_generation_prompt=False, tokenize=True,
                                            return_dict=False, **kwargs)
        tokens = self.apply_chat_template(list(conversation_history) + [message], add_generation_prompt=False,
                                          tokenize=True, return_dict=False, **kwargs)
        prefix = self.apply_chat_template(conversation_history, add_generation_prompt=False, tokenize=True,
                                          return_dict=False, **kwargs)
        for i in range(min(len(prefix), len(tokens))):
            if prefix[i] != tokens[i]:
                return tokens[i:]
        return tokens[min(len(prefix), len(tokens)):]

    def _chat_control_tokens(self, template: str) -> tuple[str, ...]:
        """Tokens that sanitize_control_tokens encodes as text when they appear in the inputs: special added
        tokens, plus `chat_control_tokens` when set, else the added tokens the template itself writes."""
        added = self.added_tokens_decoder.values()
        if self.chat_control_tokens is not None:
            listed = set(self.chat_control_tokens)
            return tuple(t.content for t in added if t.special or t.content in listed)
        literal = _template_literal_text(template)
        return tuple(t.content for t in added
                     if t.special or (t.content in literal and not t.content.isspace()))

    def _encode_without_added_tokens(self, text: str) -> list[int]:
        """`text` through normalizer, pre-tokenizer and model only: no added token, special or not, is matched."""
        backend = self._tokenizer
        if backend.normalizer is not None:
            text = backend.normalizer.normalize_str(text)
        splits = [text]
        if backend.pre_tokenizer is not None:
            splits = [split for split, _ in backend.pre_tokenizer.pre_tokenize_str(text)]
        return [token.id for split in splits for token in backend.model.tokenize(split)]

    def _encode_marked_chat(self, chat: str) -> list[int]:
        """Encode a chat rendered from marked inputs: marked control tokens as plain text, the rest as usual."""
        markers = _control_token_patterns(tuple(self.added_tokens_encoder))[1]
        pieces = markers.split(chat)
        newline = self.encode("\n", add_special_tokens=False)
        ids = self.encode(pieces[0], add_special_tokens=False)
        for i, piece in enumerate(pieces[1:], start=1):
            if not piece:
                continue
            as_text = i % 2 == 1  # odd pieces are marked tokens
            encode = (self._encode_without_added_tokens if as_text
                      else functools.partial(self.encode, add_special_tokens=False))
            # after a newline, so that a SentencePiece prefix space is not added mid-chat; then drop the newline
            piece_ids = encode("\n" + piece)
            if piece_ids[:len(newline)] == newline:
                piece_ids = piece_ids[len(newline):]
            else:
                piece_ids = encode(piece)
            if as_text and self.convert_tokens_to_ids(piece) in piece_ids:
                raise ValueError(f"Can't sanitize {piece!r}: the tokenizer produces it from plain text")
            ids += piece_ids
        return ids

    # ------------------------------------------------------------------------------------------------------------
    # Saving / loading
    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path, *, revision=None, cache_dir=None, local_files_only=False, token=None,
                        trust_remote_code=False, **overrides) -> "PreTrainedTokenizerFast":
        """Load tokenizer.json as is (transformers' `PreTrainedTokenizerFast.from_pretrained`: no class-specific
        rebuild). Use `AutoTokenizer.from_pretrained` for the tokenizer class the checkpoint declares."""
        refuse_remote_code(trust_remote_code)
        return _load(name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                     token=token, overrides=overrides, use_declared_class=False)

    def save_pretrained(self, save_directory, legacy_format=None, filename_prefix: Optional[str] = None,
                        push_to_hub: bool = False, **kwargs) -> tuple[str, ...]:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json, plus the chat template(s) as
        transformers 5 writes them (chat_template.jinja, additional_chat_templates/<name>.jinja; pass
        save_jinja_files=False to keep them in tokenizer_config.json), readable by transformers and by ours."""
        if push_to_hub:
            raise ValueError("push_to_hub=True: fastformers does not upload to the hub")
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise ValueError(f"Provided path ({save_directory}) should be a directory, not a file")
        os.makedirs(save_directory, exist_ok=True)
        prefix = (filename_prefix + "-") if filename_prefix else ""

        config = copy.deepcopy(self.init_kwargs)
        for key in ("add_bos_token", "add_eos_token", "name_or_path", "special_tokens_map_file", "tokenizer_file",
                    "vocab_file", "merges_file", "added_tokens_decoder", "additional_special_tokens",
                    "files_loaded", "tokenizer_object", "model_specific_special_tokens"):
            config.pop(key, None)
        for key in list(config) + ["model_max_length", "padding_side", "truncation_side",
                                   "clean_up_tokenization_spaces", "split_special_tokens"]:
            if key in self.__dict__:
                config[key] = self.__dict__[key]
        if "model_input_names" in config:
            config["model_input_names"] = list(self.model_input_names)
        for key in SPECIAL_TOKENS_ATTRIBUTES:
            config.pop(key, None)
        config.update(self.special_tokens_map)
        if self._extra_special_tokens:
            config["extra_special_tokens"] = [str(t) for t in self._extra_special_tokens]
        else:
            config.pop("extra_special_tokens", None)
        config.pop("chat_template", None)
        if self.chat_control_tokens is not None:
            config["chat_control_tokens"] = list(self.chat_control_tokens)
        written = self._save_chat_templates(save_directory, prefix, config, kwargs.get("save_jinja_files", True))
        config["tokenizer_class"] = self._tokenizer_class or "PreTrainedTokenizerFast"

        config_file = os.path.join(save_directory, prefix + TOKENIZER_CONFIG_FILE)
        with open(config_file, "w", encoding="utf-8") as f:
            f.write(json.dumps(_jsonable(config), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        special_map = {}
        for key in self.SPECIAL_TOKENS_ATTRIBUTES:
            value = self._special_tokens_map.get(key)
            if value is None:
                continue
            if isinstance(value, AddedToken):
                state = _added_token_state(value)
                state.pop("special")
                special_map[key] = state
            else:
                special_map[key] = value
        map_file = os.path.join(save_directory, prefix + SPECIAL_TOKENS_MAP_FILE)
        with open(map_file, "w", encoding="utf-8") as f:
            f.write(json.dumps(special_map, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        tokenizer_file = os.path.join(save_directory, prefix + TOKENIZER_FILE)
        self._tokenizer.save(tokenizer_file)
        return (config_file, *written, map_file, tokenizer_file)

    def _save_chat_templates(self, save_directory: str, prefix: str, config: dict, jinja_files: bool) -> list:
        """As transformers 5 writes them: a single template to chat_template.jinja; several as
        chat_template.jinja (the "default" one) plus additional_chat_templates/<name>.jinja. With
        save_jinja_files=False, into tokenizer_config.json instead (a string, or a list of {name, template})."""
        written = []
        templates = self.chat_template
        if templates is None:
            return written
        if not jinja_files:
            config["chat_template"] = (templates if isinstance(templates, str)
                                       else [{"name": k, "template": v} for k, v in templates.items()])
            return written
        if isinstance(templates, str):
            templates = {"default": templates}
        extra_dir = os.path.join(save_directory, prefix + CHAT_TEMPLATE_DIR)
        for name, template in templates.items():
            if name == "default":
                path = os.path.join(save_directory, prefix + CHAT_TEMPLATE_FILE)
            else:
                path = os.path.join(extra_dir, f"{name}.jinja")
                if (not isinstance(name, str) or os.path.dirname(os.path.normpath(path)) != os.path.normpath(extra_dir)
                        or name in ("", ".", "..")):
                    raise ValueError(f"Invalid chat template name: {name!r}")
                os.makedirs(extra_dir, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(template)
            written.append(path)
        return written

    def __repr__(self) -> str:
        added = "\n\t".join(f"{k}: {v!r}," for k, v in self.added_tokens_decoder.items())
        added = f"\n\t{added}\n" if added else ""
        name = self._tokenizer_class or type(self).__name__
        return (f"{name}(name_or_path='{self.name_or_path}', vocab_size={self.vocab_size}, "
                f"model_max_length={self.model_max_length}, padding_side='{self.padding_side}', "
                f"truncation_side='{self.truncation_side}', special_tokens={self.special_tokens_map}, "
                f"added_tokens_decoder={{{added}}})")


def _read_templates(state):
    """Post-processor JSON -> (single, pair) templates for _apply_template, or None if not understood."""
    if state is None:
        return [("seq", 0, 0)], [("seq", 0, 0), ("seq", 1, 1)]
    kind = state.get("type")
    if kind == "TemplateProcessing":
        specials = {k: v["ids"] for k, v in state.get("special_tokens", {}).items()}

        def convert(items):
            out = []
            for item in items:
                if "Sequence" in item:
                    out.append(("seq", 0 if item["Sequence"]["id"] == "A" else 1, item["Sequence"]["type_id"]))
                else:
                    out.append(("tok", specials[item["SpecialToken"]["id"]], item["SpecialToken"]["type_id"]))
            return out

        return convert(state["single"]), convert(state["pair"])
    if kind == "BertProcessing":
        cls_id, sep_id = state["cls"][1], state["sep"][1]
        return ([("tok", [cls_id], 0), ("seq", 0, 0), ("tok", [sep_id], 0)],
                [("tok", [cls_id], 0), ("seq", 0, 0), ("tok", [sep_id], 0), ("seq", 1, 1), ("tok", [sep_id], 1)])
    if kind == "RobertaProcessing":
        cls_id, sep_id = state["cls"][1], state["sep"][1]
        return ([("tok", [cls_id], 0), ("seq", 0, 0), ("tok", [sep_id], 0)],
                [("tok", [cls_id], 0), ("seq", 0, 0), ("tok", [sep_id, sep_id], 0), ("seq", 1, 0),
                 ("tok", [sep_id], 0)])
    if kind == "ByteLevel":
        return [("seq", 0, 0)], [("seq", 0, 0), ("seq", 1, 1)]
    if kind == "Sequence":
        found = None
        for sub in state.get("processors", []):
            if sub.get("type") == "ByteLevel":
                continue
            if found is not None:
                return None
            found = _read_templates(sub)
        return found if found is not None else _read_templates(None)
    return None


# ---------------------------------------------------------------------------------------------------------------
# Chat templates (Jinja, rendered in jinja2's immutable sandbox)
# ---------------------------------------------------------------------------------------------------------------

_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
# private-use characters: around control tokens found in user inputs (sanitize_control_tokens), and around the
# output of {% generation %} blocks while assistant masks are computed
_CONTROL_START, _CONTROL_END = "\U000f0000", "\U000f0001"
_GENERATION_START, _GENERATION_END = "\U000f0002", "\U000f0003"
_TRACK_GENERATION: ContextVar[bool] = ContextVar("fastformers_track_generation", default=False)


def _jinja():
    try:
        import jinja2
        import jinja2.ext
        import jinja2.meta
        import jinja2.nodes
        import jinja2.sandbox
    except ImportError:
        raise ImportError("apply_chat_template requires jinja2: pip install 'jinja2>=3.1.6'") from None
    version = tuple(int(p) if p.isdigit() else 0 for p in jinja2.__version__.split(".")[:3])
    if version < (3, 1, 6):  # older releases have known sandbox escapes; chat templates are untrusted input
        raise ImportError(f"apply_chat_template requires jinja2>=3.1.6 (installed: {jinja2.__version__}): "
                          "pip install -U jinja2")
    return jinja2


@functools.lru_cache(maxsize=64)
def _compile_chat_template(template: str):
    """The template compiled in an ImmutableSandboxedEnvironment with transformers' globals and filters:
    trim_blocks / lstrip_blocks, `raise_exception(msg)`, `strftime_now(fmt)`, a JSON `tojson` filter (no HTML
    escaping, ensure_ascii off), loop controls, a `{% generation %}` block and underscore-safe `namespace`/`dict`."""
    jinja2 = _jinja()

    class GenerationBlock(jinja2.ext.Extension):
        """{% generation %}...{% endgeneration %}: renders its body; while assistant masks are being computed, the
        body is wrapped in private-use markers that _render_chat turns into character spans."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            body = caller()
            return f"{_GENERATION_START}{body}{_GENERATION_END}" if _TRACK_GENERATION.get() else body

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    class TemplateDict:
        """`dict(...)` / `dict.fromkeys(...)` in templates, without exposing the dict type itself."""

        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        """`namespace(...)` that refuses underscore-prefixed attribute names."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}.")

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ValueError(f"the chat template is not valid Jinja (line {e.lineno}): {e.message}") from None


@functools.lru_cache(maxsize=64)
def _template_literal_text(template: str) -> str:
    """The template's literal text and string constants, joined by NULs (so no match spans two of them)."""
    jinja2 = _jinja()
    ast = _compile_chat_template(template).environment.parse(template)
    literals = {node.data for node in ast.find_all(jinja2.nodes.TemplateData)}
    literals |= {node.value for node in ast.find_all(jinja2.nodes.Const) if isinstance(node.value, str)}
    return "\0".join(literals)


@functools.lru_cache(maxsize=64)
def _control_token_patterns(tokens: tuple[str, ...]):
    """(regex matching any of `tokens`, longest first; regex matching a marked token or a lone marker)."""
    alternatives = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)) or "(?!)"
    tokens_re = re.compile(alternatives)
    markers_re = re.compile(f"{_CONTROL_START}({alternatives}){_CONTROL_END}|[{_CONTROL_START}{_CONTROL_END}]")
    return tokens_re, markers_re


def _mark_control_tokens(obj, tokens_re):
    """Wrap control tokens inside user strings (recursively through lists and dict values) in markers."""
    if isinstance(obj, str):
        obj = obj.replace(_CONTROL_START, "").replace(_CONTROL_END, "")
        return tokens_re.sub(lambda m: f"{_CONTROL_START}{m.group(0)}{_CONTROL_END}", obj)
    if isinstance(obj, Mapping):
        return {key: _mark_control_tokens(value, tokens_re) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_mark_control_tokens(value, tokens_re) for value in obj]
    return obj


def _plain_template_data(value):
    """What a template may see: plain JSON-like values rebuilt from the inputs. Subclasses of str / int / float
    become the base type, numpy scalars Python ones, dataclasses and pydantic models dicts; any other object an
    inert placeholder string "<TypeName>" (its methods never reach the sandbox)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain_template_data(k): _plain_template_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_template_data(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain_template_data(v) for v in value)
    if isinstance(value, np.generic):
        return _plain_template_data(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain_template_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain_template_data(value.model_dump())
    return f"<{type(value).__name__}>"


def _alias_reasoning_fields(chat: list) -> list:
    """A message's reasoning under any of its usual names is also given as `reasoning_content` and `thinking`."""
    out = []
    for message in chat:
        if isinstance(message, dict):
            reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
            if reasoning is not None:
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


def _generation_spans(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Remove generation markers from `text`; return it and the (start, end) character spans they enclosed."""
    clean, spans, stack, removed = [], [], [], 0
    last = 0
    for match in re.finditer(f"[{_GENERATION_START}{_GENERATION_END}]", text):
        clean.append(text[last:match.start()])
        position = match.start() - removed
        removed += 1
        last = match.end()
        if match.group(0) == _GENERATION_START:
            stack.append(position)
        elif stack:
            spans.append((stack.pop(), position))
    clean.append(text[last:])
    return "".join(clean), spans


def _render_chat(conversations: list, template: str, tools=None, documents=None, add_generation_prompt=False,
                 continue_final_message=False, track_generation=False, **template_kwargs):
    """Render each conversation; returns (texts, generation character spans per text)."""
    if track_generation and not re.search(r"\{%-?\s*generation\s*-?%\}", template):
        logger.warning("return_assistant_tokens_mask==True but chat template does not contain `{% generation %}` "
                       "keyword.")
    compiled = _compile_chat_template(template)
    tool_schemas = None
    if tools is not None:
        tool_schemas = []
        for tool in tools:
            if not isinstance(tool, Mapping):
                raise ValueError("Tools should be JSON schemas (dicts with a 'type' and a 'function' entry); "
                                 f"fastformers does not convert Python functions to schemas (got {tool!r})")
            tool_schemas.append(tool)
    if documents is not None:
        for document in documents:
            if not isinstance(document, Mapping):
                raise TypeError("Documents should be a list of dicts with 'title' and 'text' keys!")
    tool_schemas = _plain_template_data(tool_schemas)
    documents = _plain_template_data(documents)
    template_kwargs = _plain_template_data(template_kwargs)

    texts, all_spans = [], []
    for chat in conversations:
        chat = _plain_template_data(list(getattr(chat, "messages", chat)))
        for message in chat:
            if not isinstance(message, dict):
                raise TypeError(f"Chat messages should be dicts, dataclasses or pydantic models, but got {message!r}.")
        chat = _alias_reasoning_fields(chat)
        final_message = None
        if continue_final_message:
            if not chat:
                raise ValueError("continue_final_message is set but the conversation is empty!")
            field = continue_final_message if isinstance(continue_final_message, str) else "content"
            final_message = chat[-1].get(field)
            if final_message is None:
                raise ValueError(f'continue_final_message is set but the final message has no "{field}" to '
                                 "continue!")
            fields = [field]
            if field in _REASONING_FIELDS:
                fields = [f for f in _REASONING_FIELDS if chat[-1].get(f) == final_message]
            if not any(f in template for f in fields):
                raise ValueError(f'continue_final_message is set to "{field}" but this is not an accepted field '
                                 "in the chat_template")
            if isinstance(final_message, (list, tuple)):
                for block in reversed(final_message):
                    if "text" in block:
                        final_message = block["text"]
                        block["text"] = block["text"] + _CONTINUE_TAG
                        break
                else:
                    raise ValueError("continue_final_message is set but we could not find any text to continue "
                                     "in the final message!")
            else:
                for f in fields:
                    chat[-1][f] = chat[-1][f] + _CONTINUE_TAG
        token = _TRACK_GENERATION.set(bool(track_generation))
        try:
            text = compiled.render(messages=chat, tools=tool_schemas, documents=documents,
                                   add_generation_prompt=add_generation_prompt, **template_kwargs)
        finally:
            _TRACK_GENERATION.reset(token)
        spans = []
        if track_generation:
            text, spans = _generation_spans(text)
        if continue_final_message:
            tag = _CONTINUE_TAG.strip()
            if final_message.strip() not in text or tag not in text:
                raise ValueError(
                    "continue_final_message is set but the final message does not appear in the chat after "
                    "applying the chat template! This can happen if the chat template deletes portions of the "
                    "final message. Please verify the chat template and final message in your chat to ensure "
                    f"they are compatible.Final message to continue: {final_message.strip()}\n"
                    f"Rendered chat:\n{text}")
            at = text.rindex(tag)
            text = text[:at] if text[at:at + len(_CONTINUE_TAG)] == _CONTINUE_TAG else text[:at].rstrip()
        texts.append(text)
        all_spans.append(spans)
    return texts, all_spans


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------

def _tokenizer_from_file(path: str) -> Tokenizer:
    if not os.path.isfile(path):
        raise OSError(f"no tokenizer file at {path}")
    try:
        return Tokenizer.from_file(path)
    except Exception as e:  # the Rust error says what is wrong; the message says which file
        raise ValueError(f"cannot parse tokenizer file {path}: {e}") from None


def _tokenizer_json_parts(path: str):
    """tokenizer.json -> (parsed json, post_processor, truncation, padding), cheaply (no full vocab build)."""
    data = _read_json(path, "tokenizer file")
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"cannot parse tokenizer file {path}: no 'model' section")
    model = dict(data["model"])
    try:
        if model.get("type") in ("BPE", "WordPiece", "WordLevel"):
            model["vocab"] = {}
            if model.get("type") == "BPE":
                model["merges"] = []
            tiny = Tokenizer.from_str(json.dumps({**data, "model": model, "added_tokens": []}))
        else:
            tiny = Tokenizer.from_file(path)
    except Exception as e:
        raise ValueError(f"cannot parse tokenizer file {path}: {e}") from None
    return data, tiny.post_processor, tiny.truncation, tiny.padding


def _wordpiece_vocab(vocab) -> dict[str, int]:
    if isinstance(vocab, dict):
        return vocab
    return {(t[0] if isinstance(t, (list, tuple)) else t): i for i, t in enumerate(vocab or [])}


def _read_vocab_txt(path: str) -> dict[str, int]:
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(f.readlines()):
            vocab[line.rstrip("\n")] = index
    return vocab


def _build_bert(vocab: dict, init: dict) -> Tokenizer:
    backend = Tokenizer(WordPiece(vocab, unk_token=str(init.get("unk_token")), continuing_subword_prefix="##",
                                  max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=init.get("tokenize_chinese_chars", True),
        strip_accents=init.get("strip_accents"), lowercase=init.get("do_lower_case", True))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


def _build_byte_level_bpe(vocab: dict, merges: list, init: dict) -> Tokenizer:
    backend = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                            end_of_word_suffix="", fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(init.get("add_prefix_space", False)))
    backend.decoder = decoders.ByteLevel()
    return backend


def _build_xlm_roberta(vocab, charsmap: Optional[bytes], init: dict) -> Tokenizer:
    """transformers' XLMRobertaTokenizer pipeline: Unigram (unk id 3), the SentencePiece charsmap normalizer,
    whitespace split + metaspace."""
    backend = Tokenizer(Unigram([tuple(v) for v in vocab], unk_id=3, byte_fallback=False))
    if charsmap is not None:
        backend.normalizer = normalizers.Precompiled(charsmap)
    scheme = "always" if init.get("add_prefix_space", True) else "never"
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme)])
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme)
    return backend


def _precompiled_charsmap(normalizer) -> Optional[bytes]:
    """The SentencePiece charsmap of a tokenizer.json normalizer (alone or inside a Sequence), if any."""
    if not normalizer:
        return None
    items = normalizer.get("normalizers", []) if normalizer.get("type") == "Sequence" else [normalizer]
    for item in items:
        if item.get("type") == "Precompiled" and item.get("precompiled_charsmap"):
            import base64

            return base64.b64decode(item["precompiled_charsmap"])
    return None


def _merges_from_json(merges) -> list[tuple[str, str]]:
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges or []]


def _resolve_class(cfg: dict, model_cfg: Optional[dict]) -> Optional[str]:
    name = cfg.get("tokenizer_class") or (model_cfg or {}).get("tokenizer_class")
    if not name and model_cfg:
        name = _MODEL_TYPE_TO_CLASS.get(model_cfg.get("model_type"))
    if name and name != "PreTrainedTokenizerFast" and name.endswith("Fast"):
        name = name[:-4]
    return name or None


def _load(name_or_path, *, revision=None, cache_dir=None, local_files_only=False, token=None, overrides=None,
          use_declared_class=True) -> PreTrainedTokenizerFast:
    overrides = dict(overrides or {})
    for ignored in ("use_fast", "_from_auto", "force_download", "proxies", "resume_download", "config",
                    "_commit_hash", "trust_remote_code"):
        overrides.pop(ignored, None)
    gguf_file = overrides.pop("gguf_file", None)
    subfolder = overrides.pop("subfolder", None) or ""
    name = os.fspath(name_or_path)
    hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    if gguf_file is not None:
        return _load_gguf(name, os.fspath(gguf_file), subfolder, hub, overrides)

    def find(filename: str) -> Optional[str]:
        return resolve_file(name, f"{subfolder}/{filename}" if subfolder else filename, required=False, **hub)

    single_file = os.path.isfile(name)
    if single_file:  # a tokenizer.json (or vocab.txt) given directly
        cfg, special_map, model_cfg = {}, None, None
        tokenizer_json = name if name.endswith(".json") else None
        vocab_txt = name if name.endswith(".txt") else None
        vocab_json = merges_txt = None
        looked_for = [name]
    else:
        cfg = _read_json(find(TOKENIZER_CONFIG_FILE), "tokenizer config") or {}
        if not isinstance(cfg, dict):
            raise ValueError(f"{TOKENIZER_CONFIG_FILE} of {name!r} is not a JSON object")
        special_map = _read_json(find(SPECIAL_TOKENS_MAP_FILE), "special tokens map")
        tokenizer_json = find(TOKENIZER_FILE)
        model_cfg = None
        if use_declared_class and not cfg.get("tokenizer_class"):
            model_cfg = _read_json(find("config.json"), "model config")
        vocab_txt = vocab_json = merges_txt = None
        looked_for = [TOKENIZER_FILE, "vocab.txt", "vocab.json + merges.txt", "spiece.model", "source.spm"]

    class_name = _resolve_class(cfg, model_cfg) if use_declared_class else None
    canonical = _CANONICAL_CLASS.get(class_name, class_name) if class_name else None
    family = _FAMILY.get(canonical)

    spm_kind = None  # "t5" / "marian": a SentencePiece checkpoint without tokenizer.json (fastformers.sentencepiece)
    if tokenizer_json is None and not single_file:
        # the slow-tokenizer files, those of the declared class first
        if canonical in ("T5Tokenizer", "MarianTokenizer"):
            spm_kind = "t5" if canonical == "T5Tokenizer" else "marian"
        elif family in ("roberta", "gpt2") or class_name in _ROBERTA_LIKE_SLOW:
            vocab_json = find("vocab.json")
            merges_txt = find("merges.txt") if vocab_json is not None else None
            if merges_txt is None:
                vocab_txt = find("vocab.txt")
        else:
            vocab_txt = find("vocab.txt")
            if vocab_txt is None:
                vocab_json = find("vocab.json")
                merges_txt = find("merges.txt") if vocab_json is not None else None
        if canonical is None and vocab_txt is None and merges_txt is None:
            if find("spiece.model") is not None:
                spm_kind, canonical = "t5", "T5Tokenizer"
            elif find("source.spm") is not None:
                spm_kind, canonical = "marian", "MarianTokenizer"

    if tokenizer_json is None and spm_kind is None:
        if family == "xlmr":
            family = None
        if vocab_json is not None and merges_txt is not None:
            if family not in ("roberta", "gpt2"):
                family = "roberta" if class_name in _ROBERTA_LIKE_SLOW else "gpt2"
                if canonical not in _ROBERTA_LIKE_SLOW:
                    canonical = "RobertaTokenizer" if family == "roberta" else "GPT2Tokenizer"
        elif vocab_txt is not None:
            family = "bert"
            if _FAMILY.get(canonical) != "bert":
                canonical = "BertTokenizer"
        else:
            raise OSError(
                f"cannot load a tokenizer from {name!r}: it has none of the tokenizer files fastformers reads "
                f"(looked for {', '.join(looked_for)})"
            )

    # -- init kwargs, as transformers assembles them ---------------------------------------------------------------
    init = dict(cfg)
    init.pop("tokenizer_class", None)
    init.pop("init_inputs", None)
    init.pop("auto_map", None)
    if tokenizer_json is not None:
        init.pop("add_bos_token", None)
        init.pop("add_eos_token", None)
    if not single_file:
        templates = {}
        default_template = find(CHAT_TEMPLATE_FILE)
        if default_template is not None:
            with open(default_template, encoding="utf-8") as f:
                templates["default"] = f.read()
        extra_dir = os.path.join(name, subfolder, CHAT_TEMPLATE_DIR)
        if os.path.isdir(extra_dir):
            for entry in sorted(os.listdir(extra_dir)):
                if entry.endswith(".jinja"):
                    with open(os.path.join(extra_dir, entry), encoding="utf-8") as f:
                        templates[entry[: -len(".jinja")]] = f.read()
        if len(templates) == 1 and "default" in templates:
            init["chat_template"] = templates["default"]
        elif templates:
            init["chat_template"] = templates
    init.update(overrides)
    if "additional_special_tokens" in init and not init.get("extra_special_tokens"):
        init["extra_special_tokens"] = init.pop("additional_special_tokens")

    tokenizer_data = post_processor = truncation = padding = None
    if tokenizer_json is not None and family is not None:
        tokenizer_data, post_processor, truncation, padding = _tokenizer_json_parts(tokenizer_json)
        if family == "xlmr" and tokenizer_data["model"].get("type") != "Unigram":
            family = None  # not the SentencePiece layout XLMRobertaTokenizer rebuilds: use the file as is

    added_tokens_decoder: dict[int, AddedToken] = {}
    added_by_content: dict[str, AddedToken] = {}
    if "added_tokens_decoder" in init:
        for index, tok in (init["added_tokens_decoder"] or {}).items():
            tok = _as_added_token(tok)
            if not isinstance(tok, AddedToken):
                raise TypeError(f"Found a {type(tok)} in the saved `added_tokens_decoder`, should be a dictionary "
                                "or an AddedToken instance")
            added_tokens_decoder[int(index)] = tok
            added_by_content[str(tok)] = tok
    else:
        if isinstance(special_map, dict):
            for key, value in special_map.items():
                if key in overrides and overrides[key]:
                    continue
                if isinstance(value, dict) and key not in ("extra_special_tokens", "additional_special_tokens"):
                    value = _as_added_token({k: v for k, v in value.items() if k != "special"}, special=True)
                elif key in ("extra_special_tokens", "additional_special_tokens") and isinstance(value, list):
                    existing = list(init.get("extra_special_tokens") or [])
                    seen = {str(t) for t in existing}
                    for tok in value:
                        tok = _as_added_token(tok, special=True) if isinstance(tok, dict) else tok
                        if str(tok) not in seen:
                            existing.append(tok)
                            seen.add(str(tok))
                    key, value = "extra_special_tokens", existing
                init[key] = value
        if tokenizer_data is not None:
            for entry in tokenizer_data.get("added_tokens", []):
                entry = dict(entry)
                index = entry.pop("id")
                tok = AddedToken(**entry)
                added_tokens_decoder[index] = tok
                added_by_content[str(tok)] = tok
    init["added_tokens_decoder"] = added_tokens_decoder
    init = _convert_typed_dicts(init)
    added_tokens_decoder = init["added_tokens_decoder"]
    for key in SPECIAL_TOKENS_ATTRIBUTES:
        if key in init and init[key] is not None:
            init[key] = _as_added_token(init[key])
            if added_by_content:
                init[key] = added_by_content.get(str(init[key]), init[key])
    init["name_or_path"] = name
    if spm_kind is not None:
        from fastformers import sentencepiece

        if spm_kind == "t5":
            spiece = find("spiece.model")
            if spiece is None:
                raise OSError(f"cannot load the T5Tokenizer of {name!r}: it has neither tokenizer.json nor "
                              "spiece.model")
            return sentencepiece.load_t5(spiece, init)
        files = {"source_spm": find("source.spm"), "target_spm": find("target.spm"), "vocab": find("vocab.json"),
                 "target_vocab": find("target_vocab.json")}
        return sentencepiece.load_marian(files, init)

    # -- backend ------------------------------------------------------------------------------------------------
    if family is not None:
        for key, value in _FAMILY_DEFAULTS[family].items():
            init.setdefault(key, value)
    if family == "bert":
        if tokenizer_data is not None:
            vocab = _wordpiece_vocab(tokenizer_data["model"].get("vocab"))
        else:
            vocab = _read_vocab_txt(vocab_txt)
        backend = _build_bert(vocab, init)
    elif family in ("roberta", "gpt2"):
        if tokenizer_data is not None:
            vocab = _wordpiece_vocab(tokenizer_data["model"].get("vocab"))
            merges = _merges_from_json(tokenizer_data["model"].get("merges"))
        else:
            try:
                vocab, merges = BPE.read_file(vocab_json, merges_txt)
            except Exception as e:
                raise ValueError(f"cannot read BPE vocabulary {vocab_json} / {merges_txt}: {e}") from None
        backend = _build_byte_level_bpe(vocab, merges, init)
        if family == "gpt2" and post_processor is not None:
            backend.post_processor = post_processor
    elif family == "xlmr":
        backend = _build_xlm_roberta(tokenizer_data["model"]["vocab"],
                                     _precompiled_charsmap(tokenizer_data.get("normalizer")), init)
    else:
        backend = _tokenizer_from_file(tokenizer_json)
    if truncation is not None:
        backend.enable_truncation(**truncation)
    if padding is not None:
        backend.enable_padding(**padding)

    input_names = _MODEL_INPUT_NAMES.get(canonical, _DEFAULT_MODEL_INPUT_NAMES)
    tokenizer = PreTrainedTokenizerFast(_backend=backend, _tokenizer_class=canonical,
                                        _default_model_input_names=input_names, **init)
    for key in ("do_lower_case", "tokenize_chinese_chars", "strip_accents", "trim_offsets", "errors"):
        if family is not None and key in init:
            object.__setattr__(tokenizer, key, init[key])

    # -- class-specific post-processors (set after the special tokens exist, as transformers does) ---------------
    if family == "bert":
        cls_tok, sep_tok = str(tokenizer.cls_token), str(tokenizer.sep_token)
        cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else 2
        sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else 3
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls_tok}:0 $A:0 {sep_tok}:0",
            pair=f"{cls_tok}:0 $A:0 {sep_tok}:0 $B:1 {sep_tok}:1",
            special_tokens=[(cls_tok, cls_id), (sep_tok, sep_id)],
        )
    elif family == "roberta":
        backend.post_processor = processors.RobertaProcessing(
            (str(tokenizer.sep_token), tokenizer.sep_token_id), (str(tokenizer.cls_token), tokenizer.cls_token_id),
            trim_offsets=bool(init.get("trim_offsets", True)),
            add_prefix_space=bool(init.get("add_prefix_space", False)),
        )
    elif family == "xlmr":
        bos, eos = str(init["bos_token"]), str(init["eos_token"])
        backend.post_processor = processors.TemplateProcessing(
            single=[bos, "$A", eos], pair=[bos, "$A", eos, eos, "$B", eos],
            special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos)), (eos, tokenizer.convert_tokens_to_ids(eos))],
        )
    return tokenizer


def _load_gguf(name: str, gguf_file: str, subfolder: str, hub: dict, overrides: dict) -> PreTrainedTokenizerFast:
    """The tokenizer of a GGUF file of a folder or hub repository (or a GGUF path given directly), built from the
    file's metadata as transformers builds it (see fastformers.loading.gguf)."""
    from fastformers.loading.gguf import read_gguf

    def in_checkpoint(filename: str, required: bool) -> Optional[str]:
        return resolve_file(name, f"{subfolder}/{filename}" if subfolder else filename, required=required, **hub)

    direct = os.path.isfile(gguf_file) and not os.path.isdir(name)
    path = gguf_file if direct else in_checkpoint(gguf_file, True)
    tokenizer_json = None if direct else in_checkpoint(TOKENIZER_FILE, False)
    if tokenizer_json is not None:
        # transformers: a tokenizer.json beside the GGUF wins; the GGUF's tokenizer metadata (special tokens, chat
        # template) and the folder's tokenizer_config.json are then both ignored
        return PreTrainedTokenizerFast(tokenizer_file=tokenizer_json, name_or_path=name, **overrides)
    with read_gguf(path) as checkpoint:
        return checkpoint.tokenizer(name_or_path=name, **overrides)


class AutoTokenizer:
    """`AutoTokenizer.from_pretrained(name_or_path)`: the tokenizer of a local folder or hub repository."""

    def __init__(self):
        raise EnvironmentError("AutoTokenizer is designed to be instantiated using "
                               "`AutoTokenizer.from_pretrained(name_or_path)`.")

    @classmethod
    def from_pretrained(cls, name_or_path, *, revision: Optional[str] = None, cache_dir=None,
                        local_files_only: bool = False, token=None, trust_remote_code: bool = False,
                        use_fast: bool = True, **overrides: Any) -> PreTrainedTokenizerFast:
        """Load the tokenizer of `name_or_path` as transformers' AutoTokenizer would.

        Reads tokenizer_config.json and special_tokens_map.json when present, then tokenizer.json, or else
        vocab.txt (BERT WordPiece), vocab.json + merges.txt (byte-level BPE, GPT-2 or RoBERTa style), or a
        SentencePiece checkpoint (spiece.model: T5; source.spm + target.spm + vocab.json: Marian; see
        fastformers.sentencepiece). Keyword
        overrides (``model_max_length=``, ``padding_side=``, special tokens, ``do_lower_case=``...) replace the
        values of tokenizer_config.json. ``use_fast`` is accepted and ignored: the tokenizer is always the
        `tokenizers`-backed one, as in transformers 5. ``gguf_file="model.gguf"`` reads the tokenizer stored in
        that GGUF file of the folder / repository instead (unless a tokenizer.json sits beside it, which
        transformers then uses).
        """
        refuse_remote_code(trust_remote_code)
        return _load(name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                     token=token, overrides=overrides, use_declared_class=True)
