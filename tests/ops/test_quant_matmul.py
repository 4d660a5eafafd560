"""ops.quantized_linear on the Triton kernels (kernels/quant_matmul.py) against float64 math.

The reference is the format's own definition: `dequantize_weight` (float32 arithmetic, as the kernels do
it) taken to float64, then a float64 matmul; for W8A8 the activations quantized by ops.quant's
`quantize_activations` and the integer products summed exactly in float64. Every test draws fresh random
weights and inputs (the seed is in the failure message) and runs with the kernels' outputs poisoned (NaN)
before each launch; the launch counters prove which kernel path ran.

Tolerances (max |ours - ref| / max |ref|):
- float32: 1e-5. Float32 accumulation over at most a few hundred products (seen: < 5e-7).
- float16: 2e-3, four half-ulps (2^-11) of the largest output: the output is rounded to float16 and, on the
  tl.dot paths, the dequantized weights too, as the torch reference itself does (seen: < 5e-4, the same as
  the torch reference's own error against float64).
- bfloat16: 2e-2, five bf16 ulps (2^-8): bf16 keeps 8 bits, and Triton's CPU interpreter casts float32 to
  bf16 by truncation (no rounding), so every rounding costs up to a whole ulp here, not half as on a GPU
  (seen: < 9e-3, about twice the torch reference's own error).
"""

from __future__ import annotations

import random

import pytest
import torch
from conftest import DEVICE, rel_err

from fastformers import ops
from fastformers.ops.quant import quantize_activations

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
DTYPES = list(TOL)

# (bits, group_size, symmetric): int8 per channel / grouped, with or without mins; int4 groups of 32/64/128,
# per channel, and a group size that is not a power of two (scales gathered per element)
WEIGHT_ONLY = [(8, None, True), (8, 32, False), (8, 128, True), (4, 32, False), (4, 64, True), (4, 128, False),
               (4, None, False), (4, 40, False)]
# (x shape, out_features, bias): M = 1, 3, 16 (GEMV) and 17, 33 (GEMM); in_features odd, even, not a
# multiple of the group; 3-D inputs
CASES = [((1, 75), 37, True), ((3, 130), 96, False), ((2, 8, 257), 37, True), ((1, 1, 130), 96, True),
         ((17, 257), 96, True), ((3, 11, 75), 37, False)]


