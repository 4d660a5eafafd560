"""`BatchEncoding`, what a tokenizer call returns: a dict of lists or tensors, plus the `tokenizers.Encoding` of
each sequence for mapping between characters, words and tokens."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NamedTuple, Optional

import numpy as np

logger = logging.getLogger("fastformers.tokenization")


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


def to_py(obj):
    """Tensors, arrays and numpy scalars -> plain python lists / numbers."""
    if isinstance(obj, Mapping):
        return {k: to_py(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_py(o) for o in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if type(obj).__module__.startswith("torch") and hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def is_torch_tensor(obj) -> bool:
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
