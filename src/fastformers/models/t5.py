"""T5 (original, v1.1, flan-t5, mT5-style configs): config, encoder-decoder, and the heads.
Weight names are those of Hugging Face checkpoints (encoder.block.N.layer.0.SelfAttention.q.weight ...).

Pre-norm blocks with T5's RMS norm (no mean, no bias): x += attention(norm(x)), then (decoder)
x += cross_attention(norm(x), encoder), then x += ffn(norm(x)); a final norm closes each stack. Linears
have no bias. Attention scores are not scaled by 1/sqrt(d_kv): the scale is folded into the weights.
There are no position embeddings: the first block of each stack owns a bucketed relative position
bias (bidirectional in the encoder, causal in the decoder), computed once per forward and added to the
scores of every block's self-attention: it goes to the attention layer as `attn_bias` (with scale=1.0);
cross-attention has no bias.

Decoding keeps the decoder self-attention keys/values in the `EncoderDecoderCache` (generation/cache.py),
projects each layer's cross-attention keys/values from the encoder output once (`set_cross`), and
places new decoder queries at positions offset by the cache length for the relative bias.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import layers
from ..configuration import PretrainedConfig
from ..generation.cache import EncoderDecoderCache, cache_step
from ..generation.utils import GenerationMixin
from ..modeling import PreTrainedModel
from ..outputs import BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput, _output
from ..layers import RMSNorm
from ._common import call_layer, check_inputs, check_mask

BaseModelOutputWithPastAndCrossAttentions = _output(
    "BaseModelOutputWithPastAndCrossAttentions", "last_hidden_state", "past_key_values", "hidden_states",
    "attentions", "cross_attentions",
)


class T5Config(PretrainedConfig):
    """As transformers 5: `feed_forward_proj` is "act" or "gated-act" ("gated-gelu" means gelu_new);
    `tie_word_embeddings` is always True afterwards, and what a config said about it survives as
    `scale_decoder_outputs` (the lm_head input is multiplied by d_model**-0.5 unless the config said
    tie_word_embeddings=False, as T5 v1.1 / flan-t5 configs do). Whether lm_head actually shares the
    embedding is decided by the checkpoint: one that stores a different lm_head.weight keeps it."""

    model_type = "t5"
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "d_model", "num_attention_heads": "num_heads", "num_hidden_layers": "num_layers",
        "head_dim": "d_kv",
    }
    defaults: ClassVar[dict[str, Any]] = {
        "vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_decoder_layers": None,
        "num_heads": 8, "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
        "dropout_rate": 0.1, "layer_norm_epsilon": 1e-6, "initializer_factor": 1.0, "feed_forward_proj": "relu",
        "is_encoder_decoder": True, "use_cache": True, "pad_token_id": 0, "eos_token_id": 1,
        "classifier_dropout": 0.0, "decoder_start_token_id": None,
    }

    def __init__(self, **kwargs) -> None:
        tie = kwargs.get("tie_word_embeddings")
        super().__init__(**kwargs)
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        proj = self.feed_forward_proj
        parts = proj.split("-") if isinstance(proj, str) else []
        if not parts or len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ValueError(f"feed_forward_proj={proj!r} is not 'ACT' or 'gated-ACT' (e.g. 'relu', 'gated-gelu')")
        self.is_gated_act = len(parts) == 2
        self.dense_act_fn = "gelu_new" if proj == "gated-gelu" else parts[-1]
        try:
            layers.Activation(self.dense_act_fn)
        except ValueError as e:
            raise ValueError(f"feed_forward_proj={proj!r}: {e}") from None
        if "scale_decoder_outputs" not in kwargs:
            self.scale_decoder_outputs = tie is not False
        self.tie_word_embeddings = True
        self._given_keys.update({"scale_decoder_outputs", "dense_act_fn", "is_gated_act", "num_decoder_layers"})
        for key in ("d_model", "d_kv", "d_ff", "num_heads", "num_layers", "relative_attention_num_buckets"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}={value!r} must be a positive integer")


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> torch.Tensor:
    """Bucket of each (key position - query position): one bucket per distance below max_exact, then
    log-spaced buckets up to max_distance (farther shares the last). Bidirectional: half the buckets
    for keys after the query. Causal: keys after the query all fall in bucket 0 (they are masked)."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = (relative_position > 0).to(torch.long) * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp_min(0)
    max_exact = num_buckets // 2
    # the same float arithmetic as Mesh TensorFlow / transformers, so bucket edges agree exactly
    log_ratio = torch.log(distance.clamp_min(1).float() / max_exact) / math.log(max_distance / max_exact)
    far = (max_exact + (log_ratio * (num_buckets - max_exact)).to(torch.long)).clamp_max(num_buckets - 1)
    return buckets + torch.where(distance < max_exact, distance, far)


