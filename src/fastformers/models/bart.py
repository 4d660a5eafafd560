"""BART: config, encoder-decoder, and the task heads. Weight names are those of Hugging Face checkpoints.

Post-norm layers: x = LayerNorm(x + attention(x)), then (decoder) x = LayerNorm(x + cross_attention(x, encoder)),
then x = LayerNorm(x + fc2(act(fc1(x)))). Token embeddings (times sqrt(d_model) with scale_embedding) plus
learned positions (looked up at position + 2, fairseq's offset), then `layernorm_embedding`.
The encoder, decoder and attention modules are written so that Marian (marian.py) reuses them with
sinusoidal positions and no embedding LayerNorm.

Decoding keeps the decoder self-attention keys/values in the `EncoderDecoderCache` (generation/cache.py)
and projects each layer's cross-attention keys/values from the encoder output once (`set_cross`).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .. import layers, ops
from ..configuration import PretrainedConfig
from ..generation.cache import EncoderDecoderCache, cache_step
from ..generation.utils import GenerationMixin
from ..modeling import PreTrainedModel
from ..outputs import (
    BaseModelOutput,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
    Seq2SeqSequenceClassifierOutput,
    _output,
)
from ._common import (
    check_inputs,
    call_layer,
    check_mask,
    run_encoder,
    sequence_classification_loss,
    span_loss,
)

Seq2SeqQuestionAnsweringModelOutput = _output(
    "Seq2SeqQuestionAnsweringModelOutput", "loss", "start_logits", "end_logits", "past_key_values",
    "decoder_hidden_states", "decoder_attentions", "cross_attentions", "encoder_last_hidden_state",
    "encoder_hidden_states", "encoder_attentions",
)

_SEQ2SEQ_ALIASES = {"num_attention_heads": "encoder_attention_heads", "hidden_size": "d_model",
                    "num_hidden_layers": "encoder_layers"}


class BartConfig(PretrainedConfig):
    model_type = "bart"
    attribute_map = _SEQ2SEQ_ALIASES
    defaults = dict(
        vocab_size=50265, max_position_embeddings=1024, encoder_layers=12, encoder_ffn_dim=4096,
        encoder_attention_heads=16, decoder_layers=12, decoder_ffn_dim=4096, decoder_attention_heads=16,
        encoder_layerdrop=0.0, decoder_layerdrop=0.0, activation_function="gelu", d_model=1024, dropout=0.1,
        attention_dropout=0.0, activation_dropout=0.0, init_std=0.02, classifier_dropout=0.0, scale_embedding=False,
        use_cache=True, pad_token_id=1, bos_token_id=0, eos_token_id=2, is_encoder_decoder=True,
        decoder_start_token_id=2, forced_eos_token_id=2,
    )

    def __init__(self, **kwargs) -> None:
        if kwargs.get("id2label") is None and kwargs.get("num_labels") is None:
            kwargs["num_labels"] = 3  # BART's default (MNLI)
        super().__init__(**kwargs)
        for name in ("encoder", "decoder"):
            heads = getattr(self, f"{name}_attention_heads")
            if self.d_model % heads:
                raise ValueError(f"d_model={self.d_model} is not a multiple of {name}_attention_heads={heads}")


def shift_tokens_right(input_ids: torch.Tensor, pad_token_id: int | None, decoder_start_token_id: int | None):
    """Decoder inputs from labels: prepend decoder_start_token_id, drop the last token, -100 -> pad."""
    if pad_token_id is None:
        raise ValueError("config.pad_token_id has to be defined to build decoder_input_ids from labels / input_ids")
    if decoder_start_token_id is None:
        raise ValueError("config.decoder_start_token_id has to be defined to build decoder_input_ids from "
                         "labels / input_ids")
    shifted = input_ids.new_empty(input_ids.shape)
    shifted[:, 1:] = input_ids[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill_(shifted == -100, pad_token_id)


def _flag(value: bool | None, default: bool) -> bool:
    return default if value is None else value


# -- layers -------------------------------------------------------------------------------------
class BartAttention(nn.Module):
    """Multi-head attention: self-attention (encoder, or causal with a cache in the decoder) or, with
    `is_cross`, attention from the decoder to the encoder output (keys/values projected once per cache)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float, layer_idx: int = 0, is_cross: bool = False):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.layer_idx, self.is_cross, self.dropout_p = layer_idx, is_cross, dropout
        self.k_proj = layers.Linear(embed_dim, embed_dim)
        self.v_proj = layers.Linear(embed_dim, embed_dim)
        self.q_proj = layers.Linear(embed_dim, embed_dim)
        self.out_proj = layers.Linear(embed_dim, embed_dim)
        if is_cross:
            self.kv = layers.FusedLinear(self, "k_proj", "v_proj")
        else:
            self.qkv = layers.FusedLinear(self, "q_proj", "k_proj", "v_proj")
        self.attn = layers.Attention(dropout_p=dropout)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(*t.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x, key_mask, output_attentions: bool, cache=None, cache_position=None, causal=False,
                encoder_states=None):
        batch, seq, _ = x.shape
        if self.is_cross:
            q = self._heads(self.q_proj(x))
            kv = cache.cross(self.layer_idx) if cache is not None else None
            if kv is None:
                kv = tuple(self._heads(t) for t in self.kv(encoder_states))
                if cache is not None:
                    cache.set_cross(self.layer_idx, *kv)
            k, v = kv
        else:
            q, k, v = (self._heads(t) for t in self.qkv(x))
            if cache is not None:
                k, v = cache.update(self.layer_idx, k, v, cache_position)
        out, probs = self.attn(q, k, v, key_mask, return_probs=output_attentions, causal=causal)
        out = out.transpose(1, 2).reshape(batch, seq, -1)
        return self.out_proj(out), probs


