"""The Llama family: Llama (incl. Llama 3 rope scaling), Mistral, Qwen2, Qwen3.

Pre-norm decoder layers: RMSNorm (fused with the residual add) -> grouped-query attention with rotary
embeddings -> RMSNorm -> SwiGLU. Qwen2 adds biases to q/k/v; Qwen3 normalises q and k per head.
Weight names are those of Hugging Face checkpoints (model.layers.N.self_attn.q_proj.weight ...).
At inference q/k/v and gate/up run as one GEMM each (layers.FusedLinear), the decode step reads a static
KV cache with fixed shapes (generation/cache.py). On a CPU with fastformers._C, a one-token step over a static cache
runs every layer in one call (ops.decode_layers) when the layers are this file's own, unhooked, and in formats its
kernels take; otherwise (and on other backends) the layers run one by one.
"""

from __future__ import annotations

import math
import weakref
from typing import Optional

import torch
from torch import nn

from .. import layers, ops
from ..configuration import PretrainedConfig
from ..generation.cache import DynamicCache, StaticCache, cache_step
from ..layers.linear import assignments, hooked, plain
from ..ops.decode import DecodeWeights, decode_layers_cpu, decode_step_cpu, linear_slots, native_plan
from ..ops.linear import cpu_quantized_weight
from ..generation.utils import GenerationMixin
from ..modeling import PreTrainedModel
from ..outputs import _output
from ..layers import RMSNorm
from ._common import ModulePlan, call_layer, check_inputs, current_plan

BaseModelOutputWithPast = _output("BaseModelOutputWithPast", "last_hidden_state", "past_key_values",
                                  "hidden_states", "attentions")
CausalLMOutputWithPast = _output("CausalLMOutputWithPast", "loss", "logits", "past_key_values",
                                 "hidden_states", "attentions")

_LLAMA_DEFAULTS = dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=None, head_dim=None, hidden_act="silu", max_position_embeddings=2048,
    initializer_range=0.02, rms_norm_eps=1e-6, use_cache=True, bos_token_id=1, eos_token_id=2,
    tie_word_embeddings=False, rope_parameters=None, attention_bias=False, attention_dropout=0.0, mlp_bias=False,
)


class LlamaConfig(PretrainedConfig):
    model_type = "llama"
    defaults = _LLAMA_DEFAULTS

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}")
        if self.hidden_act != "silu":
            raise ValueError(f"hidden_act={self.hidden_act!r}: the Llama family here supports 'silu' (SwiGLU)")

    @property
    def attention_head_dim(self) -> int:
        return getattr(self, "head_dim", None) or self.hidden_size // self.num_attention_heads


class MistralConfig(LlamaConfig):
    model_type = "mistral"
    defaults = dict(_LLAMA_DEFAULTS, intermediate_size=14336, num_key_value_heads=8,
                    max_position_embeddings=4096 * 32, sliding_window=4096)
    defaults.pop("attention_bias")
    defaults.pop("mlp_bias")


class Qwen2Config(LlamaConfig):
    model_type = "qwen2"
    defaults = dict(_LLAMA_DEFAULTS, vocab_size=151936, intermediate_size=22016, num_key_value_heads=32,
                    max_position_embeddings=32768, bos_token_id=None, eos_token_id=None, use_sliding_window=False,
                    sliding_window=4096, max_window_layers=28)
    for _key in ("attention_bias", "mlp_bias", "head_dim"):
        defaults.pop(_key)


class Qwen3Config(LlamaConfig):
    model_type = "qwen3"
    defaults = dict(_LLAMA_DEFAULTS, vocab_size=151936, intermediate_size=22016, num_key_value_heads=32,
                    head_dim=128, max_position_embeddings=32768, bos_token_id=None, eos_token_id=None,
                    use_sliding_window=False, sliding_window=4096, max_window_layers=28)
    defaults.pop("mlp_bias")


