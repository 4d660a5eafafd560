"""Linear layers: `Linear` (an nn.Linear, so peft/LoRA, hooks and state_dict names work as usual) and
`FusedLinear`, which runs sibling linears over the same input (q/k/v, gate/up) as one GEMM at inference.

Fusing moves the siblings' weights (and biases) into one storage and makes each sibling's parameters views
of it: checkpoint names, state_dict values (so save_pretrained writes the separate transformers names),
tying and in-place updates (load_state_dict, optimizer steps) are unchanged. It happens once, on the first
inference call after loading or quantizing, and again only after an event that replaces the parameters:
`.to()` / dtype changes (`_apply`), assigning a Linear's weight or bias, or swapping a sibling module
(quantization, peft). Swaps are seen by identity: the group looks its siblings up in its owner by name.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .. import ops
from ..ops.linear import forget_packed_weights

# Bumped whenever a Linear's weight or bias is assigned: a fused group compares it to the value it fused at.
_assignments = [0]


def assignments() -> int:
    """How many times a Linear's weight or bias was assigned or replaced so far (FusedLinear fuses again when it
    moves; so does the one-call decode step's plan, models/llama.py)."""
    return _assignments[0]


def weights_changed() -> None:
    """Say that Linear weights were changed behind the module's back (`param.data = ...`, which no hook sees, or
    edits through `.data`): fused groups fuse again from the siblings' current weights on their next call, and
    the CPU's packed weight copies (ops/linear.py) are made afresh."""
    _assignments[0] += 1
    forget_packed_weights()


class Linear(nn.Linear):
    """nn.Linear whose forward goes through `ops.linear`, bound once (a forced backend that cannot run here
    raises BackendUnavailableError at the first call)."""

    fusable = True  # FusedLinear may run it inside a fused GEMM (not inherited: see plain)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._linear = ops.linear.binding()

    def __setattr__(self, name, value) -> None:
        if name in ("weight", "bias"):
            _assignments[0] += 1
        super().__setattr__(name, value)

    def _apply(self, fn, recurse=True):
        _assignments[0] += 1  # parameters replaced (.to(), .half(), ...): fused groups fuse again
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._linear(x, self.weight, self.bias)


def hooked(members: tuple) -> bool:
    """Whether a sibling must run as itself: it has forward hooks, or its forward was replaced on the instance
    (accelerate's offloading hooks do that)."""
    for m in members:
        if m._forward_hooks or m._forward_pre_hooks or "forward" in m.__dict__:
            return True
    return False


def plain(module: nn.Module) -> bool:
    """A sibling the fused GEMM may stand in for: a class that says `fusable = True` itself (Linear,
    QuantizedLinear; not a subclass, not a wrapper such as a peft LoRA layer), not hooked."""
    return vars(type(module)).get("fusable", False) and not hooked((module,))