# -- layers -------------------------------------------------------------------------------------
class T5LayerNorm(RMSNorm):
    """T5's LayerNorm is an RMS norm: no mean subtraction, no bias, variance in float32."""


class T5Attention(nn.Module):
    def __init__(self, config, layer_idx: int, has_relative_attention_bias: bool = False,
                 is_cross: bool = False) -> None:
        super().__init__()
        self.layer_idx, self.is_cross = layer_idx, is_cross
        self.n_heads, self.key_value_proj_dim = config.num_heads, config.d_kv
        self.dropout_p = config.dropout_rate
        inner = self.n_heads * self.key_value_proj_dim
        self.q = layers.Linear(config.d_model, inner, bias=False)
        self.k = layers.Linear(config.d_model, inner, bias=False)
        self.v = layers.Linear(config.d_model, inner, bias=False)
        self.o = layers.Linear(inner, config.d_model, bias=False)
        self.q.t5_init_fan_in = config.d_model * config.d_kv  # T5's query init folds in the missing 1/sqrt(d_kv)
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(config.relative_attention_num_buckets, self.n_heads)
        if is_cross:
            self.kv = layers.FusedLinear(self, "k", "v")
        else:
            self.qkv = layers.FusedLinear(self, "q", "k", "v")
        self.attn = layers.Attention(scale=1.0, dropout_p=self.dropout_p)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(*t.shape[:2], self.n_heads, self.key_value_proj_dim).transpose(1, 2)

    def _out(self, out: torch.Tensor) -> torch.Tensor:
        batch, _, seq, _ = out.shape
        return self.o(out.transpose(1, 2).reshape(batch, seq, -1))

    def forward(self, x, bias, cache, cache_position, need_probs: bool):
        """Self-attention; `bias` is the stack's position bias with its mask (see T5Stack._self_bias)."""
        q, k, v = (self._heads(t) for t in self.qkv(x))
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v, cache_position)
        out, probs = self.attn(q, k, v, attn_bias=bias, return_probs=need_probs)
        return self._out(out), probs

    def cross(self, x, encoder_states, encoder_mask, cache, need_probs: bool):
        """Attention to the encoder output (no position bias); keys/values projected once per cache."""
        q = self._heads(self.q(x))
        kv = cache.cross(self.layer_idx) if cache is not None else None
        if kv is None:
            kv = tuple(self._heads(t) for t in self.kv(encoder_states))
            if cache is not None:
                cache.set_cross(self.layer_idx, *kv)
        k, v = kv
        out, probs = self.attn(q, k, v, encoder_mask, return_probs=need_probs)
        return self._out(out), probs


class T5LayerSelfAttention(nn.Module):
    def __init__(self, config, layer_idx: int, has_relative_attention_bias: bool) -> None:
        super().__init__()
        self.SelfAttention = T5Attention(config, layer_idx, has_relative_attention_bias)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)


class T5LayerCrossAttention(nn.Module):
    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        self.EncDecAttention = T5Attention(config, layer_idx, is_cross=True)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)