# -- rotary embeddings --------------------------------------------------------------------------
def rope_parameters(config) -> dict:
    """One dict of rope settings from either spelling: transformers 5's `rope_parameters`, or the
    older top-level `rope_theta` plus `rope_scaling`."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    params["rope_type"] = params.get("rope_type", params.get("type", "default"))
    return params


def rope_inv_freq(config, device=None) -> torch.Tensor:
    params = rope_parameters(config)
    dim = int(config.attention_head_dim * params.get("partial_rotary_factor", 1.0))
    base = params["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim))
    kind = params["rope_type"]
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / params["factor"]
    if kind == "llama3":
        factor, low, high = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
        old_len = params.get("original_max_position_embeddings", config.max_position_embeddings)
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / high) * ~(wavelen > old_len / low)
        return torch.where(medium, smoothed, scaled)
    raise ValueError(f"rope_type={kind!r} is not supported; supported: default, linear, llama3")


class RotaryEmbedding(nn.Module):
    """cos/sin tables for position ids, computed as transformers does (float32, then cast)."""

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self._inv_freq: Optional[torch.Tensor] = None

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype):
        inv = self._inv_freq
        if inv is None or inv.device != position_ids.device:
            inv = self._inv_freq = rope_inv_freq(self.config, position_ids.device)
        freqs = (inv[None, :, None] @ position_ids[:, None, :].float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


# -- layers -------------------------------------------------------------------------------------
class LlamaAttention(nn.Module):
    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.attention_head_dim
        qkv_bias = getattr(config, "attention_bias", config.model_type == "qwen2")
        self.q_proj = layers.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = layers.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = layers.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        o_bias = getattr(config, "attention_bias", False) and config.model_type != "qwen2"
        self.o_proj = layers.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=o_bias)
        if config.model_type == "qwen3":
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.qkv = layers.FusedLinear(self, "q_proj", "k_proj", "v_proj")
        self.rotary = layers.Rotary()
        self.attn = layers.Attention(causal=True, scale=self.head_dim ** -0.5,
                                     dropout_p=getattr(config, "attention_dropout", 0.0) or 0.0)

    def forward(self, x, cos, sin, cache, cache_position, key_mask, output_attentions: bool):
        batch, seq, _ = x.shape
        q, k, v = self.qkv(x)
        q = q.view(batch, seq, self.num_heads, self.head_dim)
        k = k.view(batch, seq, self.num_kv_heads, self.head_dim)
        v = v.view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rotary(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v, cache_position)
        out, probs = self.attn(q, k, v, key_mask, return_probs=output_attentions)
        out = out.transpose(1, 2).reshape(batch, seq, -1)
        return self.o_proj(out), probs


class LlamaMLP(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        bias = getattr(config, "mlp_bias", False)
        self.gate_proj = layers.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = layers.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = layers.Linear(config.intermediate_size, config.hidden_size, bias=bias)
        self.gate_up = layers.FusedLinear(self, "gate_proj", "up_proj")
        self.act_fn = layers.SiluMul()

    def forward(self, x):
        gate, up = self.gate_up(x)
        return self.down_proj(self.act_fn(gate, up))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, residual, cos, sin, cache, cache_position, key_mask, output_attentions: bool):
        """x: this layer's input before its norm; residual: the stream to add it to (None at layer 0).
        Returns (mlp output, residual stream) so the next norm fuses the add."""
        h, residual = (self.input_layernorm(x), x) if residual is None else self.input_layernorm(x, residual)
        h, probs = self.self_attn(h, cos, sin, cache, cache_position, key_mask, output_attentions)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h), residual, probs


class LlamaPreTrainedModel(PreTrainedModel):
    config_class = LlamaConfig
    base_model_prefix = "model"
    _k_major_linears_on_cpu = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)


class LlamaModel(LlamaPreTrainedModel):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def _check_window(self, total: int) -> None:
        cfg = self.config
        window = getattr(cfg, "sliding_window", None)
        uses_window = cfg.model_type == "mistral" or getattr(cfg, "use_sliding_window", False)
        if uses_window and window is not None and total > window:
            raise ValueError(f"sequence length {total} exceeds sliding_window={window}: sliding-window attention "
                             f"is not supported by fastformers yet")

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, cache_position=None, **kwargs):
        cfg = self.config
        cache = past_key_values
        batch, seq = check_inputs(input_ids, inputs_embeds, cfg.vocab_size, None)
        use_cache = (cfg.use_cache and not self.training) if use_cache is None else use_cache
        if cache is None and use_cache:
            cache = DynamicCache()
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states

        one_token = seq == 1 and isinstance(cache, StaticCache) and not (output_attentions or output_hidden_states)
        native = self._native_step(input_ids, cache) if one_token and inputs_embeds is None else None
        device = (input_ids if inputs_embeds is None else inputs_embeds).device
        step = cache_step(cache, batch, seq, device, cache_position, attention_mask, raw_mask=native is not None)
        if step.end is not None:
            self._check_window(step.end)
        cache_position, key_mask = step.cache_position, step.key_mask
        if position_ids is None:
            position_ids = cache_position[None]

        hidden_states = () if output_hidden_states else None
        attentions = () if output_attentions else None
        if native is not None:  # embedding, rotary tables, mask and every layer in one C++ call
            x = decode_step_cpu(native, input_ids, position_ids, cache.keys, cache.values, cache_position,
                                attention_mask, cache.written)
        else:
            x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
            cos, sin = self.rotary_emb(position_ids, x.dtype)
            one_call = self._one_call_step(x, cos, sin, cache, step) if one_token else None
            if one_call is not None:
                x = one_call
            else:
                residual = None
                for layer in self.layers:
                    if output_hidden_states:
                        hidden_states += (x if residual is None else x + residual,)
                    x, residual, probs = call_layer(layer, x, residual, cos, sin, cache, cache_position, key_mask,
                                                    output_attentions)
                    if output_attentions:
                        attentions += (probs,)
                x = self.norm(x) if residual is None else self.norm(x, residual)[0]
        if output_hidden_states:
            hidden_states += (x,)
        out = BaseModelOutputWithPast(last_hidden_state=x, past_key_values=cache if use_cache else None,
                                      hidden_states=hidden_states, attentions=attentions)
        return out if (cfg.return_dict if return_dict is None else return_dict) else out.to_tuple()


    def _native_step(self, input_ids: torch.Tensor, cache: StaticCache):
        """The model's DecodePlan (ops.decode.native_plan) when a one-token step from these ids can run on it, else
        None: inference on the CPU, int64 ids, the layers in formats the step takes, its cpu kernel chosen (not
        under torch.compile, no autograd, no forced backend), a plain nn.Embedding and this file's RotaryEmbedding."""
        if (self.training or input_ids.device.type != "cpu" or input_ids.dtype != torch.long
                or torch.compiler.is_compiling()):
            return None
        plan = _decode_plan(self)
        if plan.native is None:
            return None
        if torch.is_grad_enabled() and self.embed_tokens.weight.requires_grad:
            return None
        cfg = self.config
        args = (plan.probe, plan.weights.weights, plan.weights.formats, cache.keys, cache.values, None, None, None,
                None, cfg.num_attention_heads, cfg.num_key_value_heads, plan.eps, plan.scale)
        return plan.native if ops.decode_layers.choose("cpu", args) == "cpu" else None

    def _one_call_step(self, x, cos, sin, cache: StaticCache, step):
        """A one-token step over a static cache through ops.decode_layers when its cpu kernel takes it (every layer
        in one C++ call), else None: the layers run one by one."""
        if self.training or x.device.type != "cpu":  # (a GPU runs the layers on its kernels)
            return None
        plan = _decode_plan(self)
        if plan.weights is None:
            return None
        cfg = self.config
        args = (x, plan.weights.weights, plan.weights.formats, cache.keys, cache.values, step.cache_position,
                step.key_mask, cos, sin, cfg.num_attention_heads, cfg.num_key_value_heads, plan.eps, plan.scale)
        if ops.decode_layers.choose(x.device.type, args) != "cpu":
            return None
        out = decode_layers_cpu(*args)
        cache.mark_written(step.cache_position)
        return out


