"""The compiled extension fastformers._C (csrc/): each CPU kernel against the float64 reference on every packed
format, odd shapes and both instruction-set paths, its schema and fake implementation (torch.compile), its errors,
and the cpu backend's use of it.

CI builds the extension (`pip install --no-build-isolation -e .`), so these tests fail when it is missing; a
machine that opts out of building it (FASTFORMERS_BUILD_EXT=0) skips them, saying so.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from fastformers import ops
from fastformers.ops import native
from fastformers.ops.quant import quantized_linear_reference

pytestmark = pytest.mark.skipif(os.environ.get("FASTFORMERS_BUILD_EXT") == "0",
                                reason="FASTFORMERS_BUILD_EXT=0: the extension was deliberately not built")


def test_the_extension_is_built_and_loads():
    assert native.available(), native.load_error()
    info = native.kernels()
    assert info["built"] and info["cpu_isa"] in ("avx512", "avx2 (compiler-vectorized portable loops)", "portable")


# (bits, group_size, symmetric): fastformers' formats and those GGUF's Q8_0 / Q4_0 / Q4_1 load into
FORMATS = [(8, None, True), (8, 32, True), (8, 64, False), (4, 32, False), (4, 32, True), (4, 128, False),
           (8, 16, True), (8, 16, False)]  # int8 in groups of 16: GGUF's Q6_K (and the same with mins)


def _case(bits, group, symmetric, n, k, lead, seed):
    g = torch.Generator().manual_seed(seed)
    qw = ops.quantize_weight(torch.randn(n, k, generator=g) * 0.05, bits=bits, group_size=group, symmetric=symmetric)
    # tokens of very different ranges, and a nonzero mean so the mins' share (sum of x per group) matters
    x = (torch.randn(*lead, k, generator=g) + 0.3) * torch.rand(*lead, 1, generator=g) * 4
    return qw, x, torch.randn(n, generator=g)


def _check(got, qw, x, bias):
    expected = quantized_linear_reference(x.double(), qw.to(torch.float64), None if bias is None else bias.double())
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert torch.isfinite(got).all()
    # float32 rounding is relative to the size of the terms summed, not of the result: the kernel sums
    # scale * sum(q x) and min * sum(x) apart, so measure against |scale * q| @ |x| + |min| @ |x|
    from fastformers.ops.quant import _expand, unpack_int4
    codes = (qw.qweight if qw.bits == 8 else unpack_int4(qw.qweight, qw.in_features)).double()
    size = (codes * _expand(qw.scales.double(), qw.group, qw.in_features)).abs()
    if qw.mins is not None:
        size = size + _expand(qw.mins.double(), qw.group, qw.in_features).abs()
    terms = x.double().abs() @ size.t()
    err = float(((got.double() - expected).abs() / terms.clamp_min(1e-30)).max())
    assert err < 1e-5, err  # a single wrong code would be off by about 1 / in_features


@pytest.mark.parametrize("bits, group, symmetric", FORMATS)
@pytest.mark.parametrize("n, k", [(1, 32), (7, 96), (130, 160), (64, 576)])
@pytest.mark.parametrize("lead", [(1,), (3,), (2, 5), (17,), (70,)])
def test_quant_linear_matches_the_float64_reference(bits, group, symmetric, n, k, lead):
    qw, x, bias = _case(bits, group, symmetric, n, k, lead, seed=n * 1000 + k + len(lead))
    args = (qw.qweight, qw.scales, qw.mins, qw.bits, qw.group)
    _check(torch.ops.fastformers_ext.quant_linear(x, *args, bias), qw, x, bias)
    _check(torch.ops.fastformers_ext.quant_linear(x, *args, None), qw, x, None)


@pytest.mark.parametrize("n", [3, 1000])
def test_quant_linear_prefill_in_inference_mode_over_many_panels(n):
    """More than 16 tokens run as GEMMs on dequantized panels, each thread its own (here several panels per thread for
    n = 1000): under torch.inference_mode too (the worker threads enter it), the same values as outside it."""
    qw, x, bias = _case(4, 32, False, n, 576, (40,), seed=n)
    args = (qw.qweight, qw.scales, qw.mins, qw.bits, qw.group)
    plain = torch.ops.fastformers_ext.quant_linear(x, *args, bias)
    _check(plain, qw, x, bias)
    with torch.inference_mode():
        assert torch.equal(torch.ops.fastformers_ext.quant_linear(x, *args, bias), plain)


def _check_a8(got, qw, x, bias):
    """blockwise_a8 against its float64 reference: the activations quantized per block of 32 (in float32, as the
    kernel does), then the dequantized product; rounding measured against the size of the terms summed."""
    from fastformers.ops.quant import quantize_activations_blockwise

    a8 = dataclasses.replace(qw, method="blockwise_a8")
    expected = quantized_linear_reference(x.double(), a8.to(torch.float64), None if bias is None else bias.double())
    assert got.shape == expected.shape and got.dtype == torch.float32 and torch.isfinite(got).all()
    terms = quantize_activations_blockwise(x.double()).abs() @ ops.dequantize_weight(qw, torch.float64).abs().t()
    err = float(((got.double() - expected).abs() / (terms + 1e-30)).max())
    assert err < 1e-5, err


@pytest.mark.parametrize("bits, group, symmetric", FORMATS)
@pytest.mark.parametrize("n, k", [(1, 32), (7, 96), (130, 160), (64, 576)])
@pytest.mark.parametrize("lead", [(1,), (3,), (2, 5), (17,)])
def test_quant_linear_a8_matches_the_float64_reference(bits, group, symmetric, n, k, lead):
    qw, x, bias = _case(bits, group, symmetric, n, k, lead, seed=n * 1000 + k + len(lead))
    args = (qw.qweight, qw.scales, qw.mins, qw.bits, qw.group)
    _check_a8(torch.ops.fastformers_ext.quant_linear_a8(x, *args, bias), qw, x, bias)
    _check_a8(torch.ops.fastformers_ext.quant_linear_a8(x, *args, None), qw, x, None)


def test_quant_linear_a8_on_zero_blocks_outliers_and_the_cpu_backend(monkeypatch):
    qw, x, bias = _case(4, 32, False, 20, 128, (3,), seed=13)
    x[0, :32] = 0  # a block of zeros: its scale is the smallest normal float, its codes 0
    x[1, 40] = 1e4  # an outlier: its block's other values round to 0
    x[2] = -x[2]
    _check_a8(torch.ops.fastformers_ext.quant_linear_a8(x, qw.qweight, qw.scales, qw.mins, 4, 32, bias), qw, x, bias)
    a8 = dataclasses.replace(qw, method="blockwise_a8")
    assert ops.quantized_linear.choose("cpu", (x, a8, bias)) == "cpu"
    calls = []
    real = torch.ops.fastformers_ext.quant_linear_a8
    monkeypatch.setattr(torch.ops.fastformers_ext, "quant_linear_a8", lambda *a: calls.append(a[4]) or real(*a))
    with ops.use_backend("cpu"):
        got = ops.quantized_linear(x, a8, bias)
    assert calls == [4]
    _check_a8(got, qw, x, bias)


def test_quant_linear_a8_schema_fake_and_errors():
    qw, x, bias = _case(8, 32, True, 10, 64, (3,), seed=17)
    torch.library.opcheck(torch.ops.fastformers_ext.quant_linear_a8.default,
                          (x, qw.qweight, qw.scales, qw.mins, 8, 32, bias))
    with pytest.raises(RuntimeError, match="fastformers_ext::quant_linear_a8: bits=3"):
        torch.ops.fastformers_ext.quant_linear_a8(x, qw.qweight, qw.scales, qw.mins, 3, 32, None)


def _half_exact(qw):
    """qw with its scales and mins rounded to float16 values (kept float32), as GGUF's Q8_0 / Q4_0 / Q4_1 hold them."""
    return dataclasses.replace(qw, scales=qw.scales.half().float(),
                               mins=None if qw.mins is None else qw.mins.half().float())