class _FeedForward(nn.Module):
    """fc2(dropout(act(fc1(x)))): the feed-forward half of a layer (fc1/fc2 keep checkpoint names)."""

    def _ffn(self, x):
        h = self.act(self.fc1(x))
        if self.training and self.activation_dropout > 0:
            h = nn.functional.dropout(h, self.activation_dropout, training=True)
        return self.fc2(h)


class BartEncoderLayer(_FeedForward):
    def __init__(self, config, layer_idx: int = 0) -> None:
        super().__init__()
        d = config.d_model
        self.self_attn = BartAttention(d, config.encoder_attention_heads, config.attention_dropout, layer_idx)
        self.self_attn_layer_norm = layers.LayerNorm(d)
        self.fc1 = layers.Linear(d, config.encoder_ffn_dim)
        self.fc2 = layers.Linear(config.encoder_ffn_dim, d)
        self.final_layer_norm = layers.LayerNorm(d)
        self.act = layers.Activation(config.activation_function)
        self.dropout, self.activation_dropout = config.dropout, config.activation_dropout

    def forward(self, x, attention_mask, output_attentions: bool):
        h, probs = self.self_attn(x, attention_mask, output_attentions)
        x = self.self_attn_layer_norm(h, x, self.dropout)
        x = self.final_layer_norm(self._ffn(x), x, self.dropout)
        return x, probs