class T5DenseActDense(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.wi = layers.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = layers.Linear(config.d_ff, config.d_model, bias=False)
        self.act = layers.Activation(config.dense_act_fn)
        self.dropout_p = config.dropout_rate

    def forward(self, x):
        h = self.act(self.wi(x))
        if self.training and self.dropout_p > 0:
            h = F.dropout(h, self.dropout_p, training=True)
        return self.wo(h)


class T5DenseGatedActDense(nn.Module):
    """wo(act(wi_0 x) * wi_1 x): T5 v1.1 / flan-t5 (gelu_new) and gated-silu (SwiGLU, one fused op)."""

    def __init__(self, config) -> None:
        super().__init__()
        self.wi_0 = layers.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = layers.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = layers.Linear(config.d_ff, config.d_model, bias=False)
        self.wi = layers.FusedLinear(self, "wi_0", "wi_1")
        self.silu = config.dense_act_fn in ("silu", "swish")
        self.silu_mul = layers.SiluMul()
        self.act = layers.Activation(config.dense_act_fn)
        self.dropout_p = config.dropout_rate

    def forward(self, x):
        gate, up = self.wi(x)
        h = self.silu_mul(gate, up) if self.silu else self.act(gate) * up
        if self.training and self.dropout_p > 0:
            h = F.dropout(h, self.dropout_p, training=True)
        return self.wo(h)


class T5LayerFF(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.DenseReluDense = T5DenseGatedActDense(config) if config.is_gated_act else T5DenseActDense(config)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)


def _norm(norm: T5LayerNorm, x, delta):
    """(norm(x + delta), x + delta), the add fused into the norm; delta None at a stack's start."""
    return (norm(x), x) if delta is None else norm(delta, x)


class T5Block(nn.Module):
    def __init__(self, config, layer_idx: int, is_decoder: bool) -> None:
        super().__init__()
        self.is_decoder = is_decoder
        self.dropout_p = config.dropout_rate
        first = layer_idx == 0  # the first layer of a stack owns the relative position bias
        self.layer = nn.ModuleList([T5LayerSelfAttention(config, layer_idx, has_relative_attention_bias=first)])
        if is_decoder:
            self.layer.append(T5LayerCrossAttention(config, layer_idx))
        self.layer.append(T5LayerFF(config))

    def _drop(self, h):
        return F.dropout(h, self.dropout_p, training=True) if self.training and self.dropout_p > 0 else h

    def forward(self, x, delta, bias, encoder_states, encoder_mask, cache, cache_position, need_probs: bool):
        """x: the residual stream, delta: what the previous sublayer adds to it (None at the start).
        Returns (x, delta, self-attention probs, cross-attention probs); the block output is x + delta."""
        first = self.layer[0]
        h, x = _norm(first.layer_norm, x, delta)
        delta, probs = first.SelfAttention(h, bias, cache, cache_position, need_probs)
        cross_probs = None
        if self.is_decoder:
            sub = self.layer[1]
            h, x = _norm(sub.layer_norm, x, self._drop(delta))
            delta, cross_probs = sub.EncDecAttention.cross(h, encoder_states, encoder_mask, cache, need_probs)
        ff = self.layer[-1]
        h, x = _norm(ff.layer_norm, x, self._drop(delta))
        return x, self._drop(ff.DenseReluDense(h)), probs, cross_probs


# -- stacks -------------------------------------------------------------------------------------
def _flag(value: bool | None, default: bool) -> bool:
    return default if value is None else value


class T5Stack(nn.Module):
    """The encoder (bidirectional) or the decoder (causal, cross-attending, cached)."""

    def __init__(self, config, is_decoder: bool) -> None:
        super().__init__()
        self.config, self.is_decoder = config, is_decoder
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)  # tied to the model's `shared`
        layers = config.num_decoder_layers if is_decoder else config.num_layers
        self.block = nn.ModuleList(T5Block(config, i, is_decoder) for i in range(layers))
        self.final_layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout_p = config.dropout_rate

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def _self_bias(self, batch_mask, positions: torch.Tensor, k_len: int, dtype, device) -> torch.Tensor:
        """Position bias (1|batch, heads, q_len, k_len) of the first block for the queries at `positions`
        over keys 0 .. k_len - 1, with masked keys at the dtype's minimum: batch_mask ((batch|1, k_len)
        bool, padding) and, in the decoder, keys after the query."""
        cfg = self.config
        query = positions[:, None]
        key = torch.arange(k_len, device=device)[None, :]
        buckets = relative_position_bucket(key - query, not self.is_decoder, cfg.relative_attention_num_buckets,
                                           cfg.relative_attention_max_distance)
        table = self.block[0].layer[0].SelfAttention.relative_attention_bias
        bias = table(buckets).permute(2, 0, 1)[None].to(dtype)
        keep = None
        if batch_mask is not None:
            keep = batch_mask[:, None, None, :]
        if self.is_decoder:
            causal = (key <= query)[None, None]
            keep = causal if keep is None else keep & causal
        return bias if keep is None else bias.masked_fill(~keep, torch.finfo(dtype).min)

    def forward(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                inputs_embeds=None, past_key_values=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, cache_position=None, **kwargs):
        cfg = self.config
        if kwargs:
            raise TypeError(f"T5Stack.forward got unexpected arguments: {', '.join(sorted(kwargs))}")
        cache = past_key_values if self.is_decoder else None
        if cache is not None and not isinstance(cache, EncoderDecoderCache):
            raise TypeError(f"past_key_values must be an EncoderDecoderCache (fastformers.generation.cache), "
                            f"got {type(cache).__name__}")
        if self.is_decoder and cache is None and _flag(use_cache, cfg.use_cache and not self.training):
            cache = EncoderDecoderCache()
        batch, seq = check_inputs(input_ids, inputs_embeds, self.embed_tokens.num_embeddings, None)
        need_probs = _flag(output_attentions, cfg.output_attentions)
        output_hidden_states = _flag(output_hidden_states, cfg.output_hidden_states)
        name = "decoder_attention_mask" if self.is_decoder else "attention_mask"
        device = (input_ids if input_ids is not None else inputs_embeds).device
        step = cache_step(cache, batch, seq, device, cache_position, attention_mask, mask_name=name)
        key_mask, cache_position = step.key_mask, step.cache_position
        encoder_mask = None
        if self.is_decoder:
            if encoder_hidden_states is None and (cache is None or cache.cross(0) is None):
                raise ValueError("the T5 decoder needs encoder_hidden_states")
            if encoder_attention_mask is not None:
                src = (encoder_hidden_states.shape[1] if encoder_hidden_states is not None
                       else cache.cross(0)[0].shape[2])
                encoder_attention_mask = check_mask(encoder_attention_mask, batch, src)
                if torch.compiler.is_compiling() or not bool(encoder_attention_mask.all()):  # a host read: eager only
                    encoder_mask = encoder_attention_mask.to(torch.bool)

        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if self.training and self.dropout_p > 0:
            x = F.dropout(x, self.dropout_p, training=True)
        bias = self._self_bias(key_mask, cache_position, step.kv_len, x.dtype, x.device)

        hidden_states = (x,) if output_hidden_states else None
        attentions = () if need_probs else None
        cross_attentions = () if need_probs and self.is_decoder else None
        delta = None
        for i, block in enumerate(self.block):
            x, delta, probs, cross = call_layer(block, x, delta, bias, encoder_hidden_states, encoder_mask, cache,
                                                cache_position, need_probs)
            if output_hidden_states and i < len(self.block) - 1:
                hidden_states += (x + delta,)
            if need_probs:
                attentions += (probs,)
                if self.is_decoder:
                    cross_attentions += (cross,)
        x = _norm(self.final_layer_norm, x, delta)[0]
        if self.training and self.dropout_p > 0:
            x = F.dropout(x, self.dropout_p, training=True)
        if output_hidden_states:
            hidden_states += (x,)  # as transformers: the last entry is the normed output
        if self.is_decoder:
            out = BaseModelOutputWithPastAndCrossAttentions(
                last_hidden_state=x, past_key_values=cache, hidden_states=hidden_states, attentions=attentions,
                cross_attentions=cross_attentions)
        else:
            out = BaseModelOutput(last_hidden_state=x, hidden_states=hidden_states, attentions=attentions)
        return out if _flag(return_dict, cfg.return_dict) else out.to_tuple()


