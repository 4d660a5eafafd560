"""ops.gelu (with bias, erf and tanh), ops.silu_mul and ops.linear against float64 math."""

import math

import pytest
import torch

from fastformers import ops
from conftest import rel_err


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("shape", [(1,), (3, 37), (2, 9, 128)])
def test_gelu_with_bias(approximate, shape):
    g = torch.Generator().manual_seed(len(shape))
    x, b = torch.randn(shape, generator=g) * 3, torch.randn(shape[-1], generator=g)
    y = (x + b).double()
    if approximate == "none":
        ref = 0.5 * y * (1 + torch.erf(y / math.sqrt(2)))
    else:
        ref = 0.5 * y * (1 + torch.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y ** 3)))
    assert rel_err(ops.gelu(x, bias=b, approximate=approximate), ref) <= 1e-5
    assert rel_err(ops.gelu(x + b, approximate=approximate), ref) <= 1e-5


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="approximate='fast'"):
        ops.gelu(torch.randn(3), approximate="fast")


def test_silu_mul():
    g = torch.Generator().manual_seed(3)
    gate, up = torch.randn(5, 33, generator=g) * 4, torch.randn(5, 33, generator=g)
    ref = gate.double() / (1 + torch.exp(-gate.double())) * up.double()
    assert rel_err(ops.silu_mul(gate, up), ref) <= 1e-5


def test_linear():
    g = torch.Generator().manual_seed(4)
    x, w, b = torch.randn(2, 3, 19, generator=g), torch.randn(23, 19, generator=g), torch.randn(23, generator=g)
    ref = x.double() @ w.double().T + b.double()
    assert rel_err(ops.linear(x, w, b), ref) <= 1e-5
    assert rel_err(ops.linear(x, w), ref - b.double()) <= 1e-5
