"""Pieces the architectures share: input checks, activations, RMS norm, fused linears, head losses, and the
layer call that activation checkpointing hooks into."""

from __future__ import annotations

import operator
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..generation.cache import DynamicCache, EncoderDecoderCache, StaticCache

# hidden_act name -> (function of (x, bias)); gelu variants go through the fused op.
_ACTIVATIONS = {
    "gelu": lambda x, b: ops.gelu(x, bias=b),
    "gelu_python": lambda x, b: ops.gelu(x, bias=b),
    "gelu_new": lambda x, b: ops.gelu(x, bias=b, approximate="tanh"),
    "gelu_fast": lambda x, b: ops.gelu(x, bias=b, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x, b: ops.gelu(x, bias=b, approximate="tanh"),
    "relu": lambda x, b: F.relu(x if b is None else x + b),
    "silu": lambda x, b: F.silu(x if b is None else x + b),
    "swish": lambda x, b: F.silu(x if b is None else x + b),
    "tanh": lambda x, b: torch.tanh(x if b is None else x + b),
    "quick_gelu": lambda x, b: (lambda y: y * torch.sigmoid(1.702 * y))(x if b is None else x + b),
}


def activation(name: str):
    """The function act(x, bias) for a config's hidden_act, or a clear error."""
    if not isinstance(name, str) or name not in _ACTIVATIONS:
        raise ValueError(f"hidden_act={name!r} is not supported; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def linear(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """x W^T + b for a linear module: a plain nn.Linear (or a class marked `plain_linear`, whose forward is just
    that: QuantizedLinear) runs through ops.linear without the module call; anything else (an adapter such as
    peft's LoRA wrapping the linear, a subclass) through its own forward, which reading `.weight` would bypass."""
    cls = type(module)
    if cls is nn.Linear or cls.__dict__.get("plain_linear", False):
        return ops.linear(x, module.weight, module.bias)
    return module(x)


def linear_act(x: torch.Tensor, layer: torch.nn.Linear, act) -> torch.Tensor:
    """act(x W^T + b). The bias stays in the GEMM: BLAS adds it in its epilogue (addmm on CPU,
    cuBLASLt on GPU), which measured faster on CPU than a separate bias+GELU pass."""
    return act(linear(x, layer), None)


def call_layer(layer: nn.Module, *args):
    """layer(*args), or, when activation checkpointing is on for this layer
    (PreTrainedModel.activation_checkpointing_enable) and it trains with autograd on, the same call through
    torch.utils.checkpoint: its activations are dropped after the forward and recomputed in the backward."""
    checkpoint = layer.__dict__.get("_gradient_checkpointing_func")
    if checkpoint is None or not layer.__dict__.get("gradient_checkpointing") or not layer.training \
            or not torch.is_grad_enabled():
        return layer(*args)
    if any(isinstance(a, (DynamicCache, StaticCache, EncoderDecoderCache)) for a in args):
        # the recomputation would write the cache a second time
        raise ValueError("use_cache=True does not go with activation checkpointing in training: pass use_cache=False "
                         "(or call model.eval() / torch.no_grad() to decode)")
    return checkpoint(layer, *args)


def run_encoder(layers, x, attention_mask, output_attentions: bool, output_hidden_states: bool,
                attention_dropout: float = 0.0):
    """Run encoder layers `layer(x, mask, output_attentions) -> (x, probs)` over a batch.

    A padded batch is unpadded first when that pays (`ops.unpadding_pays`: varlen attention on a fused
    kernel, e.g. CUDA with Triton): the layers then see (1, real tokens, hidden) and the packing as
    their attention mask, and the outputs are padded back (zeros at padded positions). Not when
    attention probabilities are needed (output_attentions, attention dropout in training).
    """
    packing = None
    needs_probs = output_attentions or (layers.training and attention_dropout > 0)
    if not needs_probs and ops.unpadding_pays(x, attention_mask):
        x, packing = ops.unpad(x, attention_mask)
        attention_mask = packing
    hidden_states = (x,) if output_hidden_states else None
    attentions = () if output_attentions else None
    for layer in layers:
        x, probs = call_layer(layer, x, attention_mask, output_attentions)
        if output_hidden_states:
            hidden_states += (x,)
        if output_attentions:
            attentions += (probs,)
    if packing is not None:
        x = ops.pad(x, packing)
        hidden_states = tuple(ops.pad(h, packing) for h in hidden_states) if output_hidden_states else None
    return x, hidden_states, attentions


class RMSNorm(nn.Module):
    """Scale by the root mean square (no mean subtraction, no bias; statistics in float32), optionally after
    adding a residual (then returns (normed, sum)): Llama's RMSNorm and T5's LayerNorm."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.variance_epsilon = eps

    def forward(self, x, residual=None):
        return ops.rms_norm(x, self.weight, self.variance_epsilon, residual=residual)


def check_inputs(input_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor], vocab_size: int,
                 max_positions: Optional[int], past_length: int = 0) -> Tuple[int, int]:
    """Validate ids and length at the model boundary; return (batch, seq_len)."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    if input_ids is not None:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
        if input_ids.dtype.is_floating_point:
            raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        if input_ids.numel() and not torch.compiler.is_compiling():  # a host read: eager only
            lo, hi = torch.aminmax(input_ids)
            lo, hi = int(lo), int(hi)
            if hi >= vocab_size or lo < 0:
                bad = hi if hi >= vocab_size else lo
                raise IndexError(f"input_ids holds token id {bad}, outside the vocabulary of size {vocab_size}")
        batch, seq = input_ids.shape
    else:
        if inputs_embeds.dim() != 3:
            raise ValueError(f"inputs_embeds must be (batch, seq_len, hidden), got shape {tuple(inputs_embeds.shape)}")
        batch, seq = inputs_embeds.shape[:2]
    if max_positions is not None and past_length + seq > max_positions:
        raise ValueError(
            f"sequence length {past_length + seq} exceeds max_position_embeddings={max_positions} of this model; "
            f"truncate the input (e.g. tokenizer(..., truncation=True, max_length={max_positions}))"
        )
    return batch, seq


def check_mask(attention_mask: Optional[torch.Tensor], batch: int, seq: int) -> Optional[torch.Tensor]:
    if attention_mask is None:
        return None
    if attention_mask.shape != (batch, seq):
        raise ValueError(f"attention_mask must have shape (batch, seq_len) = {(batch, seq)}, "
                         f"got {tuple(attention_mask.shape)}")
    return attention_mask


def sequence_classification_loss(config, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """transformers' rule: regression for one label, cross-entropy for integer labels, else BCE."""
    num_labels = config.num_labels
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    if config.problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    raise ValueError(f"config.problem_type={config.problem_type!r} is not one of regression, "
                     f"single_label_classification, multi_label_classification")


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over every position whose label is not -100 (MLM, token classification)."""
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1).to(logits.device))


def span_loss(start_logits, end_logits, start_positions, end_positions) -> torch.Tensor:
    """Question answering: mean of start and end cross-entropies; positions outside are ignored."""
    ignored = start_logits.shape[1]
    start = start_positions.view(-1).clamp(0, ignored)
    end = end_positions.view(-1).clamp(0, ignored)
    return (F.cross_entropy(start_logits, start, ignore_index=ignored)
            + F.cross_entropy(end_logits, end, ignore_index=ignored)) / 2


class FusedLinear:
    """Several linears over the same input run as one GEMM at inference (e.g. query/key/value).

    On the first call without autograd, the weights (and biases) are moved into one storage and
    each Linear's parameters become views of it (the same Parameter objects, their data moved), so
    checkpoint names, state_dict values, tying and an optimizer's references are unchanged, and an
    optimizer step updates the fused storage in place. If the parameters are later replaced (`.to(...)`,
    `load_state_dict(assign=True)`), the storage is rebuilt on the next call. With autograd on, the
    separate linears run as usual.

    `owner`: the module holding the linears as attributes. When one of them is replaced there by another
    module (an adapter such as peft's LoRA wrapping it), the linears run one by one through the modules now
    in place, so the wrapper is never bypassed; when the original comes back (peft's merge_and_unload), the
    fused path resumes.

    Quantized linears (a `QuantizedWeight` as `.weight`, fastformers.quantization) fuse the same way,
    their packed tensors concatenated along the output dim, when their formats agree (bits, groups,
    method, mins); linears of different formats, or quantized next to float ones, run separately.
    """

    def __init__(self, *linears: torch.nn.Linear, owner: Optional[nn.Module] = None) -> None:
        self.linears = linears
        self.sizes = [lin.out_features for lin in linears]
        self.weight = self.bias = None
        self._fused = False
        self._owner = owner
        if owner is not None:
            by_id = {id(m): name for name, m in owner.named_children()}
            names = [by_id[id(lin)] for lin in linears]
            # owner._modules -> the tuple of modules now in place
            self._current = operator.itemgetter(*names) if len(names) > 1 else lambda d: (d[names[0]],)

    def replace_linears(self, replacements: dict) -> None:
        """Point at new modules ({id(old module): new module}), e.g. after quantization swapped them."""
        self.linears = tuple(replacements.get(id(lin), lin) for lin in self.linears)
        self.weight = self.bias = None
        self._fused = False

    def _ids(self):
        # .to(), .half(), load_state_dict(assign=True) replace every parameter's storage together:
        # checking the first and last linear is enough, and cheap (this runs per layer per token).
        first, last = self.linears[0].weight, self.linears[-1].weight
        if isinstance(first, ops.QuantizedWeight):
            first_ptrs = (first.qweight.data_ptr(), first.scales.data_ptr())
        else:
            first_ptrs = (first.data_ptr(), 0)
        return first_ptrs + (getattr(last, "qweight", last).data_ptr(), first.dtype)

    def _fuse(self) -> None:
        if any(isinstance(lin.weight, ops.QuantizedWeight) for lin in self.linears):
            self._fuse_quantized()
        else:
            ws = [lin.weight.detach() for lin in self.linears]
            if any(w.stride(0) == 1 and w.shape[0] > 1 for w in ws):  # keep a K-major layout K-major (PreTrainedModel)
                self.weight = torch.cat([w.t() for w in ws], dim=1).t()
            else:
                self.weight = torch.cat(ws)
            start = 0
            for lin, n in zip(self.linears, self.sizes):
                lin.weight.data = self.weight[start:start + n]
                start += n
        has_bias = self.weight is not None and all(lin.bias is not None for lin in self.linears)
        self.bias = torch.cat([lin.bias.detach() for lin in self.linears]) if has_bias else None
        if has_bias:
            start = 0
            for lin, n in zip(self.linears, self.sizes):
                lin.bias.data = self.bias[start:start + n]
                start += n
        self._fused = True
        self._ptrs = self._ids()

    def _fuse_quantized(self) -> None:
        ws = [lin.weight for lin in self.linears]

        def layout(w):
            return isinstance(w, ops.QuantizedWeight) and (w.bits, w.group_size, w.method, w.in_features,
                                                           w.mins is None, w.dtype, w.device)

        if not all(layout(w) == layout(ws[0]) for w in ws):
            self.weight = None  # formats differ (or float next to quantized): the linears run one by one
            return
        first = ws[0]
        parts = [None if getattr(first, p) is None else torch.cat([getattr(w, p) for w in ws])
                 for p in ("qweight", "scales", "mins")]
        self.weight = ops.QuantizedWeight(*parts, first.bits, first.group_size, first.in_features, first.method)
        start = 0
        for lin, n in zip(self.linears, self.sizes):
            lin.weight = ops.QuantizedWeight(*(None if t is None else t[start:start + n] for t in parts), first.bits,
                                             first.group_size, first.in_features, first.method)
            start += n

    def __call__(self, x: torch.Tensor):
        if self._owner is not None and not torch.compiler.is_compiling():  # (Dynamo cannot trace itemgetter)
            current = self._current(self._owner._modules)  # (~0.3 us: this runs per layer per token)
            if current != self.linears:  # (modules compare by identity)
                return [linear(x, m) for m in current]  # wrapped or replaced: each module's own forward
        if (torch.is_grad_enabled() and getattr(self.linears[0].weight, "requires_grad", False)
                or x.device.type == "meta"):
            return [linear(x, lin) for lin in self.linears]
        # a compiled step trusts the fusion an eager call (the prefill) made: Dynamo cannot compare data pointers
        if not self._fused or (not torch.compiler.is_compiling() and self._ids() != self._ptrs):
            self._fuse()
        if self.weight is None:
            return [linear(x, lin) for lin in self.linears]
        return ops.linear(x, self.weight, self.bias).split(self.sizes, dim=-1)