def _rand(g, *shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(DEVICE, dtype)


def _reference(x, qw, bias):
    """float64 x @ W^T (+ bias), W as the format defines it; W8A8 through the quantized activations."""
    if qw.method == "w8a8":
        xq, sx = quantize_activations(x)
        out = (xq.double() @ qw.qweight.double().t()) * sx.double() * qw.scales.double().view(1, -1)
    else:
        out = x.double() @ ops.dequantize_weight(qw, torch.float64).t()
    return out if bias is None else out + bias.double()


def _make(g, x_shape, out, bits, group_size, symmetric, dtype, with_bias, method="weight_only"):
    n = x_shape[-1]
    w = _rand(g, out, n, scale=0.05)
    if not symmetric:
        w += _rand(g, out, 1, scale=0.02)  # rows off-centre: the mins matter
    qw = ops.quantize_weight(w.to(dtype), bits=bits, group_size=group_size, symmetric=symmetric, method=method)
    x = _rand(g, *x_shape, dtype=dtype)
    bias = _rand(g, out, dtype=dtype) if with_bias else None
    return x, qw, bias


def _check(x, qw, bias, counts, seed, tol=None):
    got = ops.quantized_linear(x, qw, bias)
    want = _reference(x, qw, bias)
    assert got.dtype == x.dtype and got.shape == (*x.shape[:-1], qw.out_features)
    err = rel_err(got, want)
    assert err <= (tol or TOL[x.dtype]), f"relative error {err:.2e} (seed {seed})"
    return got


def _path(counts, rows):
    """The weight-only path that must have run for `rows` rows of x."""
    if rows <= 16:
        assert counts["quantized_linear_gemv"] == 1 and counts["quantized_linear_gemm"] == 0, dict(counts)
        assert counts["quantized_linear_reduce"] <= 1, dict(counts)
    else:
        assert counts["quantized_linear_gemm"] == 1 and counts["quantized_linear_gemv"] == 0, dict(counts)
        assert counts["quantized_linear_reduce"] == 0, dict(counts)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, out, with_bias", CASES)
@pytest.mark.parametrize("bits, group_size, symmetric", WEIGHT_ONLY)
def test_quantized_linear_kernel(triton_backend, bits, group_size, symmetric, x_shape, out, with_bias, dtype):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x, qw, bias = _make(g, x_shape, out, bits, group_size, symmetric, dtype, with_bias)
    _check(x, qw, bias, triton_backend, seed)
    _path(triton_backend, x.numel() // x.shape[-1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, out, with_bias", CASES + [((33, 130), 96, True)])
def test_quantized_linear_w8a8_kernel(triton_backend, x_shape, out, with_bias, dtype):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x, qw, bias = _make(g, x_shape, out, 8, None, True, dtype, with_bias, method="w8a8")
    # float32: the integer products are exact in both; what is left is the float32 epilogue
    _check(x, qw, bias, triton_backend, seed, tol=1e-6 if dtype == torch.float32 else None)
    assert dict(triton_backend) == {"quantize_activations": 1, "quantized_linear_w8a8": 1}


@pytest.mark.parametrize("dtype", DTYPES)
def test_quantize_activations_kernel_matches_the_reference_exactly(triton_backend, dtype):
    from fastformers.kernels.quant_matmul import (
        quantize_activations as quantize_activations_triton,
    )

    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x = _rand(g, 2, 5, 300, dtype=dtype, scale=3)
    # rows whose x / sx land exactly on .5 (sx = 1 and 2): round half to even, as torch.round
    ties = torch.tensor([127.0, 2.5, -2.5, 0.5, -0.5, 1.5, -1.5, 126.5, -126.5, 3.5])
    x[0, 0, :10] = ties.to(dtype)
    x[0, 0, 10:] = 0
    x[0, 1, :10] = (2 * ties).to(dtype)
    x[0, 1, 10:] = 0
    x[1, 4] = 0  # an all-zero row: sx is clamped to the smallest normal float32
    xq, sx = quantize_activations_triton(x)
    want_q, want_s = quantize_activations(x)
    assert torch.equal(sx, want_s), f"scales differ (seed {seed})"
    assert torch.equal(xq, want_q), f"{int((xq != want_q).sum())} codes differ (seed {seed})"
    assert xq[0, 0, :10].tolist() == [127, 2, -2, 0, 0, 2, -2, 126, -126, 4]
    assert dict(triton_backend) == {"quantize_activations": 1}


def test_gemv_splits_k_and_reduces_in_order(triton_backend):
    """37 channels are one int4 tile of 64: K (257 columns, 3 tiles) is split 3 ways, and the reduce kernel
    sums the float32 partials; two calls give identical bits (no atomics)."""
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x, qw, bias = _make(g, (1, 257), 37, 4, 32, False, torch.float32, True)
    first = _check(x, qw, bias, triton_backend, seed)
    assert dict(triton_backend) == {"quantized_linear_gemv": 1, "quantized_linear_reduce": 1}
    assert torch.equal(first, ops.quantized_linear(x, qw, bias))


@pytest.mark.parametrize("bits, group_size, symmetric", [(4, 32, False), (8, 64, False), (4, 40, True),
                                                         (8, None, True)])
def test_small_tiles_many_programs(triton_backend, monkeypatch, bits, group_size, symmetric):
    """Shrunk blocks: several row and column tiles in the GEMM (grouped order), several K splits and channel
    tiles in the GEMV, tiles that hold part of a group or several groups."""
    from fastformers.kernels import quant_matmul

    monkeypatch.setattr(quant_matmul, "GEMM_BLOCKS", (16, 32, 32))
    monkeypatch.setattr(quant_matmul, "GEMV_BLOCKS", (16, 32))
    monkeypatch.setattr(quant_matmul, "_target_programs", lambda device: 24)  # 6 channel tiles x 4 splits
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    for rows in (70, 5):
        x, qw, bias = _make(g, (rows, 203), 83, bits, group_size, symmetric, torch.float16, True)
        _check(x, qw, bias, triton_backend, seed)
    x, qw, bias = _make(g, (70, 203), 83, 8, None, True, torch.float32, True, method="w8a8")
    _check(x, qw, bias, triton_backend, seed, tol=1e-6)
    assert triton_backend["quantized_linear_gemm"] == 1 and triton_backend["quantized_linear_gemv"] == 1
    assert triton_backend["quantized_linear_reduce"] == 1 and triton_backend["quantized_linear_w8a8"] == 1


def test_strided_inputs_and_weights(triton_backend):
    """x rows with a row stride (read in place) or a strided last dim (copied); a packed weight that is a
    row slice of a wider buffer; transposed (non-contiguous) scales and mins."""
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x, qw, bias = _make(g, (5, 130), 37, 4, 32, False, torch.float32, True)
    wide = torch.zeros(37, 80, dtype=torch.uint8, device=DEVICE)
    wide[:, 7:72] = qw.qweight
    scales = qw.scales.t().contiguous().t()
    mins = qw.mins.t().contiguous().t()
    strided = type(qw)(wide[:, 7:72], scales, mins, qw.bits, qw.group_size, qw.in_features)
    assert not strided.qweight.is_contiguous() and not strided.scales.is_contiguous()
    want = _reference(x, qw, bias)
    padded = torch.zeros(5, 140, device=DEVICE)
    padded[:, 4:134] = x
    every_other = torch.zeros(5, 260, device=DEVICE)
    every_other[:, ::2] = x
    for view in (padded[:, 4:134], every_other[:, ::2]):
        got = ops.quantized_linear(view, strided, bias)
        assert rel_err(got, want) <= TOL[torch.float32], f"seed {seed}"
    assert triton_backend["quantized_linear_gemv"] == 2


def test_ops_linear_sends_a_quantized_weight_to_the_kernel(triton_backend):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x, qw, bias = _make(g, (2, 130), 37, 4, 128, False, torch.float16, True)
    got = ops.linear(x, qw, bias)
    assert rel_err(got, _reference(x, qw, bias)) <= TOL[torch.float16], f"seed {seed}"
    assert triton_backend["quantized_linear_gemv"] == 1


def test_empty_input(triton_backend):
    g = torch.Generator().manual_seed(0)
    x, qw, bias = _make(g, (0, 75), 37, 4, 32, False, torch.float32, True)
    assert ops.quantized_linear(x, qw, bias).shape == (0, 37)
    x, qw, _ = _make(g, (2, 0, 75), 37, 8, None, True, torch.float32, False, method="w8a8")
    assert ops.quantized_linear(x, qw).shape == (2, 0, 37)
    assert not triton_backend


def _qw(bits=4, method="weight_only", n=64, dtype=torch.float32):
    w = torch.randn(16, n, generator=torch.Generator().manual_seed(1), device=DEVICE, dtype=dtype) * 0.1
    return ops.quantize_weight(w, bits=bits, group_size=None if method == "w8a8" else 32, method=method)


@pytest.mark.parametrize("call, reason", [
    (lambda: ops.quantized_linear(torch.randn(2, 64, dtype=torch.float64, device=DEVICE), _qw()),
     "x dtype torch.float64"),
    (lambda: ops.quantized_linear(torch.randn(2, 63, device=DEVICE), _qw()), "64 in_features"),
    (lambda: ops.quantized_linear(torch.randn(2, 64, device=DEVICE), _qw(), torch.randn(16, device=DEVICE).half()),
     "bias dtype"),
    (lambda: ops.quantized_linear(torch.randn(2, 64, device=DEVICE), _qw(), torch.randn(15, device=DEVICE)),
     "bias shape"),
    (lambda: ops.quantized_linear(torch.randn(2, 64, device=DEVICE, requires_grad=True), _qw()), "inference-only"),
    (lambda: ops.quantized_linear(torch.randn(2, 64, device=DEVICE), _qw(dtype=torch.float64)),
     "scales dtype torch.float64"),
    (lambda: ops.quantized_linear(torch.randn(2, 64, device=DEVICE), type(_qw(8))(
        _qw(8).qweight.t().contiguous().t(), _qw(8).scales, None, 8, 32, 64)), "contiguous last dim"),
    (lambda: ops.quantized_linear(torch.randn(2, 64, device=DEVICE), type(_qw())(
        _qw().qweight[:, :20], _qw().scales, _qw().mins, 4, 32, 64)), "qweight must be"),
])
def test_quantized_linear_kernel_refuses_with_a_reason(triton_backend, call, reason):
    with pytest.raises(ops.BackendUnavailableError, match=reason):
        call()
    assert not triton_backend


def test_a_changed_weight_is_checked_again(triton_backend):
    """The predicate remembers a weight's own checks; replacing one of its tensors checks it again."""
    qw, x = _qw(8), torch.randn(2, 64, device=DEVICE)
    ops.quantized_linear(x, qw)
    qw.qweight = qw.qweight.t().contiguous().t()  # same values, columns 16 apart
    with pytest.raises(ops.BackendUnavailableError, match="contiguous last dim"):
        ops.quantized_linear(x, qw)
    qw.qweight = qw.qweight.contiguous()
    ops.quantized_linear(x, qw)
    assert triton_backend["quantized_linear_gemv"] == 2


def test_a_call_without_grad_is_served_under_no_grad(triton_backend):
    x = torch.randn(2, 64, device=DEVICE, requires_grad=True)
    with torch.no_grad():
        ops.quantized_linear(x, _qw())
    assert triton_backend["quantized_linear_gemv"] == 1


@pytest.mark.parametrize("op_name", ["quantized_linear", "quantized_linear_w8a8", "quantize_activations"])
def test_quant_matmul_custom_ops_opcheck(triton_backend, op_name):
    import fastformers.kernels.quant_matmul  # noqa: F401  (registers torch.ops.fastformers.*)

    g = torch.Generator().manual_seed(random.randrange(2**31))
    x, qw, bias = _make(g, (3, 75), 37, 4, 32, False, torch.float16, True)
    x8, q8, bias8 = _make(g, (2, 3, 75), 37, 8, None, True, torch.float32, True, method="w8a8")
    args = {
        "quantized_linear": (x, qw.qweight, qw.scales, qw.mins, bias, 4, 32, 75),
        "quantized_linear_w8a8": (x8, q8.qweight, q8.scales, bias8),
        "quantize_activations": (x8,),
    }[op_name]
    torch.library.opcheck(getattr(torch.ops.fastformers, op_name).default, args)


# -- GPU: model sizes -----------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("out, n", [(4096, 4096), (14336, 4096), (4096, 14336)])
@pytest.mark.parametrize("bits, group_size, method", [(4, 128, "weight_only"), (4, 32, "weight_only"),
                                                      (8, None, "weight_only"), (8, None, "w8a8")])
def test_quantized_linear_at_model_sizes(triton_backend, bits, group_size, method, out, n, dtype):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    w = _rand(g, out, n, dtype=dtype, scale=0.02)
    qw = ops.quantize_weight(w, bits=bits, group_size=group_size, symmetric=None if method != "w8a8" else True,
                             method=method)
    bias = _rand(g, out, dtype=dtype)
    for rows in (1, 7, 16, 2048):
        x = _rand(g, rows, n, dtype=dtype)
        want = _reference(x, qw, bias)
        got = ops.quantized_linear(x, qw, bias)
        err = rel_err(got, want)
        assert err <= TOL[dtype], f"{rows} rows: relative error {err:.2e} (seed {seed})"