# -- the one-call decode step: what ops.decode_layers reads from a LlamaModel's modules ---------------------------
class _DecodePlan(ModulePlan):
    """DecodeWeights of a model's layers (None: they cannot run in one call, `reason` says why), valid while
    current() holds (ModulePlan)."""

    def __init__(self, model: "LlamaModel") -> None:
        super().__init__()
        self.weights: Optional[DecodeWeights] = None
        self.eps = self.scale = None
        self.native = self.probe = None  # ops.decode.native_plan, and an x that stands for its embeddings in choose()
        self.reason = self._build(model)
        if self.weights is not None:
            self._build_native(model)

    def _build_native(self, model) -> None:
        """The DecodePlan that runs steps from token ids: when the embedding is a plain float32 nn.Embedding and the
        rotary tables this file's RotaryEmbedding."""
        embed, rotary = model.embed_tokens, model.rotary_emb
        self.watch(model, "embed_tokens", "rotary_emb")
        if (type(embed) is not nn.Embedding or type(rotary) is not RotaryEmbedding or hooked((embed, rotary))
                or embed.max_norm is not None or embed.weight.dtype != torch.float32
                or embed.weight.device.type != "cpu"):
            return
        self.watch(embed, "weight", kind="_parameters")
        if rotary._inv_freq is None or rotary._inv_freq.device.type != "cpu":
            rotary._inv_freq = rope_inv_freq(model.config, "cpu")
        self.check(rotary.__dict__, "_inv_freq", rotary._inv_freq)
        cfg = model.config
        self.native = native_plan(self.weights, cfg.num_attention_heads, cfg.num_key_value_heads, self.eps,
                                  self.scale, embed.weight, rotary._inv_freq)
        self.probe = embed.weight.new_empty(1, 1, embed.weight.shape[1])

    def _build(self, model) -> Optional[str]:
        self.watch(model, "layers", "norm")
        self.watch(model.layers, *model.layers._modules)
        self.watch(model.norm, "weight", kind="_parameters")
        weights, eps, scales = DecodeWeights(), {model.norm.variance_epsilon}, set()
        for layer in model.layers:
            attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
            norms = [layer.input_layernorm, layer.post_attention_layernorm,
                     getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)]
            if (type(layer) is not LlamaDecoderLayer or type(attn) is not LlamaAttention or type(mlp) is not LlamaMLP
                    or any(n is not None and type(n) is not RMSNorm for n in norms)):
                return "a layer is not the Llama family's own"
            if hooked(tuple(layer.modules())):
                self.lasting = False  # removing a hook leaves no trace to watch: look again at the next step
                return "a module of a layer has forward hooks"
            self.watch(layer, *layer._modules)
            self.watch(attn, *attn._modules)
            self.watch(mlp, *mlp._modules)
            for norm in norms:
                if norm is not None:
                    self.watch(norm, "weight", kind="_parameters")
                    eps.add(norm.variance_epsilon)
            linears = []
            for group, single in ((attn.qkv, None), (None, attn.o_proj), (mlp.gate_up, None), (None, mlp.down_proj)):
                if group is not None:
                    self.check(group.__dict__, "weight", group.weight)  # fused later: build again
                    if group._members != group.modules_now() or group._epoch != assignments() or group.weight is None:
                        return "q/k/v or gate/up are not fused (formats differ, or no inference call yet)"
                    slots = linear_slots(group.weight, group.bias)
                else:
                    if not plain(single):
                        return f"{type(single).__name__} is not a plain linear"
                    self.watch(single, *single._parameters, kind="_parameters")
                    self.watch(single, *single._buffers, kind="_buffers")
                    slots = linear_slots(single.weight, single.bias)
                if slots is None:
                    return "a weight format the one-call step does not take (float32, or int8 / int4 weight-only)"
                linears.append(slots)
            weights.add_layer([None if n is None else n.weight for n in norms], linears)
            scales.add(attn.attn.scale)
        if len(eps) != 1 or len(scales) != 1:
            return "the norms' eps or the attention scales differ between layers"
        self.weights, self.eps, self.scale = weights.finish(model.norm.weight), eps.pop(), scales.pop()
        return None


