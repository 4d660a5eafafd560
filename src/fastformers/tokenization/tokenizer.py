"""`PreTrainedTokenizerFast`: a `tokenizers.Tokenizer` with transformers' tokenizer API: the call signature
(text, pairs, batches, pre-tokenized words, targets), padding and truncation resolved as transformers resolves
them, `pad`, decoding, the vocabulary, and `save_pretrained` writing files transformers reads back.

Special tokens (special_tokens.py) and chat templates (chat_template.py) are mixed in from their own modules;
`from_pretrained` reads checkpoints with the loader of auto.py."""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from collections.abc import Mapping
from typing import Callable, Optional

import numpy as np
from tokenizers import AddedToken, Tokenizer

from fastformers.loading.hub import refuse_remote_code

from .batch_encoding import BatchEncoding, is_torch_tensor, to_py
from .chat_template import ChatTemplateMixin
from .readers import tokenizer_from_file
from .special_tokens import SPECIAL_TOKENS_ATTRIBUTES, SpecialTokensMixin, added_token_state, as_added_token

logger = logging.getLogger("fastformers.tokenization")

VERY_LARGE_INTEGER = int(1e30)  # model_max_length of a tokenizer with no declared limit (as in transformers)
LARGE_INTEGER = int(1e20)

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"

# Every class but those with token_type_ids (see auto.py) returns input_ids and attention_mask only.
DEFAULT_MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]


def _jsonable(obj):
    """Config values -> JSON: AddedToken -> {"__type": "AddedToken", ...} (the form transformers reads back)."""
    if isinstance(obj, AddedToken):
        return {"__type": "AddedToken", **added_token_state(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(o) for o in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


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


def _strategy(value, off: str, allowed: tuple, what: str) -> str:
    """A padding / truncation argument other than True as its strategy name: False / None -> `off`, an enum
    member -> its value, a known name -> itself; anything else is an error naming the choices."""
    if value is False or value is None:
        return off
    name = getattr(value, "value", value)
    if name not in allowed:
        raise ValueError(f"{value!r} is not a valid {what} strategy; use one of True, False, "
                         f"{', '.join(repr(s) for s in allowed)}")
    return name


class PreTrainedTokenizerFast(SpecialTokensMixin, ChatTemplateMixin):
    """A `tokenizers.Tokenizer` with transformers' tokenizer API.

    Build it from code with ``tokenizer_object=`` (a `tokenizers.Tokenizer`, copied) or ``tokenizer_file=`` (a
    tokenizer.json path), plus the special tokens and settings transformers' tokenizers take (``bos_token``,
    ``eos_token``, ``unk_token``, ``sep_token``, ``pad_token``, ``cls_token``, ``mask_token``,
    ``additional_special_tokens``/``extra_special_tokens``, ``model_max_length``, ``padding_side``,
    ``truncation_side``, ``clean_up_tokenization_spaces``, ``chat_template``, ``add_bos_token``,
    ``add_eos_token``, ``model_input_names``, ``added_tokens_decoder``, ``name_or_path``...). Special tokens
    missing from the vocabulary are added to it, as transformers does.
    """

    model_input_names: list[str] = list(DEFAULT_MODEL_INPUT_NAMES)
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
                backend = tokenizer_from_file(os.fspath(tokenizer_file))
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
                value = as_added_token(value)
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
                    self._extra_special_tokens = [as_added_token(v) for v in value]
                else:
                    raise TypeError("extra_special_tokens must be a list/tuple of tokens or a dict of named tokens")
            elif key.endswith("_token") and isinstance(value, (str, AddedToken)):
                model_specific[key] = kwargs.pop(key)
        if model_specific:
            self.SPECIAL_TOKENS_ATTRIBUTES = list(self.SPECIAL_TOKENS_ATTRIBUTES) + [
                k for k in model_specific if k not in self.SPECIAL_TOKENS_ATTRIBUTES]
            for key, value in model_specific.items():
                self._special_tokens_map[key] = as_added_token(value)

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
            token = as_added_token(token)
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
                    tok = AddedToken(**{**added_token_state(tok), "special": True})
                tokens.append(tok)
            self._tokenizer.add_tokens(tokens)

        if explicit_bos_eos or self._tokenizer.post_processor is None:
            self.update_post_processor()

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
        ids = to_py(ids)
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

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self._tokenizer.num_special_tokens_to_add(pair)

    @property
    def max_len_single_sentence(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=False)

    @property
    def max_len_sentences_pair(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=True)

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
        else:
            pad = _strategy(padding, "do_not_pad", _PADDING_STRATEGIES, "padding")
        trunc = "longest_first" if truncation is True else \
            _strategy(truncation, "do_not_truncate", _TRUNCATION_STRATEGIES, "truncation")

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

        try:
            raw = self._tokenizer.encode_batch(batch, add_special_tokens=add_special_tokens,
                                               is_pretokenized=is_split_into_words)
        except TypeError:
            _refuse_surrogates(batch)  # the `tokenizers` library's own message does not say what is wrong
            raise
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
            if is_torch_tensor(first):
                return_tensors = "pt" if return_tensors is None else return_tensors
            elif isinstance(first, (np.ndarray, np.generic)):
                return_tensors = "np" if return_tensors is None else return_tensors
            else:
                raise ValueError(f"type of {first} unknown: {type(first)}. Should be one of a python, numpy, or "
                                 "pytorch object.")
            encoded_inputs = {k: to_py(v) for k, v in encoded_inputs.items()}

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
        token_ids = to_py(token_ids)
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
    # Saving / loading
    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path, *, revision=None, cache_dir=None, local_files_only=False, token=None,
                        trust_remote_code=False, **overrides) -> "PreTrainedTokenizerFast":
        """Load tokenizer.json as is (transformers' `PreTrainedTokenizerFast.from_pretrained`: no class-specific
        rebuild). Use `AutoTokenizer.from_pretrained` for the tokenizer class the checkpoint declares."""
        refuse_remote_code(trust_remote_code)
        return PreTrainedTokenizerFast._load_checkpoint(
            name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token,
            overrides=overrides, use_declared_class=False)

    # The checkpoint reader behind from_pretrained: auto.py's, which hands it over here when imported (the package
    # imports it). It builds every tokenizer class, this one and MarianTokenizer included, so it lives above them
    # all rather than in this module.
    _load_checkpoint: Callable[..., "PreTrainedTokenizerFast"]

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
                state = added_token_state(value)
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

    def __repr__(self) -> str:
        added = "\n\t".join(f"{k}: {v!r}," for k, v in self.added_tokens_decoder.items())
        added = f"\n\t{added}\n" if added else ""
        name = self._tokenizer_class or type(self).__name__
        return (f"{name}(name_or_path='{self.name_or_path}', vocab_size={self.vocab_size}, "
                f"model_max_length={self.model_max_length}, padding_side='{self.padding_side}', "
                f"truncation_side='{self.truncation_side}', special_tokens={self.special_tokens_map}, "
                f"added_tokens_decoder={{{added}}})")


def _refuse_surrogates(batch) -> None:
    """A text holding an unpaired surrogate (a str from e.g. os.fsdecode or json with lone \\ud800 escapes) is
    not Unicode text the tokenizer can encode: a TypeError (as transformers raises) naming the character."""
    stack = list(batch)
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, str):
            for i, ch in enumerate(item):
                if "\ud800" <= ch <= "\udfff":
                    raise TypeError(f"text holds an unpaired surrogate U+{ord(ch):04X} at position {i}: not valid "
                                    f"Unicode; clean it first (e.g. text.encode('utf-8', 'replace').decode())")
