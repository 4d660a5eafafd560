"""fill-mask: the most likely tokens at each mask position, with the filled-in sequence."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import torch

from .base import Pipeline

logger = logging.getLogger(__name__)


class FillMaskPipeline(Pipeline):
    task = "fill-mask"
    per_token_outputs = ("logits",)

    def sanitize_parameters(self, top_k: Optional[int] = None, targets: Any = None,
                            tokenizer_kwargs: Optional[dict] = None):
        if self.tokenizer.mask_token_id is None:
            raise ValueError("fill-mask: the tokenizer defines no mask_token")
        post: Dict[str, Any] = {"top_k": 5 if top_k is None else top_k}
        if targets is not None:
            post["target_ids"] = self._target_ids(targets)
        return dict(tokenizer_kwargs or {}), post

    def _target_ids(self, targets: Any) -> List[int]:
        """Vocabulary ids of the targets; a target not in the vocabulary becomes its first token."""
        vocab = self.tokenizer.get_vocab()
        ids = []
        for target in [targets] if isinstance(targets, str) else targets:
            if target in vocab:
                ids.append(vocab[target])
                continue
            pieces = self.tokenizer(target, add_special_tokens=False, return_attention_mask=False,
                                    return_token_type_ids=False, max_length=1, truncation=True)["input_ids"]
            if not pieces:
                logger.warning("fill-mask target %r is not in the vocabulary and has no token: ignored", target)
                continue
            logger.warning("fill-mask target %r is not in the vocabulary: using %r", target,
                           self.tokenizer.convert_ids_to_tokens(pieces[0]))
            ids.append(pieces[0])
        if not ids:
            raise ValueError("fill-mask: targets were given but none of them maps to a token")
        return sorted(set(ids))

    def preprocess(self, inputs: Any, **tokenizer_kwargs: Any) -> Dict[str, Any]:
        if not isinstance(inputs, str):
            raise ValueError(f"fill-mask takes strings, got {type(inputs).__name__}")
        encoded = self.tokenizer(inputs, **tokenizer_kwargs)
        if self.tokenizer.mask_token_id not in encoded["input_ids"]:
            raise ValueError(f"fill-mask: no mask token ({self.tokenizer.mask_token}) in the input {inputs!r}")
        return encoded

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        outputs = super().__call__(inputs, **kwargs)
        # as transformers: a list of one text gives that text's result, not a list of one
        return outputs[0] if isinstance(inputs, list) and len(inputs) == 1 else outputs

    def forward(self, model_inputs):
        return {"logits": self.model(**model_inputs).logits}

    def postprocess(self, outputs, top_k: int = 5, target_ids: Optional[List[int]] = None):
        input_ids = outputs["input_ids"][0]
        masked = torch.nonzero(input_ids == self.tokenizer.mask_token_id).squeeze(-1)
        probs = outputs["logits"][0, masked].float().softmax(dim=-1)
        if target_ids is not None:
            probs = probs[:, target_ids]
            top_k = min(top_k, len(target_ids))
        values, predictions = probs.topk(top_k)
        single_mask = len(masked) == 1
        pad_id = self.tokenizer.pad_token_id
        result = []
        for position, row_values, row_ids in zip(masked.tolist(), values.tolist(), predictions.tolist()):
            row = []
            for score, token in zip(row_values, row_ids):
                if target_ids is not None:
                    token = target_ids[token]
                tokens = input_ids.clone()
                tokens[position] = token
                tokens = tokens[tokens != pad_id] if pad_id is not None else tokens
                row.append({"score": score, "token": token, "token_str": self.tokenizer.decode([token]),
                            "sequence": self.tokenizer.decode(tokens.tolist(), skip_special_tokens=single_mask)})
            result.append(row)
        return result[0] if single_mask else result