_decode_plans: "weakref.WeakKeyDictionary[LlamaModel, _DecodePlan]" = weakref.WeakKeyDictionary()


def _decode_plan(model: "LlamaModel") -> _DecodePlan:
    return current_plan(_decode_plans, model, _DecodePlan)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy in float32, ignoring -100, as transformers computes it."""
    labels = nn.functional.pad(labels.to(logits.device), (0, 1), value=-100)[:, 1:]
    return nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                       ignore_index=-100)


GREEDY_CHUNK = 64  # tokens per DecodePlan.greedy call (~0.5 s of SmolLM2-135M on 2 cores)


class LlamaForCausalLM(LlamaPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    base_model_class = LlamaModel

    def __init__(self, config) -> None:
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.lm_head = layers.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def _compiled_greedy(self, state, eos, forbid, forbid_until):
        """GenerationMixin's hook: the greedy loop in one C++ call (DecodePlan.greedy) when every step would run the
        model's DecodePlan (LlamaModel._native_step) and a quantized LM head -- a quantized weight, or the packed
        twin of a tied GGUF head (ops.linear) -- on the cpu kernels, and no module in between has hooks. Each step
        runs what the step-by-step loop runs: the same kernels on the same inputs, so the same tokens."""
        cache = state.cache
        if not isinstance(cache, StaticCache) or not plain(self.lm_head) or hooked((self, self.model)):
            return None
        plan = self.model._native_step(state.positions[:, :1], cache)
        if plan is None:
            return None
        bias = self.lm_head.bias
        head = cpu_quantized_weight(_decode_plan(self.model).probe, self.lm_head.weight, bias)
        if (head is None or head.method not in ("weight_only", "blockwise_a8")
                or not all(t is None or t.is_contiguous() for t in (head.qweight, head.scales, head.mins, bias))):
            return None
        fmt = [head.bits, head.group, int(head.method == "blockwise_a8")]
        eos = torch.empty(0, dtype=torch.long) if eos is None else eos.reshape(-1).long().cpu()
        eos_ids = set(eos.tolist())

        def loop(seq, cur, stop):
            # GREEDY_CHUNK tokens per call: between calls Python runs (Ctrl-C, other threads)
            while True:
                end = min(cur + GREEDY_CHUNK, stop)
                cur, finite = plan.greedy(seq, cur, end, state.positions, cache.keys, cache.values, cache.written,
                                          head.qweight, head.scales, head.mins, bias, fmt, eos, forbid, forbid_until)
                if not finite or cur < end or cur >= stop or int(seq[0, cur - 1]) in eos_ids:
                    return cur, finite

        return loop

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, cache_position=None, logits_to_keep: int = 0, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                         output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                         return_dict=True, cache_position=cache_position)
        h = out.last_hidden_state
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        result = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.get("past_key_values"),
                                        hidden_states=out.get("hidden_states"), attentions=out.get("attentions"))
        return result if (self.config.return_dict if return_dict is None else return_dict) else result.to_tuple()


def _family(prefix: str, config_class: type):
    """The PreTrainedModel / Model / ForCausalLM classes of one family member."""
    pre = type(f"{prefix}PreTrainedModel", (LlamaPreTrainedModel,), {"config_class": config_class})
    model = type(f"{prefix}Model", (pre, LlamaModel), {})
    causal = type(f"{prefix}ForCausalLM", (pre, LlamaForCausalLM), {"base_model_class": model})
    return pre, model, causal


MistralPreTrainedModel, MistralModel, MistralForCausalLM = _family("Mistral", MistralConfig)
Qwen2PreTrainedModel, Qwen2Model, Qwen2ForCausalLM = _family("Qwen2", Qwen2Config)
Qwen3PreTrainedModel, Qwen3Model, Qwen3ForCausalLM = _family("Qwen3", Qwen3Config)

MODEL_CLASSES_BY_TYPE = {
    "llama": {"AutoModel": LlamaModel, "AutoModelForCausalLM": LlamaForCausalLM},
    "mistral": {"AutoModel": MistralModel, "AutoModelForCausalLM": MistralForCausalLM},
    "qwen2": {"AutoModel": Qwen2Model, "AutoModelForCausalLM": Qwen2ForCausalLM},
    "qwen3": {"AutoModel": Qwen3Model, "AutoModelForCausalLM": Qwen3ForCausalLM},
}
