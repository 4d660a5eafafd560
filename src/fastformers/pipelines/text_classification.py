"""text-classification (alias sentiment-analysis): one label and score per text or text pair."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from .base import Pipeline

_FUNCTIONS = ("softmax", "sigmoid", "none")
_UNSET = object()  # top_k not given: transformers' legacy output (one dict per input)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class TextClassificationPipeline(Pipeline):
    task = "text-classification"

    def sanitize_parameters(self, top_k: Any = _UNSET, function_to_apply: Any = None, **tokenizer_kwargs: Any):
        if function_to_apply is not None:
            function_to_apply = str(getattr(function_to_apply, "value", function_to_apply)).lower()
            if function_to_apply not in _FUNCTIONS:
                raise ValueError(f"function_to_apply={function_to_apply!r}: expected one of {', '.join(_FUNCTIONS)}")
        if top_k is not _UNSET and top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        return tokenizer_kwargs, {"top_k": top_k, "function_to_apply": function_to_apply}

    def is_single(self, inputs: Any) -> bool:
        return isinstance(inputs, (str, dict))

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        result = super().__call__(inputs, **kwargs)
        legacy = "top_k" not in {**self.call_defaults, **kwargs}
        return [result] if legacy and isinstance(inputs, str) else result  # as transformers: a dict stays bare

    def preprocess(self, inputs: Any, **tokenizer_kwargs: Any) -> Dict[str, Any]:
        if isinstance(inputs, dict):
            if set(inputs) - {"text", "text_pair"} or "text" not in inputs:
                raise ValueError("a text pair is given as {'text': ..., 'text_pair': ...}, "
                                 f"got keys {sorted(inputs)}")
            return self.tokenizer(**inputs, **tokenizer_kwargs)
        if not isinstance(inputs, str):
            raise ValueError("text-classification takes strings; give a text pair as a dictionary "
                             f"{{'text': ..., 'text_pair': ...}}, got {type(inputs).__name__}")
        return self.tokenizer(inputs, **tokenizer_kwargs)

    def forward(self, model_inputs):
        return {"logits": self.model(**model_inputs).logits}

    def _default_function(self) -> str:
        config = self.model.config
        problem_type = getattr(config, "problem_type", None)
        if problem_type == "regression":
            return "none"
        if problem_type == "multi_label_classification" or config.num_labels == 1:
            return "sigmoid"
        if problem_type == "single_label_classification" or config.num_labels > 1:
            return "softmax"
        return str(getattr(config, "function_to_apply", "none")).lower()

    def postprocess(self, outputs, top_k=_UNSET, function_to_apply=None):
        function_to_apply = function_to_apply or self._default_function()
        logits = outputs["logits"][0].float().numpy()
        if function_to_apply == "softmax":
            scores = _softmax(logits)
        elif function_to_apply == "sigmoid":
            scores = 1.0 / (1.0 + np.exp(-logits))
        else:
            scores = logits
        id2label = self.model.config.id2label
        if top_k is _UNSET:
            best = int(scores.argmax())
            return {"label": id2label[best], "score": scores[best].item()}
        ranked = sorted(({"label": id2label[i], "score": s.item()} for i, s in enumerate(scores)),
                        key=lambda d: d["score"], reverse=True)
        return ranked if top_k is None else ranked[:top_k]
