"""Calibration-based quantization: GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers"), written into fastformers' own packed format (`QuantizedWeight`), so a
GPTQ-quantized model saves, loads and runs like any other quantized model.

    model = AutoModelForCausalLM.from_pretrained(path)
    quantize_model(model, QuantizationConfig(bits=4, group_size=128, algorithm="gptq"), calibration_ids=ids)
    # or: gptq_quantize_(model, ids, QuantizationConfig(bits=4, group_size=128))

Per linear, with X its inputs on the calibration tokens, GPTQ looks for quantized weights Q minimizing
||X Q^T - X W^T||^2 = tr((Q - W) H (Q - W)^T) / 2 with H = 2 X^T X: it rounds the input columns one at a time
and spreads each column's rounding error over the columns not yet rounded, weighted by H^-1 (through the upper
Cholesky factor of H^-1, in blocks of `block_size` columns with lazy updates beyond the block). Two refinements,
both on by default and both keeping groups contiguous runs of input columns (QuantizedWeight has no column
permutation): act-order with static groups (columns rounded in order of decreasing input energy, each group's
grid fixed from the weights beforehand) and a clipping search for each group's range.

Linears are quantized in the order the model uses them, each on the inputs the already-quantized model feeds
it: one forward of the calibration batch through the base model (model.model), with forward pre-hooks on the
layers. The first call of a pending linear (or of a layers.FusedLinear, whose siblings q/k/v or gate/up run as
one matmul on one input) quantizes it, or the linears fused in it, on the call's input, and writes the
dequantized weights over the float ones in place, so the call and everything after it computes with the
quantized model (q/k/v, then o_proj on the quantized attention, gate/up, down_proj, then the next layer). The
QuantizedLinear modules are swapped in afterwards (plan.replace_linears, as quantize_model does).
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from typing import Callable, Dict, Optional, Sequence, Union

import torch
from torch import nn

from ..layers import FusedLinear
from ..ops.quant import QuantizedWeight, dequantize_weight, pack_int4
from .config import LinearFormat, QuantizationConfig
from .linear import QuantizedLinear, quantize_linear_weight
from .plan import describe, plan_modules, replace_linears

logger = logging.getLogger("fastformers")

_TINY = torch.finfo(torch.float32).tiny


# -- GPTQ for one weight matrix --------------------------------------------------------------------
def _grid(lo: torch.Tensor, hi: torch.Tensor, fmt: LinearFormat, dtype: torch.dtype):
    """The quantization grid covering [lo, hi] (per row, or any shape) in fmt's conventions (those of
    ops.quantize_weight): (scale, offset, lowest code, highest code) with w ~ code * scale + offset. Scale and
    offset are rounded to the stored dtype, so the errors GPTQ propagates are those of the stored weight."""
    if fmt.symmetric:
        qmax = 127 if fmt.bits == 8 else 7
        scale = (torch.maximum(-lo, hi) / qmax).clamp_min(_TINY).to(dtype).float()
        if fmt.bits == 8:
            return scale, torch.zeros_like(scale), -127, 127
        return scale, (-8 * scale).to(dtype).float(), 0, 15
    qmax = 2 ** fmt.bits - 1
    scale = ((hi - lo) / qmax).clamp_min(_TINY).to(dtype).float()
    if fmt.bits == 4:
        return scale, lo.to(dtype).float(), 0, 15
    return scale, (lo + 128 * scale).to(dtype).float(), -128, 127


def _group_grid(w: torch.Tensor, fmt: LinearFormat, dtype: torch.dtype, clip_steps: int, importance: torch.Tensor):
    """The grid of one group, w (rows, its columns): covering each row's range, or with clip_steps > 0 the
    range shrunk to the fraction among 1, 1 - 1/(2 clip_steps), ..., 1/2 that rounds the row with the least
    squared error, each column's error weighted by `importance` (its inputs' mean square)."""
    lo, hi = w.amin(-1), w.amax(-1)
    if clip_steps <= 0:
        return _grid(lo, hi, fmt, dtype)
    shrink = (1 - torch.arange(clip_steps + 1, device=w.device) / (2 * clip_steps))[:, None]
    scale, offset, qlo, qhi = _grid(lo * shrink, hi * shrink, fmt, dtype)  # (candidates, rows)
    s, o = scale[..., None], offset[..., None]
    err = (w - o).div_(s).round_().clamp_(qlo, qhi).mul_(s).add_(o).sub_(w).square_().mul_(importance)
    best = err.sum(-1).argmin(0)  # the first of equals: the widest range
    rows = torch.arange(w.shape[0], device=w.device)
    return scale[best, rows], offset[best, rows], qlo, qhi


def gptq_quantize_weight(weight: torch.Tensor, hessian: torch.Tensor, fmt: LinearFormat, block_size: int = 128,
                         damp: float = 0.01, act_order: bool = True, clip_steps: int = 10) -> QuantizedWeight:
    """GPTQ-quantize one weight (out_features, in_features) to `fmt`, given the Hessian H = X^T X (any positive
    multiple) of its inputs X (tokens, in_features), and return the QuantizedWeight.

    damp: added to H's diagonal, times its mean. block_size: columns per lazy-update block. act_order: round
    the columns in order of decreasing input energy (diag H) rather than left to right, each on its own group's
    grid, which is then set from the weights before any update ("static groups": the groups stay contiguous
    runs of input columns, as QuantizedWeight needs); without it a group's grid is set from the error-updated
    weights when its first column comes up. clip_steps: search, per row and group, the range among 1, 1 - 1/(2
    clip_steps), ..., 1/2 of the weights' with the least diag(H)-weighted rounding error (0: the full range, as
    round-to-nearest). Rows are independent: linears over the same input quantized in one call (their weights
    stacked) get what each would alone. With H = I, no act-order and no clipping this is round-to-nearest."""
    rows, cols = weight.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"gptq_quantize_weight: hessian must be ({cols}, {cols}) for a weight of shape "
                         f"{tuple(weight.shape)}, got {tuple(hessian.shape)}")
    dtype, device = weight.dtype, weight.device
    H = hessian.detach().float().clone()
    dead = H.diagonal() <= 0  # inputs always zero: nothing to fit, round those columns alone
    H[dead, :], H[:, dead] = 0, 0
    H.diagonal()[dead] = 1
    importance = H.diagonal().clone()

    group = fmt.group_size or cols
    groups = math.ceil(cols / group)
    scales = torch.empty(groups, rows, device=device)
    offsets = torch.empty(groups, rows, device=device)
    codes = torch.empty(cols, rows, device=device)
    Wt = weight.detach().t().float().contiguous()  # (in, out): one input column per contiguous row
    qlo, qhi = _grid(Wt[:1, :1], Wt[:1, :1], fmt, dtype)[2:]
    perm = None
    if act_order:
        for g in range(groups):
            sl = slice(g * group, (g + 1) * group)
            scales[g], offsets[g], _, _ = _group_grid(Wt[sl].t(), fmt, dtype, clip_steps, importance[sl])
        perm = torch.argsort(importance, descending=True)
        H, Wt = H[perm][:, perm], Wt[perm]
        column_scales, column_offsets = scales[perm // group], offsets[perm // group]  # (in, out), permuted
        block = block_size
    elif group >= cols:
        block = block_size  # one group: its grid comes from the untouched weights at column 0
    elif group <= block_size:
        block = block_size - block_size % group  # whole groups per block
    else:
        block = block_size if group % block_size == 0 else group  # a group starts where a block starts
    U = _inverse_cholesky(H, damp)  # upper triangular, H^-1 = U^T U

    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1, U1 = Wt[i1:i2].clone(), U[i1:i2, i1:i2]
        inv_diag = (1 / U1.diagonal()).tolist()
        if act_order:
            S1, O1 = column_scales[i1:i2], column_offsets[i1:i2]
        else:
            S1, O1 = torch.empty(i2 - i1, rows, device=device), torch.empty(i2 - i1, rows, device=device)
            if i1 % group:  # a block inside a group that began in an earlier block
                S1[:], O1[:] = scales[i1 // group], offsets[i1 // group]
        errors = torch.empty(i2 - i1, rows, device=device)
        for i in range(i2 - i1):
            col = i1 + i
            if not act_order and col % group == 0:
                # the group's columns, updated with every error so far: at a block's start Wt holds them (W1 is
                # a fresh copy); later in a block the group lies inside it, in W1
                part = Wt[col:col + group] if i == 0 else W1[i:i + group]
                scale, offset, _, _ = _group_grid(part.t(), fmt, dtype, clip_steps, importance[col:col + group])
                scales[col // group], offsets[col // group] = scale, offset
                S1[i:i + group], O1[i:i + group] = scale, offset
            w, s, o = W1[i], S1[i], O1[i]
            deq = torch.round((w - o) / s).clamp_(qlo, qhi).mul_(s).add_(o)
            err = torch.sub(w, deq, out=errors[i]).mul_(inv_diag[i])
            W1[i:].addr_(U1[i, i:], err, alpha=-1)  # the columns not yet rounded absorb this one's error
        # W1 now holds the rounded values (each column's own update took it onto the grid)
        codes[i1:i2] = torch.round((W1 - O1) / S1).clamp_(qlo, qhi)
        Wt[i2:].addmm_(U[i1:i2, i2:].t(), errors, alpha=-1)
    if perm is not None:
        codes = codes[torch.argsort(perm)]
    codes, scales, offsets = codes.t(), scales.t().contiguous(), offsets.t().contiguous()

    has_mins = fmt.bits == 4 or not fmt.symmetric
    qweight = codes.to(torch.int8) if fmt.bits == 8 else pack_int4(codes.to(torch.uint8))
    return QuantizedWeight(qweight, scales.to(dtype), offsets.to(dtype) if has_mins else None, fmt.bits,
                           fmt.group_size, cols, fmt.method).check("gptq_quantize_weight")


def _inverse_cholesky(H: torch.Tensor, damp: float) -> torch.Tensor:
    """The upper triangular U with U^T U = (H + damp * mean(diag H) * I)^-1, raising the dampening until H
    factors. With J the order reversal and J H J = L L^T (Cholesky), U = J L^-1 J: one factorisation and one
    triangular inverse, in float64: float32 loses enough on real activations to cost perplexity."""
    H = H.double()
    mean = float(H.diagonal().mean())
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    for attempt in range(6):
        damped = H.flip(0, 1)
        damped.diagonal().add_(max(damp * 10 ** attempt, 1e-6) * mean)
        L, info = torch.linalg.cholesky_ex(damped)
        if info == 0:
            return torch.linalg.solve_triangular(L, eye, upper=False).flip(0, 1).float()
    raise ValueError("gptq_quantize_weight: the Hessian of the calibration inputs is not positive definite, "
                     "even with dampening (are the calibration inputs finite?)")


# -- the model -------------------------------------------------------------------------------------
class _Calibrator:
    """Forward pre-hooks, for one forward of the calibration batch, on every pending linear and on every
    layers.FusedLinear whose siblings are pending (they run as one GEMM on one input, so they are calibrated
    together). The first call of a hooked module GPTQ-quantizes its pending linears on that call's input
    (`quantize(modules, X^T X)`), and the dequantized weights are written over the float ones in place: the
    call, and all that follows in the forward, computes with the quantized linears. Calls on the same input
    reuse its X^T X. `token_mask` drops padding when an input is (batch, seq, ...). Use as a context manager."""

    def __init__(self, model: nn.Module, pending: Dict[str, nn.Module], quantize: Callable,
                 token_mask: Optional[torch.Tensor]):
        self.pending, self.quantize, self.token_mask = pending, quantize, token_mask
        self.done: Dict[str, QuantizedWeight] = {}
        self._last = None  # (key, input, X^T X); holding the input keeps its memory from passing for another's
        self._handles = []
        names = {id(m): name for name, m in pending.items()}
        grouped = set()
        for module in model.modules():
            if isinstance(module, FusedLinear):
                group = [names[id(m)] for m in module.modules_now() if id(m) in names]
                if group:
                    self._handles.append(module.register_forward_pre_hook(self._hook(group)))
                    grouped.update(group)
        for name, module in pending.items():
            if name not in grouped:
                self._handles.append(module.register_forward_pre_hook(self._hook([name])))

    def _hook(self, names):
        def calibrate(module, args):
            todo = [name for name in names if name in self.pending]
            if todo and args and isinstance(args[0], torch.Tensor):
                modules = {name: self.pending.pop(name) for name in todo}
                for name, qw in self.quantize(modules, self._hessian(args[0])).items():
                    modules[name].weight.copy_(dequantize_weight(qw, modules[name].weight.dtype))
                    self.done[name] = qw
        return calibrate

    def __enter__(self) -> "_Calibrator":
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hessian(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.data_ptr(), tuple(x.shape), tuple(x.stride()))
        if self._last is None or self._last[0] != key:
            rows = x.detach().reshape(-1, x.shape[-1])
            if self.token_mask is not None and tuple(x.shape[:-1]) == tuple(self.token_mask.shape):
                rows = rows[self.token_mask.reshape(-1)]
            rows = rows.float()
            self._last = key, x, rows.t() @ rows / max(rows.shape[0], 1)
        return self._last[2]


def _calibration_batch(calibration_ids, device: torch.device):
    """(input_ids (n, seq), attention_mask or None): a list of 1-D sequences is right-padded with a mask."""
    if isinstance(calibration_ids, torch.Tensor):
        ids = calibration_ids[None] if calibration_ids.dim() == 1 else calibration_ids
        if ids.dim() != 2 or ids.dtype.is_floating_point or ids.numel() == 0:
            raise ValueError(f"calibration_ids must be a non-empty integer tensor (n_samples, seq_len) or a list of "
                             f"1-D tensors, got {ids.dtype} {tuple(calibration_ids.shape)}")
        return ids.to(device), None
    seqs = [torch.as_tensor(s).reshape(-1) for s in calibration_ids]
    if not seqs or any(s.numel() == 0 or s.dtype.is_floating_point for s in seqs):
        raise ValueError("calibration_ids must be a non-empty integer tensor (n_samples, seq_len) or a list of "
                         "non-empty 1-D integer tensors")
    longest = max(s.numel() for s in seqs)
    ids = torch.zeros(len(seqs), longest, dtype=torch.long)
    mask = torch.zeros(len(seqs), longest, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :s.numel()], mask[i, :s.numel()] = s, 1
    return ids.to(device), (None if bool(mask.all()) else mask.to(device))


def gptq_quantize_(model: nn.Module, calibration_ids: Union[torch.Tensor, Sequence[torch.Tensor]],
                   config: Optional[QuantizationConfig] = None, *, block_size: int = 128, damp: float = 0.01,
                   act_order: bool = True, clip_steps: int = 10, **kwargs) -> nn.Module:
    """GPTQ-quantize, in place, every linear `config` selects (as `quantize_model` would; its format: bits,
    group_size, symmetric, per-module overrides) and return the model.

    calibration_ids: token ids, a LongTensor (n_samples, seq_len) or a list of 1-D tensors (right-padded and
    masked): a few sequences of a few hundred tokens of text like the model's use, e.g. 8 x 256.
    config: a QuantizationConfig (or its fields as keywords). block_size, damp, act_order, clip_steps: see
    `gptq_quantize_weight`. Linears the forward of the base model (model.model) never calls, e.g. an untied
    lm_head the config quantizes, are rounded to nearest, with a warning.
    """
    config = QuantizationConfig.from_call(config, kwargs, "gptq_quantize_")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
        raise ValueError(f"gptq_quantize_: block_size={block_size!r} must be a positive int")
    if not damp > 0:
        raise ValueError(f"gptq_quantize_: damp={damp!r} must be > 0")
    plan = {name: fmt for name, fmt in plan_modules(model, config).items()
            if not isinstance(model.get_submodule(name), QuantizedLinear)}
    device = next(model.parameters()).device
    ids, mask = _calibration_batch(calibration_ids, device)

    def quantize(modules: Dict[str, nn.Module], hessian: torch.Tensor) -> Dict[str, QuantizedWeight]:
        """Linears over one input: those of one format are stacked and quantized in one pass."""
        out = {}
        for fmt in dict.fromkeys(plan[name] for name in modules):
            names = [name for name in modules if plan[name] == fmt]
            weights = [modules[name].weight.detach() for name in names]
            qw = gptq_quantize_weight(torch.cat(weights), hessian, fmt, block_size, damp, act_order, clip_steps)
            start = 0
            for name, w in zip(names, weights):
                n = w.shape[0]
                out[name] = QuantizedWeight(*(None if t is None else t[start:start + n].clone()
                                              for t in (qw.qweight, qw.scales, qw.mins)), qw.bits, qw.group_size,
                                            qw.in_features, qw.method)
                start += n
        return out

    start = time.perf_counter()
    calibrator = _Calibrator(model, {name: model.get_submodule(name) for name in plan}, quantize,
                             None if mask is None else mask.bool())
    base = getattr(model, "base_model", model)
    extra = {"use_cache": False} if "use_cache" in inspect.signature(base.forward).parameters else {}
    with torch.no_grad():
        with calibrator:
            base(input_ids=ids, attention_mask=mask, **extra)
        weights = calibrator.done
        if calibrator.pending:
            logger.warning("gptq_quantize_: %s not called in the forward of %s; rounded to nearest",
                           ", ".join(calibrator.pending), type(base).__name__)
            weights.update({name: quantize_linear_weight(m.weight.detach(), plan[name])
                            for name, m in calibrator.pending.items()})
        replace_linears(model, {name: plan[name] for name in weights}, quantize=False)
        for name, qw in weights.items():
            model.get_submodule(name).weight = qw
    logger.info("gptq_quantize_: %d linears on %d calibration tokens in %.1fs", len(weights),
                int(ids.numel() if mask is None else mask.sum()), time.perf_counter() - start)
    if hasattr(model, "config"):  # saved with algorithm="gptq": how the packed weights were made
        model.config.quantization_config = describe(model, QuantizationConfig.from_dict(
            {**config.to_dict(), "algorithm": "gptq"}))
    return model


__all__ = ["gptq_quantize_", "gptq_quantize_weight"]