class BartDecoderLayer(_FeedForward):
    def __init__(self, config, layer_idx: int = 0) -> None:
        super().__init__()
        d, heads = config.d_model, config.decoder_attention_heads
        self.self_attn = BartAttention(d, heads, config.attention_dropout, layer_idx)
        self.self_attn_layer_norm = layers.LayerNorm(d)
        self.encoder_attn = BartAttention(d, heads, config.attention_dropout, layer_idx, is_cross=True)
        self.encoder_attn_layer_norm = layers.LayerNorm(d)
        self.fc1 = layers.Linear(d, config.decoder_ffn_dim)
        self.fc2 = layers.Linear(config.decoder_ffn_dim, d)
        self.final_layer_norm = layers.LayerNorm(d)
        self.act = layers.Activation(config.activation_function)
        self.dropout, self.activation_dropout = config.dropout, config.activation_dropout

    def forward(self, x, self_mask, encoder_states, encoder_mask, cache, cache_position, output_attentions: bool):
        h, self_probs = self.self_attn(x, self_mask, output_attentions, cache, cache_position, causal=True)
        x = self.self_attn_layer_norm(h, x, self.dropout)
        h, cross_probs = self.encoder_attn(x, encoder_mask, output_attentions, cache, encoder_states=encoder_states)
        x = self.encoder_attn_layer_norm(h, x, self.dropout)
        x = self.final_layer_norm(self._ffn(x), x, self.dropout)
        return x, self_probs, cross_probs


# -- encoder and decoder ------------------------------------------------------------------------
class BartLearnedPositionalEmbedding(nn.Embedding):
    """Learned positions, looked up at position + 2 (fairseq reserved the first two rows)."""

    offset = 2

    def __init__(self, num_positions: int, embedding_dim: int) -> None:
        super().__init__(num_positions + self.offset, embedding_dim)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return super().forward(positions + self.offset)