class FusedLinear(nn.Module):
    """`owner.<name>` for each name, run as one GEMM: `q, k, v = self.qkv(x)`.

    Registered in its owner (no parameters of its own, nothing in the state_dict). With autograd on for a
    trainable sibling, on the meta device, or when a sibling is not a plain Linear (a peft LoRA layer, a hooked
    module), the siblings run one by one as modules. Quantized siblings fuse when their formats agree.
    """

    def __init__(self, owner: nn.Module, *names: str) -> None:
        super().__init__()
        if len(names) < 2:
            raise ValueError(f"FusedLinear fuses two or more sibling linears, got {names}")
        # A plain attribute, not a child module (object.__setattr__ keeps nn.Module from registering it): a
        # cycle owner -> us -> owner, which deepcopy and pickle follow (a weakref would tie a copy to the original).
        object.__setattr__(self, "_owner", owner)
        self.names: Tuple[str, ...] = names
        self._float = ops.linear.binding()
        self._quantized = ops.quantized_linear.binding()
        self._reset()

    def _reset(self) -> None:
        self._members: tuple = ()     # the modules fused, by identity
        self._epoch = -1              # _assignments[0] when fused
        self.weight = self.bias = None
        self.sizes = None
        self._run = None

    def _apply(self, fn, recurse=True):
        self._reset()  # siblings' parameters are being replaced: fuse again from the new ones
        return self

    def __getstate__(self):
        # a copy (deepcopy, pickle) fuses its own siblings afresh: copying a Parameter clones it, so the
        # copied siblings would no longer be views of a copied fused weight
        state = self.__dict__.copy()
        state.update(_members=(), _epoch=-1, weight=None, bias=None, sizes=None, _run=None)
        return state

    def extra_repr(self) -> str:
        return ", ".join(self.names)

    def modules_now(self) -> tuple:
        modules = self._owner._modules
        return tuple([modules[name] for name in self.names])

    def forward(self, x: torch.Tensor):
        members = self.modules_now()
        if members != self._members or self._epoch != _assignments[0]:  # identity compare, then one int
            if not all(plain(m) for m in members):
                # e.g. peft LoRA wrappers: they may rewrite the wrapped weights (merging assigns `.data`, which
                # no hook sees), so fuse afresh once the siblings are plain again
                self._members = ()
                return [m(x) for m in members]
            if x.is_meta or torch.is_grad_enabled() and getattr(members[0].weight, "requires_grad", False):
                return [m(x) for m in members]
            self._fuse(members)
        elif torch.is_grad_enabled() and getattr(members[0].weight, "requires_grad", False) or hooked(members):
            return [m(x) for m in members]  # training, or a hook to honour
        if self.weight is None:
            return [m(x) for m in members]
        return self._run(x, self.weight, self.bias).split(self.sizes, dim=-1)

    def fused_now(self):
        """(weight, bias) of the fused GEMM as inference would run it now (fusing first if the siblings changed),
        or None when the siblings run one by one (not plain, or formats differ). For a one-call op's plan."""
        members = self.modules_now()
        if not all(plain(m) for m in members):
            return None
        if members != self._members or self._epoch != _assignments[0]:
            self._fuse(members)
        return None if self.weight is None else (self.weight, self.bias)

    # -- fusing ------------------------------------------------------------------------------------
    def _fuse(self, members: tuple) -> None:
        with torch.no_grad():
            if any(isinstance(m.weight, ops.QuantizedWeight) for m in members):
                weight = _fuse_quantized(members)
            else:
                weight = _fuse_float(members)
            bias = None
            if weight is not None and all(m.bias is not None for m in members):
                bias = torch.cat([m.bias.detach() for m in members])
                start = 0
                for m in members:
                    n = m.out_features
                    m.bias.data = bias[start:start + n]  # (see _fuse_float)
                    start += n
        self.weight, self.bias = weight, bias
        self.sizes = [m.out_features for m in members]
        self._run = self._quantized if isinstance(weight, ops.QuantizedWeight) else self._float
        self._members, self._epoch = members, _assignments[0]


def _fuse_float(members: tuple):
    ws = [m.weight.detach() for m in members]
    if any(w.stride(0) == 1 and w.shape[0] > 1 for w in ws):  # keep a K-major layout K-major
        weight = torch.cat([w.t() for w in ws], dim=1).t()
    else:
        weight = torch.cat(ws)
    start = 0
    for m in members:
        n = m.out_features
        # the same Parameter objects, their data moved: an optimizer built before keeps updating what the model
        # uses (in place, so the fused storage follows), and our own move does not count as an assignment
        m.weight.data = weight[start:start + n]
        start += n
    return weight


def _fuse_quantized(members: tuple):
    ws = [m.weight for m in members]

    def layout(w):
        return isinstance(w, ops.QuantizedWeight) and (w.bits, w.group_size, w.method, w.in_features,
                                                       w.mins is None, w.dtype, w.device)

    if not all(layout(w) == layout(ws[0]) for w in ws):
        return None  # formats differ (or float next to quantized): the linears run one by one
    first = ws[0]
    parts = [None if getattr(first, p) is None else torch.cat([getattr(w, p) for w in ws])
             for p in ("qweight", "scales", "mins")]
    start = 0
    for m in members:
        n = m.out_features
        m.weight = ops.QuantizedWeight(*(None if t is None else t[start:start + n] for t in parts), first.bits,
                                       first.group_size, first.in_features, first.method)
        start += n
    return ops.QuantizedWeight(*parts, first.bits, first.group_size, first.in_features, first.method)


class Conv1D(nn.Module):
    """A linear layer with its weight stored (in_features, out_features), as GPT-2's checkpoints keep it;
    used as it is (the op takes the transposed view, no copy), so names and layouts round-trip unchanged."""

    def __init__(self, out_features: int, in_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self._linear = ops.linear.binding()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._linear(x, self.weight.t(), self.bias)
