"""Activation layers: `Activation(hidden_act)` for a config's activation name (the gelu family through the
fused bias+GELU op), and `SiluMul`, SwiGLU's silu(gate) * up."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .linear import Linear, hooked

GELU_APPROXIMATIONS = _GELU = {"gelu": "none", "gelu_python": "none", "gelu_new": "tanh", "gelu_fast": "tanh", "gelu_pytorch_tanh": "tanh"}
_PLAIN = {
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "quick_gelu": lambda y: y * torch.sigmoid(1.702 * y),
}
NAMES = sorted(set(_GELU) | set(_PLAIN))


class Activation(nn.Module):
    """act(x + bias) for a config's `hidden_act` name; an unknown name is a clear error."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if not isinstance(name, str) or name not in NAMES:
            raise ValueError(f"hidden_act={name!r} is not supported; choose one of {NAMES}")
        self.name = name
        self._approximate = _GELU.get(name)
        self._gelu = ops.gelu.binding() if name in _GELU else None
        self._linear_gelu = ops.linear_gelu.binding() if name in _GELU else None
        self._fn = _PLAIN.get(name)

    def forward(self, x: torch.Tensor, bias=None) -> torch.Tensor:
        if self._gelu is not None:
            return self._gelu(x, bias=bias, approximate=self._approximate)
        return self._fn(x if bias is None else x + bias)

    def after(self, linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """self(linear(x)). A GELU after a plain `Linear` (not a subclass or a wrapper such as a peft LoRA layer,
        not hooked) is one op, ops.linear_gelu: on the cpu backend the GELU runs inside the packed GEMM."""
        if self._linear_gelu is not None and type(linear) is Linear and not hooked((linear,)):
            return self._linear_gelu(x, linear.weight, linear.bias, approximate=self._approximate)
        return self(linear(x))

    def extra_repr(self) -> str:
        return self.name


class SiluMul(nn.Module):
    """silu(gate) * up, the SwiGLU feed-forward's activation, in one op."""

    def __init__(self) -> None:
        super().__init__()
        self._silu_mul = ops.silu_mul.binding()

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return self._silu_mul(gate, up)
