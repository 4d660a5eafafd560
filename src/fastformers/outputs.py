"""Model output containers with transformers' field names.

Like transformers' ModelOutput, an output reads as attributes (`out.logits`), as a dict
(`out["logits"]`) and as a tuple (`out[0]`, `out[:2]`, `out.to_tuple()`) of the fields that are not None, in order.

The KV cache field is `cache`, as in transformers 5.25; the older name `past_key_values` still reads, writes and
constructs it.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, Optional, Tuple


_OLD_CACHE_NAME = "past_key_values"


class ModelOutput(OrderedDict):
    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                super().__setitem__(f.name, value)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(self._field(key))
        return self.to_tuple()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        key = self._field(key)
        super().__setitem__(key, value)
        object.__setattr__(self, key, value)

    def __contains__(self, key: Any) -> bool:
        return super().__contains__(self._field(key) if isinstance(key, str) else key)

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(self._field(key) if isinstance(key, str) else key, default)

    @property
    def past_key_values(self) -> Any:
        return getattr(self, "cache", None)

    def _field(self, key: str) -> str:
        return "cache" if key == _OLD_CACHE_NAME and "cache" in self.__dataclass_fields__ else key

    def __setattr__(self, key: str, value: Any) -> None:
        key = self._field(key)
        if value is not None and key in self.__dataclass_fields__:
            super().__setitem__(key, value)
        object.__setattr__(self, key, value)

    def to_tuple(self) -> Tuple[Any, ...]:
        return tuple(self[k] for k in self.keys())

    def __reduce__(self):
        return type(self), tuple(getattr(self, f.name) for f in fields(self))


def _output(name: str, *names: str) -> type:
    """Declare an output dataclass whose fields, all Optional and default None, are `names` ("past_key_values"
    becomes the field "cache", which the old name also fills when the output is constructed)."""
    names = tuple("cache" if n == _OLD_CACHE_NAME else n for n in names)
    ns = {"__annotations__": {n: Optional[Any] for n in names},
          "__module__": sys._getframe(1).f_globals["__name__"]}  # where it is declared: pickle finds it there
    ns.update({n: None for n in names})
    cls = dataclass(type(name, (ModelOutput,), ns), eq=False)
    if "cache" in names:
        init = cls.__init__

        def __init__(self, *args: Any, past_key_values: Any = None, **kwargs: Any) -> None:
            if past_key_values is not None:
                kwargs["cache"] = past_key_values
            init(self, *args, **kwargs)

        cls.__init__ = __init__
    return cls


BaseModelOutput = _output("BaseModelOutput", "last_hidden_state", "hidden_states", "attentions")
BaseModelOutputWithPoolingAndCrossAttentions = _output(
    "BaseModelOutputWithPoolingAndCrossAttentions",
    "last_hidden_state", "pooler_output", "hidden_states", "past_key_values", "attentions", "cross_attentions",
)
MaskedLMOutput = _output("MaskedLMOutput", "loss", "logits", "hidden_states", "attentions")
SequenceClassifierOutput = _output("SequenceClassifierOutput", "loss", "logits", "hidden_states", "attentions")
TokenClassifierOutput = _output("TokenClassifierOutput", "loss", "logits", "hidden_states", "attentions")
MultipleChoiceModelOutput = _output("MultipleChoiceModelOutput", "loss", "logits", "hidden_states", "attentions")
QuestionAnsweringModelOutput = _output(
    "QuestionAnsweringModelOutput", "loss", "start_logits", "end_logits", "hidden_states", "attentions"
)
# encoder-decoder models (BART, Marian, T5)
Seq2SeqModelOutput = _output(
    "Seq2SeqModelOutput", "last_hidden_state", "past_key_values", "decoder_hidden_states", "decoder_attentions",
    "cross_attentions", "encoder_last_hidden_state", "encoder_hidden_states", "encoder_attentions",
)
Seq2SeqLMOutput = _output(
    "Seq2SeqLMOutput", "loss", "logits", "past_key_values", "decoder_hidden_states", "decoder_attentions",
    "cross_attentions", "encoder_last_hidden_state", "encoder_hidden_states", "encoder_attentions",
)
Seq2SeqSequenceClassifierOutput = _output(
    "Seq2SeqSequenceClassifierOutput", "loss", "logits", "past_key_values", "decoder_hidden_states",
    "decoder_attentions", "cross_attentions", "encoder_last_hidden_state", "encoder_hidden_states",
    "encoder_attentions",
)

__all__ = [
    "ModelOutput", "BaseModelOutput", "BaseModelOutputWithPoolingAndCrossAttentions", "MaskedLMOutput",
    "SequenceClassifierOutput", "TokenClassifierOutput", "MultipleChoiceModelOutput",
    "QuestionAnsweringModelOutput", "Seq2SeqModelOutput", "Seq2SeqLMOutput", "Seq2SeqSequenceClassifierOutput",
]