@pytest.mark.parametrize("bits, group, symmetric", FORMATS)
@pytest.mark.parametrize("lead", [(1,), (5,), (20,)])
def test_both_kernels_read_float16_scales_and_mins(bits, group, symmetric, lead):
    from fastformers.ops.quant import with_half_scales

    qw, x, bias = _case(bits, group, symmetric, 70, 160, lead, seed=23 + bits)
    qw = _half_exact(qw)
    half = with_half_scales(qw)
    assert half.scales.dtype == torch.float16 and (half.mins is None or half.mins.dtype == torch.float16)
    args = (half.qweight, half.scales, half.mins, bits, qw.group, bias)
    _check(torch.ops.fastformers_ext.quant_linear(x, *args), qw, x, bias)
    _check_a8(torch.ops.fastformers_ext.quant_linear_a8(x, *args), qw, x, bias)
    assert ops.quantized_linear.choose("cpu", (x, half, bias)) == "cpu"


def test_with_half_scales_only_where_exact():
    from fastformers.ops.quant import with_half_scales

    qw = ops.quantize_weight(torch.randn(8, 64), bits=4, group_size=32)
    assert with_half_scales(qw) is qw  # float32 scales that float16 would round
    exact = _half_exact(qw)
    half = with_half_scales(exact)
    assert torch.equal(ops.dequantize_weight(half, torch.float32), ops.dequantize_weight(exact))
    with pytest.raises(RuntimeError, match="mins must have the scales' dtype"):
        torch.ops.fastformers_ext.quant_linear(torch.randn(2, 64), half.qweight, half.scales, exact.mins, 4, 32, None)


