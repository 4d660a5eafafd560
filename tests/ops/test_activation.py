"""ops.gelu (with bias, erf and tanh), ops.silu_mul and ops.linear against float64 math; the Triton kernels
(kernels/activation.py) against the float64 reference, forward and backward."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from fastformers import ops
from fastformers.ops.activation import gelu_reference, silu_mul_reference
from conftest import DEVICE, rel_err


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


# -- Triton kernels -------------------------------------------------------------------------------

TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}
DTYPES = list(TOL)


def _rand(g, *shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(DEVICE, dtype)


def _grads(fn, inputs, grad_out, dtype=None):
    """Output of fn(*inputs) and d(sum(out * grad_out)) / d(inputs), inputs cast to `dtype` if given."""
    leaves = [t.detach().to(dtype or t.dtype).requires_grad_() for t in inputs]
    out = fn(*leaves)
    return (out, *torch.autograd.grad(out, leaves, grad_out.to(out.dtype)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("shape", [(1,), (3, 37), (2, 150, 45)])  # (300, 45): several row tiles per program
def test_gelu_kernel(triton_backend, approximate, with_bias, dtype, shape):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    # float64's own 1 + erf (or tanh) keeps no digit of gelu(x) below x ~ -6, so a lone element is drawn
    # where the reference is exact; in larger tensors such values are far below max |y|
    x = _rand(g, *shape, dtype=dtype, scale=3 if len(shape) > 1 else 1)
    bias, dy = _rand(g, shape[-1], dtype=dtype), _rand(g, *shape, dtype=dtype)
    inputs = (x, bias) if with_bias else (x,)

    def ours(x, bias=None):
        return ops.gelu(x, bias=bias, approximate=approximate)

    def ref(x, bias=None):
        return gelu_reference(x, bias=bias, approximate=approximate)

    got, want = _grads(ours, inputs, dy), _grads(ref, inputs, dy, torch.float64)
    assert got[0].dtype == dtype and got[0].shape == x.shape
    for name, a, b in zip(("y", "dx", "dbias"), got, want):
        err = rel_err(a, b)
        assert err <= TOL[dtype], f"{name}: relative error {err:.2e} (seed {seed})"
    assert triton_backend["gelu"] == 1 and triton_backend["gelu_bwd"] == 1, dict(triton_backend)
    assert triton_backend["gelu_bias_grad"] == int(with_bias), dict(triton_backend)


def test_gelu_kernel_wide_rows_strided_input_and_deterministic_bias_grad(triton_backend):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x = _rand(g, 70, 1500)[:, 3:1103]  # rows 1500 apart, 1100 columns: two column tiles
    bias, dy = _rand(g, 1100), _rand(g, 70, 1100)
    want = _grads(lambda x, b: gelu_reference(x, bias=b), (x, bias), dy, torch.float64)
    first = _grads(lambda x, b: ops.gelu(x, bias=b), (x, bias), dy)
    second = _grads(lambda x, b: ops.gelu(x, bias=b), (x, bias), dy)
    for a, b in zip(first, want):
        assert rel_err(a, b) <= 1e-4, f"relative error {rel_err(a, b):.2e} (seed {seed})"
    assert torch.equal(first[2], second[2]), "bias gradient differs between two identical calls"
    assert triton_backend["gelu_bias_grad"] == 2


def test_gelu_kernel_edge_shapes(triton_backend):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x0 = _rand(g)  # 0-d
    column = _rand(g, 5, 4)[:, 1:2]  # one column, rows 4 apart
    for x in (x0, column):
        y, dx = _grads(ops.gelu, (x,), torch.ones_like(x))
        y_ref, dx_ref = _grads(gelu_reference, (x,), torch.ones_like(x), torch.float64)
        assert y.shape == x.shape and rel_err(y, y_ref) <= 1e-4 and rel_err(dx, dx_ref) <= 1e-4, f"seed {seed}"
    empty, bias = torch.randn(0, 5, device=DEVICE), _rand(g, 5)
    y, dx, dbias = _grads(lambda x, b: ops.gelu(x, bias=b), (empty, bias), empty)
    assert y.shape == (0, 5) and torch.equal(dbias, torch.zeros_like(bias))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "split", "strided_rows"])
@pytest.mark.parametrize("shape", [(1, 1), (5, 33), (2, 7, 130)])
def test_silu_mul_kernel(triton_backend, layout, dtype, shape):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    n = shape[-1]
    rows = shape[:-1]
    if layout == "split":  # the two halves of one fused gate/up projection, as torch.split gives them
        inputs = (_rand(g, *rows, 2 * n, dtype=dtype, scale=3),)

        def make(fused):
            return fused.split(n, dim=-1)
    elif layout == "strided_rows":  # each input its own row stride
        inputs = (_rand(g, *rows, n + 5, dtype=dtype, scale=3), _rand(g, *rows, n + 2, dtype=dtype))

        def make(a, b):
            return a[..., 5:], b[..., :n]
    else:
        inputs = (_rand(g, *shape, dtype=dtype, scale=3), _rand(g, *shape, dtype=dtype))

        def make(a, b):
            return a, b
    dy = _rand(g, *shape, dtype=dtype)
    got = _grads(lambda *t: ops.silu_mul(*make(*t)), inputs, dy)
    want = _grads(lambda *t: silu_mul_reference(*make(*t)), inputs, dy, torch.float64)
    assert got[0].dtype == dtype and got[0].shape == shape
    for i, (a, b) in enumerate(zip(got, want)):
        err = rel_err(a, b)
        assert err <= TOL[dtype], f"output/grad {i}: relative error {err:.2e} (seed {seed})"
    assert dict(triton_backend) == {"silu_mul": 1, "silu_mul_bwd": 1}


@pytest.mark.parametrize("call, reason", [
    (lambda: ops.gelu(torch.randn(3, device=DEVICE), approximate="fast"), "approximate='fast'"),
    (lambda: ops.gelu(torch.randn(3, device=DEVICE, dtype=torch.float64)), "dtype torch.float64"),
    (lambda: ops.gelu(torch.randn(2, 3, device=DEVICE), bias=torch.randn(2, device=DEVICE)), "bias shape"),
    (lambda: ops.gelu(torch.randn(2, 3, device=DEVICE), bias=torch.randn(3, device=DEVICE).half()), "bias dtype"),
    (lambda: ops.silu_mul(torch.randn(2, 3, device=DEVICE), torch.randn(3, device=DEVICE)), "no broadcasting"),
    (lambda: ops.silu_mul(torch.randn(3, device=DEVICE), torch.randn(3, device=DEVICE).half()), "up dtype"),
])
def test_activation_kernels_refuse_with_a_reason(triton_backend, call, reason):
    with pytest.raises(ops.BackendUnavailableError, match=reason):
        call()
    assert not triton_backend


@pytest.mark.parametrize("op_name", ["gelu", "gelu_bwd", "silu_mul", "silu_mul_bwd"])
def test_activation_custom_ops_opcheck(triton_backend, op_name):
    import fastformers.kernels.activation  # noqa: F401  (registers torch.ops.fastformers.*)

    g = torch.Generator().manual_seed(random.randrange(2**31))
    x, bias, dy = _rand(g, 3, 5, scale=3), _rand(g, 5), _rand(g, 3, 5)
    args = {
        "gelu": lambda: (x.requires_grad_(), bias.requires_grad_(), "tanh"),
        "gelu_bwd": lambda: (dy, x, bias, "none", True),
        "silu_mul": lambda: (x.requires_grad_(), dy.requires_grad_()),
        "silu_mul_bwd": lambda: (dy, x, bias.expand(3, 5)),  # up with row stride 0
    }[op_name]()
    torch.library.opcheck(getattr(torch.ops.fastformers, op_name).default, args)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_kernels_at_model_sizes(triton_backend, dtype):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x, bias = _rand(g, 4096, 3072, dtype=dtype, scale=3), _rand(g, 3072, dtype=dtype)
    dy = _rand(g, 4096, 3072, dtype=dtype)
    got = _grads(lambda x, b: ops.gelu(x, bias=b, approximate="tanh"), (x, bias), dy)
    want = _grads(lambda x, b: gelu_reference(x, bias=b, approximate="tanh"), (x, bias), dy, torch.float64)
    for a, b in zip(got, want):
        assert rel_err(a, b) <= TOL[dtype], f"gelu: relative error {rel_err(a, b):.2e} (seed {seed})"
    fused, dy = _rand(g, 2048, 2 * 11008, dtype=dtype, scale=3), _rand(g, 2048, 11008, dtype=dtype)
    got = _grads(lambda f: ops.silu_mul(*f.split(11008, -1)), (fused,), dy)
    want = _grads(lambda f: F.silu(f[:, :11008]) * f[:, 11008:], (fused,), dy, torch.float64)
    for a, b in zip(got, want):
        assert rel_err(a, b) <= TOL[dtype], f"silu_mul: relative error {rel_err(a, b):.2e} (seed {seed})"
