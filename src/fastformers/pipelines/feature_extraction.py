"""feature-extraction (the model's last hidden states per token) and sentence-embedding (mean pooling over
the attention mask, then L2 normalisation: the sentence-transformers recipe for all-MiniLM-L6-v2)."""

from __future__ import annotations

from typing import Any, Optional

import torch

from .base import Pipeline


class FeatureExtractionPipeline(Pipeline):
    """One (1, seq, hidden) nested list per input (a tensor with return_tensors=True). With batch_size > 1
    the padding positions are cut off, so an input's features do not depend on its batch."""

    task = "feature-extraction"
    per_token_outputs = ("features",)

    def sanitize_parameters(self, truncation: Optional[bool] = None, tokenize_kwargs: Optional[dict] = None,
                            return_tensors: bool = False):
        tokenize_kwargs = dict(tokenize_kwargs or {})
        if truncation is not None:
            if "truncation" in tokenize_kwargs:
                raise ValueError("truncation is given twice: as an argument and in tokenize_kwargs")
            tokenize_kwargs["truncation"] = truncation
        return tokenize_kwargs, {"return_tensors": return_tensors}

    def forward(self, model_inputs):
        outputs = self.model(**model_inputs)
        return {"features": outputs[0]}  # last_hidden_state, or the logits of a model with a head

    def postprocess(self, outputs, return_tensors: bool = False):
        return outputs["features"] if return_tensors else outputs["features"].tolist()


class SentenceEmbeddingPipeline(Pipeline):
    """One list of floats (hidden size) per input, a unit vector; a (hidden,) tensor with return_tensors."""

    task = "sentence-embedding"

    def sanitize_parameters(self, truncation: bool = True, return_tensors: bool = False,
                            tokenize_kwargs: Optional[dict] = None):
        return {"truncation": truncation, **(tokenize_kwargs or {})}, {"return_tensors": return_tensors}

    def forward(self, model_inputs):
        hidden = self.model(**model_inputs)[0]
        mask = model_inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return {"embedding": torch.nn.functional.normalize(mean, p=2, dim=-1)}

    def postprocess(self, outputs, return_tensors: bool = False) -> Any:
        embedding = outputs["embedding"][0]
        return embedding if return_tensors else embedding.tolist()