def test_an_empty_batch_and_non_contiguous_inputs():
    qw, x, bias = _case(4, 32, False, 9, 64, (6,), seed=3)
    empty = torch.ops.fastformers_ext.quant_linear(x[:0], qw.qweight, qw.scales, qw.mins, 4, 32, bias)
    assert empty.shape == (0, 9)
    strided = torch.randn(6, 128)[:, ::2]  # a view with stride 2 along the inputs
    got = torch.ops.fastformers_ext.quant_linear(strided, qw.qweight, qw.scales, qw.mins, 4, 32, bias)
    _check(got, qw, strided, bias)


_PORTABLE = """
import dataclasses
import torch
from fastformers import ops
from fastformers.ops import native
from fastformers.ops.quant import quantized_linear_reference
assert native.cpu_isa() != "avx512", native.cpu_isa()
g = torch.Generator().manual_seed(0)
for bits, group, sym in %r:
    qw = ops.quantize_weight(torch.randn(66, 192, generator=g), bits=bits, group_size=group, symmetric=sym)
    for m in (1, 5, 20):
        x = torch.randn(m, 192, generator=g) + 0.2
        got = torch.ops.fastformers_ext.quant_linear(x, qw.qweight, qw.scales, qw.mins, bits, qw.group, None)
        ref = quantized_linear_reference(x.double(), qw.to(torch.float64))
        terms = x.double().abs() @ ops.dequantize_weight(qw, torch.float64).abs().t() + 1
        assert float(((got.double() - ref).abs() / terms).max()) < 1e-5, (bits, group, m)
        a8 = dataclasses.replace(qw, method="blockwise_a8")
        got = torch.ops.fastformers_ext.quant_linear_a8(x, qw.qweight, qw.scales, qw.mins, bits, qw.group, None)
        ref = quantized_linear_reference(x.double(), a8.to(torch.float64))
        assert float(((got.double() - ref).abs() / terms).max()) < 1e-5, ("a8", bits, group, m)
        exact = dataclasses.replace(qw, scales=qw.scales.half().float(),
                                    mins=None if qw.mins is None else qw.mins.half().float())
        ref = quantized_linear_reference(x.double(), exact.to(torch.float64))
        mins = None if qw.mins is None else qw.mins.half()
        for kernel in (torch.ops.fastformers_ext.quant_linear, torch.ops.fastformers_ext.quant_linear_a8):
            got = kernel(x, qw.qweight, qw.scales.half(), mins, bits, qw.group, None)
            if kernel is torch.ops.fastformers_ext.quant_linear_a8:
                ref = quantized_linear_reference(x.double(), dataclasses.replace(exact, method="blockwise_a8").to(
                    torch.float64))
            assert float(((got.double() - ref).abs() / terms).max()) < 1e-5, ("half", bits, group, m)
assert torch.ops.fastformers_ext.cpu_a8_isa() == "portable"
print("ok", native.cpu_isa())
""" % (FORMATS,)


