"""Marian (Helsinki-NLP opus-mt): BART's post-norm encoder-decoder with fixed sinusoidal positions and no
embedding LayerNorm. The layers, attention and heads are bart.py's; this file holds what differs.

Sinusoidal positions are computed, not loaded (transformers does not save them; older checkpoints that
do are read without a warning). `share_encoder_decoder_embeddings=False` gives the decoder its own
vocabulary (`decoder_vocab_size`) and ties the LM head to the decoder embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from ..configuration import PretrainedConfig
from .bart import (
    _SEQ2SEQ_ALIASES,
    BartDecoder,
    BartEncoder,
    BartForConditionalGeneration,
    BartModel,
    BartPreTrainedModel,
)


class MarianConfig(PretrainedConfig):
    model_type = "marian"
    attribute_map = _SEQ2SEQ_ALIASES
    defaults = dict(
        vocab_size=58101, decoder_vocab_size=None, max_position_embeddings=1024, encoder_layers=12,
        encoder_ffn_dim=4096, encoder_attention_heads=16, decoder_layers=12, decoder_ffn_dim=4096,
        decoder_attention_heads=16, encoder_layerdrop=0.0, decoder_layerdrop=0.0, use_cache=True,
        is_encoder_decoder=True, activation_function="gelu", d_model=1024, dropout=0.1, attention_dropout=0.0,
        activation_dropout=0.0, init_std=0.02, decoder_start_token_id=58100, scale_embedding=False,
        pad_token_id=58100, eos_token_id=0, bos_token_id=None, forced_eos_token_id=0,
        share_encoder_decoder_embeddings=True,
    )

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.decoder_vocab_size = self.decoder_vocab_size or self.vocab_size
        for name in ("encoder", "decoder"):
            heads = getattr(self, f"{name}_attention_heads")
            if self.d_model % heads:
                raise ValueError(f"d_model={self.d_model} is not a multiple of {name}_attention_heads={heads}")


class MarianSinusoidalPositionalEmbedding(nn.Module):
    """Fixed positions: sin of pos / 10000^(2i/d) in the first half of the features, cos in the second,
    computed in float64 and rounded to float32 as transformers does; built on first use per device/dtype."""

    def __init__(self, num_positions: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_positions, self.embedding_dim = num_positions, embedding_dim
        self._table = None

    def table(self, device, dtype) -> torch.Tensor:
        t = self._table
        if t is None or t.device != device or t.dtype != dtype:
            n, dim = self.num_positions, self.embedding_dim
            j = torch.arange(dim, dtype=torch.float64)
            angles = torch.arange(n, dtype=torch.float64)[:, None] / torch.pow(10000.0, 2 * (j // 2) / dim)[None]
            half = (dim + 1) // 2
            t = torch.empty(n, dim, dtype=torch.float32)
            t[:, :half] = torch.sin(angles[:, 0::2]).float()
            t[:, half:] = torch.cos(angles[:, 1::2]).float()
            t = self._table = t.to(device=device, dtype=dtype)
        return t

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table(positions.device, torch.float32)[positions]


def _sinusoidal(config) -> nn.Module:
    return MarianSinusoidalPositionalEmbedding(config.max_position_embeddings, config.d_model)


class MarianEncoder(BartEncoder):
    layernorm_embedding_enabled = False
    make_positions = staticmethod(_sinusoidal)


class MarianDecoder(BartDecoder):
    layernorm_embedding_enabled = False
    make_positions = staticmethod(_sinusoidal)


class MarianPreTrainedModel(BartPreTrainedModel):
    config_class = MarianConfig
    _keys_to_ignore_on_load_unexpected = BartPreTrainedModel._keys_to_ignore_on_load_unexpected + (
        r"embed_positions\.weight$",)


def _shared(config) -> bool:
    return bool(getattr(config, "share_encoder_decoder_embeddings", True))


class MarianModel(MarianPreTrainedModel, BartModel):
    encoder_class, decoder_class = MarianEncoder, MarianDecoder
    shift_inputs_when_no_decoder_inputs = False  # as transformers: Marian needs decoder_input_ids

    @property
    def _tied_weights_keys(self) -> dict[str, str]:
        if not _shared(self.config):
            return {}
        return {"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight"}


class MarianMTModel(MarianPreTrainedModel, BartForConditionalGeneration):
    base_model_class = MarianModel

    @property
    def _tied_weights_keys(self) -> dict[str, str]:
        if not _shared(self.config):
            return {"lm_head.weight": "model.decoder.embed_tokens.weight"}
        return {"lm_head.weight": "model.shared.weight", "model.encoder.embed_tokens.weight": "model.shared.weight",
                "model.decoder.embed_tokens.weight": "model.shared.weight"}


MODEL_CLASSES = {"AutoModel": MarianModel, "AutoModelForSeq2SeqLM": MarianMTModel}
