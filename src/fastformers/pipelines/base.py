"""The pipeline base class: tokenize each input, pad inputs into batches, run the model once per batch
under inference_mode, cut the outputs back to each input's own length, post-process per input.

A task subclass says how to tokenize one input (`preprocess`), what to compute from a padded batch
(`forward`), which outputs run along the sequence (`per_token_outputs`) and how one input's outputs
become the dicts transformers returns (`postprocess`). Outputs are cut to each input's real length,
so an input's result is the same whatever the batch it ran in.
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import torch


class Pipeline:
    task: str = ""
    per_token_outputs: Tuple[str, ...] = ()
    # keys of preprocess's dict that the model reads; everything else is carried to postprocess
    model_input_names = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, model, tokenizer, *, batch_size: Optional[int] = None, **kwargs: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size or 1
        self.call_defaults = kwargs
        self.sanitize_parameters(**kwargs)  # unknown or bad arguments fail here, at construction

    @property
    def device(self) -> torch.device:
        return self.model.device

    # --- overridden by tasks --------------------------------------------------------------------------
    def sanitize_parameters(self, **kwargs: Any) -> Tuple[dict, dict]:
        """Split call arguments into (preprocess kwargs, postprocess kwargs); raise on unknown ones."""
        if kwargs:
            raise TypeError(f"{self.task} pipeline got unexpected arguments: {', '.join(sorted(kwargs))}")
        return {}, {}

    def is_single(self, inputs: Any) -> bool:
        return isinstance(inputs, str)

    def preprocess(self, inputs: Any, **kwargs: Any) -> Dict[str, Any]:
        return self.tokenizer(inputs, **kwargs)

    def forward(self, model_inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def postprocess(self, outputs: Dict[str, Any], **kwargs: Any) -> Any:
        raise NotImplementedError

    # --- the call ----------------------------------------------------------------------------------------
    def __call__(self, inputs: Any, *, batch_size: Optional[int] = None, **kwargs: Any) -> Any:
        pre, post = self.sanitize_parameters(**{**self.call_defaults, **kwargs})
        batch_size = batch_size or self.batch_size
        if self.is_single(inputs):
            return next(self._run([inputs], 1, pre, post))
        if isinstance(inputs, (list, tuple)):
            return list(self._run(inputs, batch_size, pre, post))
        if isinstance(inputs, Iterable):
            return self._run(inputs, batch_size, pre, post)  # lazily, as transformers does for generators
        raise TypeError(f"{self.task} pipeline: inputs must be a string, a list or an iterable, "
                        f"got {type(inputs).__name__}")

    def _run(self, inputs: Iterable, batch_size: int, pre: dict, post: dict) -> Iterator[Any]:
        for chunk in batches(inputs, batch_size):
            items = [self.preprocess(x, **pre) for x in chunk]
            for outputs in self._forward_batch(items):
                yield self.postprocess(outputs, **post)

    def _collate(self, items: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        """Pad the model inputs of several tokenized inputs into one batch (on the tokenizer's side)."""
        lengths = [len(item["input_ids"]) for item in items]
        longest = max(lengths)
        pad = {"input_ids": self.tokenizer.pad_token_id or 0, "attention_mask": 0,
               "token_type_ids": getattr(self.tokenizer, "pad_token_type_id", 0)}
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        batch = {}
        for name in self.model_input_names:
            if name not in items[0]:
                continue
            rows = []
            for item, n in zip(items, lengths):
                fill = [pad[name]] * (longest - n)
                rows.append(fill + list(item[name]) if left else list(item[name]) + fill)
            batch[name] = torch.tensor(rows, dtype=torch.long, device=self.device)
        return batch

    def _forward_batch(self, items: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        batch = self._collate(items)
        with torch.inference_mode():
            outputs = self.forward(batch)
        longest = batch["input_ids"].shape[1]
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        results = []
        for i, item in enumerate(items):
            n = len(item["input_ids"])
            real = slice(longest - n, longest) if left else slice(0, n)
            one = {k: v for k, v in item.items() if k not in self.model_input_names}
            one["input_ids"] = batch["input_ids"][i:i + 1, real].cpu()
            for key, value in outputs.items():
                value = value[i:i + 1]
                one[key] = (value[:, real] if key in self.per_token_outputs else value).cpu()
            results.append(one)
        return results


def batches(inputs: Iterable, size: int) -> Iterator[list]:
    """Lists of `size` consecutive inputs (the last may be shorter), read lazily from any iterable."""
    iterator = iter(inputs)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