def test_the_portable_path_matches_too():
    """FASTFORMERS_CPU_PORTABLE=1 (read when the library loads, hence a fresh process) runs the loops every CPU has."""
    env = dict(os.environ, FASTFORMERS_CPU_PORTABLE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _PORTABLE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr[-2000:]


def test_schema_and_fake_implementation():
    """opcheck runs the op through its schema, autograd registration, fake tensor and Dynamo checks."""
    qw, x, bias = _case(4, 32, False, 10, 64, (3,), seed=5)
    torch.library.opcheck(torch.ops.fastformers_ext.quant_linear.default,
                          (x, qw.qweight, qw.scales, qw.mins, 4, 32, bias))
    with torch._subclasses.fake_tensor.FakeTensorMode():
        fake = torch.ops.fastformers_ext.quant_linear(torch.empty(2, 7, 64), torch.empty(10, 32, dtype=torch.uint8),
                                                  torch.empty(10, 2), torch.empty(10, 2), 4, 32, None)
    assert fake.shape == (2, 7, 10)


@pytest.mark.parametrize("call, match", [
    (lambda qw, x: torch.ops.fastformers_ext.quant_linear(x.double(), qw.qweight, qw.scales, qw.mins, 4, 32, None),
     "x must be float32 and scales float32 or float16"),
    (lambda qw, x: torch.ops.fastformers_ext.quant_linear(x, qw.qweight, qw.scales, qw.mins, 3, 32, None), "bits=3"),
    (lambda qw, x: torch.ops.fastformers_ext.quant_linear(x, qw.qweight, qw.scales, qw.mins, 4, 48, None),
     "multiples of 32"),
    (lambda qw, x: torch.ops.fastformers_ext.quant_linear(x, qw.qweight, qw.scales, None, 4, 32, None), "need mins"),
    (lambda qw, x: torch.ops.fastformers_ext.quant_linear(x, qw.qweight, qw.scales[:, :1], qw.mins, 4, 32, None),
     "scales"),
    (lambda qw, x: torch.ops.fastformers_ext.quant_linear(x[:, :32], qw.qweight, qw.scales, qw.mins, 4, 32, None),
     "does not hold 4-bit codes for 32 inputs"),
    (lambda qw, x: torch.ops.fastformers_ext.quant_linear(x, qw.qweight, qw.scales, qw.mins, 4, 32, torch.ones(3)),
     "bias must be float32 of shape"),
])
def test_bad_arguments_are_refused_by_name(call, match):
    qw, x, _ = _case(4, 32, False, 10, 64, (3,), seed=7)
    with pytest.raises(RuntimeError, match=match):
        call(qw, x)


def test_the_cpu_backend_runs_weight_only_formats_on_the_kernel(monkeypatch):
    qw, x, bias = _case(4, 32, False, 12, 96, (2, 3), seed=11)
    assert ops.quantized_linear.choose("cpu", (x, qw, bias)) == "cpu"
    assert ops.quantized_linear.choose("cpu", (x.bfloat16(), qw.to(torch.bfloat16))) == "torch"  # float32 only
    calls = []
    real = torch.ops.fastformers_ext.quant_linear

    class Spy:
        def __call__(self, *args):
            calls.append(args[4])
            return real(*args)

    monkeypatch.setattr(torch.ops.fastformers_ext, "quant_linear", Spy())
    with ops.use_backend("cpu"):
        got = ops.quantized_linear(x, qw, bias)
    assert calls == [4]
    _check(got, qw, x, bias)


@pytest.mark.parametrize("shape", [(1, 576), (3, 7, 96), (2, 5, 33), (4, 1)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm_matches_the_float64_reference(shape, with_residual):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=g) * 3 + 0.5
    w = torch.randn(shape[-1], generator=g)
    r = torch.randn(*shape, generator=g) if with_residual else None
    with torch.no_grad(), ops.use_backend("cpu"):
        got = ops.rms_norm(x, w, 1e-6, residual=r)
    want = ops.rms_norm_reference(x.double(), w.double(), 1e-6, residual=None if r is None else r.double())
    got, want = (got, want) if r is not None else ((got,), (want,))
    for a, b in zip(got, want):
        assert a.dtype == torch.float32 and a.shape == shape
        assert float((a.double() - b).abs().max() / b.abs().max()) < 1e-6


@pytest.mark.parametrize("batch, heads, kv_heads, seq, head_dim, rot, batched_cos", [
    (1, 9, 3, 1, 64, 64, False), (2, 4, 2, 5, 32, 32, True), (1, 3, 3, 7, 48, 16, False), (3, 2, 1, 2, 8, 8, True)])
def test_rotary_matches_the_float64_reference_on_transposed_views(batch, heads, kv_heads, seq, head_dim, rot,
                                                                   batched_cos):
    g = torch.Generator().manual_seed(heads * seq + rot)
    # (batch, seq, heads, head_dim) projections seen as (batch, heads, seq, head_dim), as a decoder hands them over
    q = torch.randn(batch, seq, heads, head_dim, generator=g).transpose(1, 2)
    k = torch.randn(batch, seq, kv_heads, head_dim, generator=g).transpose(1, 2)
    angles = torch.rand(batch if batched_cos else 1, seq, rot // 2, generator=g) * 6
    cos, sin = torch.cat((angles.cos(),) * 2, -1), torch.cat((angles.sin(),) * 2, -1)
    if not batched_cos:
        cos, sin = cos[0], sin[0]
    with torch.no_grad(), ops.use_backend("cpu"):
        got = ops.rotary(q, k, cos, sin)
    want = ops.rotary_reference(q.double(), k.double(), cos.double(), sin.double())
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.is_contiguous()
        assert float((a.double() - b).abs().max()) < 1e-5


def test_norm_and_rotary_kernels_refuse_what_they_cannot_run():
    x, w = torch.randn(2, 8), torch.randn(8)
    with pytest.raises(RuntimeError, match="does not match the last dimension"):
        torch.ops.fastformers_ext.rms_norm(x, torch.randn(7), 1e-6)
    with pytest.raises(RuntimeError, match="must be float32"):
        torch.ops.fastformers_ext.rms_norm(x.double(), w.double(), 1e-6)
    with pytest.raises(RuntimeError, match="residual"):
        torch.ops.fastformers_ext.add_rms_norm(x, torch.randn(3, 8), w, 1e-6)
    q = torch.randn(1, 2, 3, 8)
    with pytest.raises(RuntimeError, match="do not fit"):
        torch.ops.fastformers_ext.rotary(q, q, torch.randn(4, 8), torch.randn(4, 8))
    # training (autograd) and other dtypes go to the reference in auto mode
    wg = torch.randn(8, requires_grad=True)
    assert ops.rms_norm.choose("cpu", (x, wg, 1e-6)) == "torch"
    with torch.no_grad():
        assert ops.rms_norm.choose("cpu", (x, wg, 1e-6)) == "cpu"
    assert ops.rms_norm.choose("cpu", (x.bfloat16(), w.bfloat16(), 1e-6)) == "torch"
    assert ops.rotary.choose("cpu", (q.double(), q.double(), torch.randn(3, 8).double(), torch.randn(3, 8).double())) \
        == "torch"


def test_fakes_of_norm_and_rotary():
    x, w = torch.randn(2, 3, 16), torch.randn(16)
    torch.library.opcheck(torch.ops.fastformers_ext.rms_norm.default, (x, w, 1e-5))
    torch.library.opcheck(torch.ops.fastformers_ext.add_rms_norm.default, (x, torch.randn(2, 3, 16), w, 1e-5))
    q = torch.randn(1, 3, 2, 8)
    torch.library.opcheck(torch.ops.fastformers_ext.rotary.default, (q, q.clone(), torch.randn(2, 8), torch.randn(2, 8)))


@pytest.mark.parametrize("batch, heads, kv_heads, kv_len, head_dim, mask", [
    (1, 9, 3, 80, 64, "none"), (2, 4, 2, 33, 32, "batched"), (3, 2, 1, 5, 8, "shared"), (2, 4, 4, 17, 16, "empty-row")])
def test_decode_attention_matches_the_float64_reference(batch, heads, kv_heads, kv_len, head_dim, mask):
    g = torch.Generator().manual_seed(kv_len * heads)
    q = torch.randn(batch, heads, 1, head_dim, generator=g)
    k, v = (torch.randn(batch, kv_heads, kv_len, head_dim, generator=g) for _ in range(2))
    keep = None
    if mask != "none":
        keep = torch.rand(batch if mask != "shared" else 1, kv_len, generator=g) > 0.3
        keep[:, 0] = True
        if mask == "empty-row":
            keep[1] = False  # a sequence that keeps no key: zeros
    with torch.no_grad(), ops.use_backend("cpu"):
        assert ops.attention.choose("cpu", (q, k, v), {"attention_mask": keep, "causal": True}) == "cpu"
        got = ops.attention(q, k, v, attention_mask=keep, causal=True, scale=0.3)
    want = ops.attention_reference(q.double(), k.double(), v.double(), attention_mask=keep, causal=True, scale=0.3)
    assert got.shape == (batch, heads, 1, head_dim)
    if mask == "empty-row":
        assert torch.equal(got[1], torch.zeros_like(got[1]))
        got, want = got[:1], want[:1]
    assert float((got.double() - want).abs().max()) < 1e-5


def test_decode_attention_declines_what_it_does_not_serve():
    q, k = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 5, 8)
    assert ops.attention.choose("cpu", (q, k, k)) == "torch"  # three queries: not a decode step
    assert ops.attention.choose("cpu", (q[:, :, :1].double(), k.double(), k.double())) == "torch"
    with pytest.raises(RuntimeError, match="keep-mask must be"):
        torch.ops.fastformers_ext.decode_attention(q[:, :, :1], k, k, torch.ones(1, 4, dtype=torch.bool), 1.0)
    torch.library.opcheck(torch.ops.fastformers_ext.decode_attention.default,
                          (q[:, :, :1].contiguous(), k, k.clone(), torch.ones(1, 5, dtype=torch.bool), 0.5))