class _Stack(nn.Module):
    """What the encoder and the decoder share: token embedding (scaled), positions, embedding LayerNorm."""

    layernorm_embedding_enabled = True

    def __init__(self, config, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(vocab_size, config.d_model, config.pad_token_id)
        self.embed_positions = self.make_positions(config)
        if self.layernorm_embedding_enabled:
            self.layernorm_embedding = layers.LayerNorm(config.d_model)
        self.dropout = config.dropout

    @staticmethod
    def make_positions(config) -> nn.Module:
        return BartLearnedPositionalEmbedding(config.max_position_embeddings, config.d_model)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def embed(self, input_ids: torch.Tensor, positions: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Token + position embeddings; `positions` (seq,) default to 0 .. seq - 1."""
        x = self.embed_tokens(input_ids)
        if self.embed_scale != 1.0:
            x = x * self.embed_scale
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=x.device)
        positions = self.embed_positions(positions)
        if self.layernorm_embedding_enabled:
            x = self.layernorm_embedding(x, positions.to(x.dtype))
        else:
            x = x + positions.to(x.dtype)
        if self.training and self.dropout > 0:
            x = nn.functional.dropout(x, self.dropout, training=True)
        return x


class BartEncoder(_Stack):
    layer_class = BartEncoderLayer

    def __init__(self, config) -> None:
        super().__init__(config, config.vocab_size)
        self.layers = nn.ModuleList(self.layer_class(config, i) for i in range(config.encoder_layers))

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        cfg = self.config
        if inputs_embeds is not None:
            raise NotImplementedError("inputs_embeds is not supported by fastformers' encoder-decoder models; "
                                      "pass input_ids")
        batch, seq = check_inputs(input_ids, None, self.embed_tokens.num_embeddings, cfg.max_position_embeddings)
        attention_mask = check_mask(attention_mask, batch, seq)
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        x = self.embed(input_ids)
        x, hidden_states, attentions = run_encoder(
            self.layers, x, attention_mask, _flag(output_attentions, cfg.output_attentions),
            _flag(output_hidden_states, cfg.output_hidden_states), cfg.attention_dropout)
        out = BaseModelOutput(last_hidden_state=x, hidden_states=hidden_states, attentions=attentions)
        return out if _flag(return_dict, cfg.return_dict) else out.to_tuple()


class BartDecoder(_Stack):
    layer_class = BartDecoderLayer

    def __init__(self, config) -> None:
        super().__init__(config, getattr(config, "decoder_vocab_size", None) or config.vocab_size)
        self.layers = nn.ModuleList(self.layer_class(config, i) for i in range(config.decoder_layers))

    def forward(self, input_ids, attention_mask, encoder_hidden_states, encoder_attention_mask, cache,
                output_attentions: bool, output_hidden_states: bool, cache_position=None):
        """Returns (last hidden state, hidden states, self-attentions, cross-attentions); writes `cache` at
        `cache_position` (default: after what it holds)."""
        batch, seq = check_inputs(input_ids, None, self.embed_tokens.num_embeddings, None)
        step = cache_step(cache, batch, seq, input_ids.device, cache_position, attention_mask,
                          max_positions=self.config.max_position_embeddings, mask_name="decoder_attention_mask")
        self_mask, cache_position = step.key_mask, step.cache_position
        x = self.embed(input_ids, cache_position)
        hidden_states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        cross_attentions = () if output_attentions else None
        for layer in self.layers:
            x, probs, cross = call_layer(layer, x, self_mask, encoder_hidden_states, encoder_attention_mask, cache,
                                               cache_position, output_attentions)
            if output_hidden_states:
                hidden_states += (x,)
            if output_attentions:
                attentions += (probs,)
                cross_attentions += (cross,)
        return x, hidden_states, attentions, cross_attentions


# -- models -------------------------------------------------------------------------------------
class BartPreTrainedModel(PreTrainedModel):
    config_class = BartConfig
    base_model_prefix = "model"
    _keys_to_ignore_on_load_unexpected = (r"encoder\.version$", r"decoder\.version$")

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def _tie_pairs(self):
        # transformers 5: tie_word_embeddings=False unties everything, the encoder/decoder embeddings included
        return dict(self._tied_weights_keys) if getattr(self.config, "tie_word_embeddings", True) else {}

    def _materialize(self, names, dtype, device) -> None:
        """Parameters the checkpoint lacks are initialised; buffers (final_logits_bias) start at zero."""
        super()._materialize(names, dtype, device)
        for name, buf in list(self.named_buffers()):
            if name in names:
                owner, _, attr = name.rpartition(".")
                module = self.get_submodule(owner) if owner else self
                module._buffers[attr] = torch.zeros(buf.shape, dtype=dtype, device=device)


class BartModel(BartPreTrainedModel):
    _tied_weights_keys = {"encoder.embed_tokens.weight": "shared.weight",
                          "decoder.embed_tokens.weight": "shared.weight"}
    encoder_class, decoder_class = BartEncoder, BartDecoder
    shift_inputs_when_no_decoder_inputs = True

    def __init__(self, config) -> None:
        super().__init__(config)
        if self._tied_weights_keys:
            self.shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.encoder = self.encoder_class(config)
        self.decoder = self.decoder_class(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.shared if self._tied_weights_keys else self.encoder.embed_tokens

    def get_encoder(self) -> nn.Module:
        return self.encoder

    def get_decoder(self) -> nn.Module:
        return self.decoder

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None,
                use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                cache_position=None, **kwargs):
        cfg = self.config
        if inputs_embeds is not None or decoder_inputs_embeds is not None:
            raise NotImplementedError("inputs_embeds / decoder_inputs_embeds are not supported by fastformers' "
                                      "encoder-decoder models; pass input_ids / decoder_input_ids")
        output_attentions = _flag(output_attentions, cfg.output_attentions)
        output_hidden_states = _flag(output_hidden_states, cfg.output_hidden_states)
        if decoder_input_ids is None:
            if not self.shift_inputs_when_no_decoder_inputs:
                raise ValueError("decoder_input_ids are required (or labels, from which they are built)")
            if input_ids is None:
                raise ValueError("pass decoder_input_ids, or input_ids from which they are built by shifting right")
            decoder_input_ids = shift_tokens_right(input_ids, cfg.pad_token_id, cfg.decoder_start_token_id)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                           output_attentions=output_attentions,
                                           output_hidden_states=output_hidden_states, return_dict=True)
        elif not hasattr(encoder_outputs, "last_hidden_state"):
            if not isinstance(encoder_outputs, (tuple, list)) or not len(encoder_outputs):
                raise TypeError("encoder_outputs must be a BaseModelOutput or a tuple (last_hidden_state, ...)")
            encoder_outputs = BaseModelOutput(*encoder_outputs[:3])
        encoder_states = encoder_outputs.last_hidden_state
        encoder_mask = attention_mask
        if encoder_mask is not None:
            encoder_mask = check_mask(encoder_mask, *encoder_states.shape[:2])
            # the all-ones shortcut reads the mask on the host: eager only
            compiling = torch.compiler.is_compiling()
            encoder_mask = None if not compiling and bool(encoder_mask.all()) else encoder_mask.bool()

        use_cache = _flag(use_cache, cfg.use_cache and not self.training)
        cache = past_key_values
        if cache is not None and not isinstance(cache, EncoderDecoderCache):
            raise TypeError(f"past_key_values must be an EncoderDecoderCache (fastformers.generation.cache), "
                            f"got {type(cache).__name__}")
        if cache is None and use_cache:
            cache = EncoderDecoderCache()
        x, hidden_states, attentions, cross = self.decoder(
            decoder_input_ids, decoder_attention_mask, encoder_states, encoder_mask, cache,
            output_attentions, output_hidden_states, cache_position)
        out = Seq2SeqModelOutput(
            last_hidden_state=x, past_key_values=cache if use_cache else None, decoder_hidden_states=hidden_states,
            decoder_attentions=attentions, cross_attentions=cross, encoder_last_hidden_state=encoder_states,
            encoder_hidden_states=encoder_outputs.get("hidden_states"),
            encoder_attentions=encoder_outputs.get("attentions"))
        return out if _flag(return_dict, cfg.return_dict) else out.to_tuple()


def _seq2seq_fields(out) -> dict:
    """The encoder/decoder extras of a Seq2SeqModelOutput, for a head's output."""
    return {k: out.get(k) for k in ("past_key_values", "decoder_hidden_states", "decoder_attentions",
                                    "cross_attentions", "encoder_last_hidden_state", "encoder_hidden_states",
                                    "encoder_attentions")}


class BartForConditionalGeneration(BartPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.shared.weight",
                          "model.encoder.embed_tokens.weight": "model.shared.weight",
                          "model.decoder.embed_tokens.weight": "model.shared.weight"}
    base_model_class = BartModel

    def __init__(self, config) -> None:
        super().__init__(config)
        self.model = self.base_model_class(config)
        vocab = self.model.decoder.embed_tokens.num_embeddings
        self.register_buffer("final_logits_bias", torch.zeros((1, vocab)))
        self.lm_head = layers.Linear(config.d_model, vocab, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self:
            self.final_logits_bias.zero_()

    def get_encoder(self) -> nn.Module:
        return self.model.encoder

    def get_decoder(self) -> nn.Module:
        return self.model.decoder

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None,
                labels=None, use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                cache_position=None, **kwargs):
        if labels is not None:
            use_cache = False
            if decoder_input_ids is None:
                decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                         decoder_attention_mask=decoder_attention_mask, encoder_outputs=encoder_outputs,
                         past_key_values=past_key_values, inputs_embeds=inputs_embeds,
                         decoder_inputs_embeds=decoder_inputs_embeds, use_cache=use_cache,
                         output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                         return_dict=True, cache_position=cache_position)
        logits = ops.linear(out.last_hidden_state, self.lm_head.weight, self.final_logits_bias[0])
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                               labels.to(logits.device).reshape(-1))
        result = Seq2SeqLMOutput(loss=loss, logits=logits, **_seq2seq_fields(out))
        return result if _flag(return_dict, self.config.return_dict) else result.to_tuple()


