"""Stopping criteria: `criteria(input_ids, scores) -> (batch,) bool`, True where a row is done."""

from __future__ import annotations

import json
import time
from typing import Dict, List, Optional, Sequence, Union

import torch

from .logits_process import TokenIds, _id_tensor


class StoppingCriteria:
    """Base class: `__call__(input_ids, scores, **kwargs)` returns a (batch,) bool tensor."""

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        raise NotImplementedError("StoppingCriteria needs to be subclassed")


class MaxLengthCriteria(StoppingCriteria):
    """Done once the sequence (prompt included) has `max_length` tokens."""

    def __init__(self, max_length: int, max_position_embeddings: Optional[int] = None) -> None:
        self.max_length = max_length
        self.max_position_embeddings = max_position_embeddings

    def __call__(self, input_ids, scores, **kwargs):
        done = input_ids.shape[1] >= self.max_length
        return torch.full((input_ids.shape[0],), done, device=input_ids.device, dtype=torch.bool)


class MaxTimeCriteria(StoppingCriteria):
    """Done once `max_time` seconds have passed since `initial_timestamp` (construction by default)."""

    def __init__(self, max_time: float, initial_timestamp: Optional[float] = None) -> None:
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def __call__(self, input_ids, scores, **kwargs):
        done = time.time() - self.initial_timestamp > self.max_time
        return torch.full((input_ids.shape[0],), done, device=input_ids.device, dtype=torch.bool)


class EosTokenCriteria(StoppingCriteria):
    """Done where the last token is one of the eos ids."""

    def __init__(self, eos_token_id: TokenIds) -> None:
        self.eos_token_id = _id_tensor(eos_token_id)

    def __call__(self, input_ids, scores, new_token_length: int = 1, **kwargs):
        self.eos_token_id = self.eos_token_id.to(input_ids.device)
        return torch.isin(input_ids[:, -new_token_length:], self.eos_token_id).any(dim=-1)


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's byte -> printable character table (what byte-level BPE vocabularies are written in)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class StopStringCriteria(StoppingCriteria):
    """Done where the text ends in one of `stop_strings`: a stop string occurs in the detokenized
    sequence and its last character belongs to the last token (so "stop" also fires on a final token
    "stop." or "stops", but not once later tokens have been generated after it).

    Each token's text is what it adds when it follows other text (a BPE token "Ġcat" is " cat"),
    taken from the tokenizer once per token id on first use; byte-level and byte-fallback vocabularies
    are matched on bytes, as transformers does."""

    _PREFIX = "abcdef"

    def __init__(self, tokenizer, stop_strings: Union[str, Sequence[str]]) -> None:
        if isinstance(stop_strings, str):
            stop_strings = [stop_strings]
        self.stop_strings = tuple(stop_strings)
        if not self.stop_strings or any(not isinstance(s, str) or not s for s in self.stop_strings):
            raise ValueError(f"`stop_strings` must be non-empty strings, got {stop_strings!r}")
        self.tokenizer = tokenizer
        self.mode = self._matching_mode(tokenizer)
        self._targets = [s.encode("utf-8") if self.mode else s for s in self.stop_strings]
        self.maximum_token_len = max(len(s) for s in self._targets)
        self._texts: Dict[int, Union[str, bytes]] = {}
        self._byte_decoder = {c: b for b, c in _bytes_to_unicode().items()} if self.mode == "byte_level" else None
        self._prefix_tokens: Optional[List[str]] = None

    @staticmethod
    def _matching_mode(tokenizer) -> Optional[str]:
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        if decoder is None:
            return None
        if type(decoder).__name__ == "ByteLevel":
            return "byte_level"
        state = getattr(decoder, "__getstate__", lambda: None)()
        try:
            state = json.loads(state) if isinstance(state, (str, bytes)) else None
        except json.JSONDecodeError:
            state = None

        def has(node, kind):
            if isinstance(node, dict):
                return node.get("type") == kind or any(has(v, kind) for v in node.values())
            return isinstance(node, list) and any(has(v, kind) for v in node)

        if has(state, "ByteFallback"):
            return "byte_fallback"
        if has(state, "ByteLevel"):
            return "byte_level"
        return None

    def token_text(self, token_id: int) -> Union[str, bytes]:
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self._compute_text(token_id)
        return text

    def _compute_text(self, token_id: int) -> Union[str, bytes]:
        token = self.tokenizer.convert_ids_to_tokens(token_id)
        if token is None:
            return b"" if self.mode else ""
        if self.mode == "byte_level" and all(c in self._byte_decoder for c in token):
            return bytes(self._byte_decoder[c] for c in token)
        if self.mode == "byte_fallback" and len(token) == 6 and token.startswith("<0x") and token.endswith(">") \
                and all(c in "0123456789abcdefABCDEF" for c in token[3:5]):
            return bytes([int(token[3:5], 16)])
        # what the token adds after some text: decode it behind a fixed prefix and cut the prefix off
        if self._prefix_tokens is None:
            ids = self.tokenizer(self._PREFIX, add_special_tokens=False)["input_ids"]
            self._prefix_tokens = list(self.tokenizer.convert_ids_to_tokens(ids))
        text = self.tokenizer.convert_tokens_to_string(self._prefix_tokens + [token])
        text = text[text.index(self._PREFIX) + len(self._PREFIX):]
        return text.encode("utf-8") if self.mode else text

    def __call__(self, input_ids, scores, **kwargs):
        window = input_ids[:, -self.maximum_token_len:].tolist()
        done = []
        for row in window:
            texts = [self.token_text(t) for t in row]
            text, last = texts[0][:0].join(texts), len(texts[-1])
            done.append(any(text.find(s, max(0, len(text) - last - len(s) + 1)) != -1 for s in self._targets))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class StoppingCriteriaList(list):
    """A row is done when any criterion says so."""

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for criterion in self:
            done = done | criterion(input_ids, scores, **kwargs)
        return done

    @property
    def max_length(self) -> Optional[int]:
        for criterion in self:
            if isinstance(criterion, MaxLengthCriteria):
                return criterion.max_length
        return None


__all__ = ["StoppingCriteria", "MaxLengthCriteria", "MaxTimeCriteria", "EosTokenCriteria", "StopStringCriteria",
           "StoppingCriteriaList"]