# -- models -------------------------------------------------------------------------------------
class T5PreTrainedModel(PreTrainedModel):
    config_class = T5Config
    base_model_prefix = "transformer"
    _k_major_linears_on_cpu = True
    # older checkpoints store a cross-attention bias table that T5 never uses
    _keys_to_ignore_on_load_unexpected = (r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.",)

    def _init_weights(self, module: nn.Module) -> None:
        """T5's initialisation: N(0, factor / sqrt(fan_in)) for linears, N(0, factor) for the embedding."""
        factor = self.config.initializer_factor
        if isinstance(module, T5LayerNorm):
            nn.init.constant_(module.weight, factor)
        elif isinstance(module, nn.Linear):
            shared = getattr(self, "shared", None)
            if shared is not None and module.weight is shared.weight:
                return  # a tied lm_head: the embedding's initialisation stands
            fan_in = getattr(module, "t5_init_fan_in", module.in_features)
            nn.init.normal_(module.weight, std=factor * fan_in ** -0.5)
        elif isinstance(module, nn.Embedding):
            std = factor * (self.config.d_model ** -0.5 if module.embedding_dim == self.config.num_heads else 1.0)
            nn.init.normal_(module.weight, std=std)

    def get_input_embeddings(self) -> nn.Module:
        return self.shared

    def _tie_pairs(self):
        pairs = dict(self._tied_weights_keys)
        if getattr(self, "_own_lm_head", False):
            pairs.pop("lm_head.weight", None)
        return pairs

    def _load_checkpoint(self, shards, source, dtype, device, *args, **kwargs) -> None:
        """As transformers 5: lm_head shares the embedding unless the checkpoint stores a different lm_head
        (T5 v1.1 / flan-t5 checkpoints do)."""
        if "lm_head.weight" not in self._tied_weights_keys:
            return super()._load_checkpoint(shards, source, dtype, device, *args, **kwargs)

        def spot(tensors):  # a shard is a dict or a stream of (name, tensor)
            for key, tensor in (tensors.items() if isinstance(tensors, dict) else tensors):
                if key == "lm_head.weight":
                    self._own_lm_head = True
                yield key, tensor

        self._own_lm_head = False
        super()._load_checkpoint(((path, spot(t)) for path, t in shards), source, dtype, device, *args, **kwargs)
        head, shared = self.lm_head.weight, self.shared.weight
        if (self._own_lm_head and isinstance(head, torch.Tensor) and head.shape == shared.shape
                and head.dtype == shared.dtype and torch.equal(head, shared)):
            self._own_lm_head = False
            self.tie_weights()
        return None

    def _shift_right(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Decoder inputs from labels: decoder_start_token_id, then the labels but the last; -100 -> pad."""
        start, pad = self.config.decoder_start_token_id, self.config.pad_token_id
        if start is None:
            raise ValueError("config.decoder_start_token_id has to be defined to build decoder_input_ids from "
                             "labels (T5 checkpoints use the pad id, 0)")
        if pad is None:
            raise ValueError("config.pad_token_id has to be defined to build decoder_input_ids from labels")
        shifted = input_ids.new_empty(input_ids.shape)
        shifted[..., 1:] = input_ids[..., :-1]
        shifted[..., 0] = start
        return shifted.masked_fill_(shifted == -100, pad)


class T5Model(T5PreTrainedModel):
    _tied_weights_keys: ClassVar[dict[str, str]] = {"encoder.embed_tokens.weight": "shared.weight",
                                                    "decoder.embed_tokens.weight": "shared.weight"}

    def __init__(self, config) -> None:
        super().__init__(config)
        self._build(config)
        self.post_init()

    def _build(self, config) -> None:
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, is_decoder=False)
        self.decoder = T5Stack(config, is_decoder=True)

    def get_encoder(self) -> nn.Module:
        return self.encoder

    def get_decoder(self) -> nn.Module:
        return self.decoder

    def _encode_decode(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
                       past_key_values, inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions,
                       output_hidden_states, cache_position=None):
        """(decoder output, encoder output) for the seq2seq heads."""
        cfg = self.config
        output_attentions = _flag(output_attentions, cfg.output_attentions)
        output_hidden_states = _flag(output_hidden_states, cfg.output_hidden_states)
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            raise ValueError("pass decoder_input_ids (or decoder_inputs_embeds); T5ForConditionalGeneration also "
                             "builds them from labels")
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                           inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                                           output_hidden_states=output_hidden_states, return_dict=True)
        elif not hasattr(encoder_outputs, "last_hidden_state"):
            if not isinstance(encoder_outputs, (tuple, list)) or not len(encoder_outputs):
                raise TypeError("encoder_outputs must be a BaseModelOutput or a tuple (last_hidden_state, ...)")
            encoder_outputs = BaseModelOutput(*encoder_outputs[:3])
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids, attention_mask=decoder_attention_mask, inputs_embeds=decoder_inputs_embeds,
            encoder_hidden_states=encoder_outputs.last_hidden_state, encoder_attention_mask=attention_mask,
            past_key_values=past_key_values, use_cache=_flag(use_cache, cfg.use_cache and not self.training),
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
            cache_position=cache_position)
        return decoder_outputs, encoder_outputs

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None,
                use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                cache_position=None, **kwargs):
        dec, enc = self._encode_decode(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                                       encoder_outputs, past_key_values, inputs_embeds, decoder_inputs_embeds,
                                       use_cache, output_attentions, output_hidden_states, cache_position)
        out = Seq2SeqModelOutput(last_hidden_state=dec.last_hidden_state, **_seq2seq_fields(dec, enc))
        return out if _flag(return_dict, self.config.return_dict) else out.to_tuple()


def _seq2seq_fields(dec, enc) -> dict:
    return {"past_key_values": dec.get("past_key_values"), "decoder_hidden_states": dec.get("hidden_states"),
            "decoder_attentions": dec.get("attentions"), "cross_attentions": dec.get("cross_attentions"),
            "encoder_last_hidden_state": enc.last_hidden_state, "encoder_hidden_states": enc.get("hidden_states"),
            "encoder_attentions": enc.get("attentions")}


class T5ForConditionalGeneration(T5Model, GenerationMixin):
    _tied_weights_keys: ClassVar[dict[str, str]] = {"encoder.embed_tokens.weight": "shared.weight",
                                                    "decoder.embed_tokens.weight": "shared.weight",
                                                    "lm_head.weight": "shared.weight"}

    def __init__(self, config) -> None:
        T5PreTrainedModel.__init__(self, config)
        self._build(config)
        self.lm_head = layers.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return self._shift_right(labels)

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None,
                labels=None, use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                cache_position=None, **kwargs):
        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self._shift_right(labels)
        dec, enc = self._encode_decode(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                                       encoder_outputs, past_key_values, inputs_embeds, decoder_inputs_embeds,
                                       use_cache, output_attentions, output_hidden_states, cache_position)
        h = dec.last_hidden_state
        if self.config.scale_decoder_outputs:
            h = h * self.config.d_model ** -0.5
        logits = self.lm_head(h)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                   labels.to(logits.device).reshape(-1), ignore_index=-100)
        out = Seq2SeqLMOutput(loss=loss, logits=logits, **_seq2seq_fields(dec, enc))
        return out if _flag(return_dict, self.config.return_dict) else out.to_tuple()


class T5EncoderModel(T5PreTrainedModel):
    _tied_weights_keys: ClassVar[dict[str, str]] = {"encoder.embed_tokens.weight": "shared.weight"}
    _keys_to_ignore_on_load_unexpected = (r"^decoder\.", r"^lm_head\.")

    def __init__(self, config) -> None:
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, is_decoder=False)
        self.post_init()

    def get_encoder(self) -> nn.Module:
        return self.encoder

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                            return_dict=return_dict)


MODEL_CLASSES = {
    "AutoModel": T5Model,
    "AutoModelForSeq2SeqLM": T5ForConditionalGeneration,
    "AutoModelForTextEncoding": T5EncoderModel,
}