class BartClassificationHead(nn.Module):
    def __init__(self, input_dim: int, inner_dim: int, num_classes: int, pooler_dropout: float) -> None:
        super().__init__()
        self.dense = layers.Linear(input_dim, inner_dim)
        self.out_proj = layers.Linear(inner_dim, num_classes)
        self.dropout_p = pooler_dropout or 0.0

    def forward(self, x):
        drop = self.training and self.dropout_p > 0
        if drop:
            x = nn.functional.dropout(x, self.dropout_p, training=True)
        x = torch.tanh(self.dense(x))
        if drop:
            x = nn.functional.dropout(x, self.dropout_p, training=True)
        return self.out_proj(x)


class _Seq2SeqHead(BartPreTrainedModel):
    """A head over BartModel (stored as `model`, as in checkpoints), run without a cache."""

    _tied_weights_keys = {"model.encoder.embed_tokens.weight": "model.shared.weight",
                          "model.decoder.embed_tokens.weight": "model.shared.weight"}

    def __init__(self, config) -> None:
        super().__init__(config)
        self.model = BartModel(config)

    def get_encoder(self) -> nn.Module:
        return self.model.encoder

    def get_decoder(self) -> nn.Module:
        return self.model.decoder

    def _run(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
             inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                          decoder_attention_mask=decoder_attention_mask, encoder_outputs=encoder_outputs,
                          inputs_embeds=inputs_embeds, decoder_inputs_embeds=decoder_inputs_embeds,
                          use_cache=use_cache, output_attentions=output_attentions,
                          output_hidden_states=output_hidden_states, return_dict=True)


class BartForSequenceClassification(_Seq2SeqHead):
    """Classifies from the decoder state at the last eos token of input_ids (facebook/bart-large-mnli)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.classification_head = BartClassificationHead(config.d_model, config.d_model, config.num_labels,
                                                          config.classifier_dropout)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, inputs_embeds=None, decoder_inputs_embeds=None, labels=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        if input_ids is None:
            raise ValueError("BartForSequenceClassification needs input_ids (it pools at their eos tokens)")
        if labels is not None:
            use_cache = False
        out = self._run(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
                        inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states)
        h = out.last_hidden_state
        eos_mask = input_ids.eq(self.config.eos_token_id).to(h.device)
        counts = eos_mask.sum(1)
        if int(counts.min()) < 1:
            raise ValueError("Each example must contain at least one <eos> token (config.eos_token_id="
                             f"{self.config.eos_token_id}) in input_ids.")
        if int(counts.max()) != int(counts.min()):
            raise ValueError("All examples must have the same number of <eos> tokens.")
        pooled = h[eos_mask, :].view(h.shape[0], -1, h.shape[-1])[:, -1, :]
        logits = self.classification_head(pooled)
        loss = sequence_classification_loss(self.config, logits, labels.to(logits.device)) if labels is not None \
            else None
        result = Seq2SeqSequenceClassifierOutput(loss=loss, logits=logits, **_seq2seq_fields(out))
        return result if _flag(return_dict, self.config.return_dict) else result.to_tuple()


class BartForQuestionAnswering(_Seq2SeqHead):
    def __init__(self, config) -> None:
        config.num_labels = 2
        super().__init__(config)
        self.qa_outputs = layers.Linear(config.d_model, 2)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, start_positions=None, end_positions=None, inputs_embeds=None,
                decoder_inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        if start_positions is not None and end_positions is not None:
            use_cache = False
        out = self._run(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
                        inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states)
        logits = self.qa_outputs(out.last_hidden_state)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = span_loss(start_logits, end_logits, start_positions.to(logits.device),
                             end_positions.to(logits.device))
        result = Seq2SeqQuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                                     **_seq2seq_fields(out))
        return result if _flag(return_dict, self.config.return_dict) else result.to_tuple()


MODEL_CLASSES = {
    "AutoModel": BartModel,
    "AutoModelForSeq2SeqLM": BartForConditionalGeneration,
    "AutoModelForSequenceClassification": BartForSequenceClassification,
    "AutoModelForQuestionAnswering": BartForQuestionAnswering,
}
