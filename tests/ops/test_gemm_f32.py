"""fastformers_ext.pack_f32 / linear_f32 (csrc/cpu/gemm_f32.cpp, the one-call encoder's float32 GEMM on AVX2 CPUs)
and pack_q8 / linear_block8 (its blockwise int8 GEMM on the same tiles) against float64 on odd shapes: tokens not a
multiple of its 6-row tiles, outputs not a multiple of its 16-wide panels, the GELU and residual epilogues."""

from __future__ import annotations

import os

import pytest
import torch

from fastformers.ops import native

pytestmark = [
    pytest.mark.skipif(os.environ.get("FASTFORMERS_BUILD_EXT") == "0",
                       reason="FASTFORMERS_BUILD_EXT=0: the extension was deliberately not built"),
    pytest.mark.skipif(native.available() and not torch.ops.fastformers_ext.gemm_f32_usable(),
                       reason="gemm_f32 needs AVX2 with FMA, which this CPU lacks"),
]

ACTS = {0: lambda y: y, 1: lambda y: torch.nn.functional.gelu(y),
        2: lambda y: torch.nn.functional.gelu(y, approximate="tanh")}


def _ext():
    return torch.ops.fastformers_ext


@pytest.mark.parametrize("m, k, n", [(1, 7, 1), (5, 32, 16), (13, 384, 1152), (6, 100, 37), (64, 65, 300), (0, 8, 5)])
@pytest.mark.parametrize("act", [0, 1, 2])
@pytest.mark.parametrize("with_bias, with_residual", [(True, True), (False, False), (True, False)])
def test_linear_f32_matches_float64(m, k, n, act, with_bias, with_residual):
    g = torch.Generator().manual_seed(m * 1000 + k * 10 + n + act)
    x = torch.randn(m, k, generator=g) * 2
    w = torch.randn(n, k, generator=g) * k ** -0.5
    b = torch.randn(n, generator=g) if with_bias else None
    r = torch.randn(m, n, generator=g) if with_residual else None
    packed = _ext().pack_f32(w)
    assert packed.shape == ((n + 15) // 16, k, 16) and packed.dtype == torch.float32
    got = _ext().linear_f32(x, packed, n, b, r, act)
    ref = x.double() @ w.double().t() + (b.double() if with_bias else 0)
    ref = ACTS[act](ref) + (r.double() if with_residual else 0)
    assert got.shape == (m, n) and got.dtype == torch.float32
    if m:
        # float32 sums in another order, and the GELU's erf within 1.5e-7 (Abramowitz & Stegun 7.1.26, as oneDNN's)
        assert float((got.double() - ref).abs().max() / ref.abs().max()) <= 2e-6


def test_packing_lays_out_panels_of_16_outputs():
    w = torch.randn(20, 3)
    packed = _ext().pack_f32(w)
    assert torch.equal(packed[0], w[:16].t()) and torch.equal(packed[1, :, :4], w[16:].t())
    assert not packed[1, :, 4:].any()  # the outputs past N are zero


def test_leading_dims_and_a_strided_input():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 40, generator=g)[..., :33]  # rows 40 apart
    w = torch.randn(18, 33, generator=g)
    got = _ext().linear_f32(x, _ext().pack_f32(w), 18, None, None, 0)
    ref = x.double() @ w.double().t()
    assert got.shape == (2, 3, 18) and float((got - ref).abs().max() / ref.abs().max()) <= 2e-6


@pytest.mark.parametrize("call, match", [
    (lambda e, x, w, p: e.linear_f32(x.double(), p, 20, None, None, 0), "x must be float32"),
    (lambda e, x, w, p: e.linear_f32(x, w, 20, None, None, 0), r"the packed weight must be contiguous float32 \(2, 8, 16\)"),
    (lambda e, x, w, p: e.linear_f32(x, p, 40, None, None, 0), r"\(3, 8, 16\) for 40 outputs"),
    (lambda e, x, w, p: e.linear_f32(x, p, 20, torch.ones(19), None, 0), "bias must be contiguous float32 of 20"),
    (lambda e, x, w, p: e.linear_f32(x, p, 20, None, torch.ones(4, 19), 0), "residual must be"),
    (lambda e, x, w, p: e.linear_f32(x, p, 20, None, None, 3), "act=3"),
    (lambda e, x, w, p: e.pack_f32(w.double()), "pack_f32: expected a strided float32"),
])
def test_bad_arguments_are_named(call, match):
    x, w = torch.randn(4, 8), torch.randn(20, 8)
    with pytest.raises(RuntimeError, match=match):
        call(_ext(), x, w, _ext().pack_f32(w))


# -- gemm_block8: blockwise_a8 (8-bit codes in groups of 32) on widened int8 panels ----------------------------------
def _block8_reference(x, codes, scales_t, bias, act, residual):
    from fastformers.ops.quant import quantize_activations_blockwise
    w = codes.double() * scales_t.t().double().repeat_interleave(32, 1)
    y = quantize_activations_blockwise(x.double()) @ w.t() + (bias.double() if bias is not None else 0)
    return ACTS[act](y) + (residual.double() if residual is not None else 0)


@pytest.mark.parametrize("m, k, n", [(1, 32, 1), (13, 384, 1152), (6, 96, 37), (64, 64, 300), (0, 32, 5)])
@pytest.mark.parametrize("act", [0, 1, 2])
@pytest.mark.parametrize("with_bias, with_residual", [(True, True), (False, False)])
def test_linear_block8_matches_float64(m, k, n, act, with_bias, with_residual):
    g = torch.Generator().manual_seed(m * 1000 + k * 10 + n + act)
    x = torch.randn(m, k, generator=g) * 2
    x[:, :32] *= 50  # one block of large values: the other blocks keep their own scales
    codes = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    scales_t = torch.rand(k // 32, n, generator=g) * 1e-2 + 1e-4
    b = torch.randn(n, generator=g) if with_bias else None
    r = torch.randn(m, n, generator=g) if with_residual else None
    packed = _ext().pack_q8(codes)
    assert packed.shape == ((n + 15) // 16, k, 16) and packed.dtype == torch.int8
    got = _ext().linear_block8(x, packed, n, scales_t, b, r, act)
    ref = _block8_reference(x, codes, scales_t, b, act, r)
    assert got.shape == (m, n) and got.dtype == torch.float32
    if m:
        # float32 sums of float32 products (codes times scales, dequantized activations) in another order; a GELU of
        # a large negative sum is 0 in float64 and a denormal here, hence the floor of 1
        assert float((got.double() - ref).abs().max() / max(float(ref.abs().max()), 1.0)) <= 3e-6


def test_pack_q8_lays_out_panels_and_unpacks():
    from fastformers.ops.encoder import unpack_q8
    codes = torch.randint(-128, 128, (20, 3), dtype=torch.int8)
    packed = _ext().pack_q8(codes)
    assert torch.equal(packed[0], codes[:16].t()) and torch.equal(packed[1, :, :4], codes[16:].t())
    assert not packed[1, :, 4:].any()
    assert torch.equal(unpack_q8(packed, 20), codes)


@pytest.mark.parametrize("call, match", [
    (lambda e, x, p, s: e.linear_block8(x[:, :40], p, 20, s, None, None, 0), "in_features must be a multiple of 32"),
    (lambda e, x, p, s: e.linear_block8(x, p.float(), 20, s, None, None, 0), r"packed codes must be contiguous int8 "
                                                                              r"\(2, 64, 16\)"),
    (lambda e, x, p, s: e.linear_block8(x, p, 20, s.t(), None, None, 0), r"scales must be contiguous float32 \(2, 20\)"),
    (lambda e, x, p, s: e.linear_block8(x, p, 20, s, torch.ones(3), None, 0), "bias must be contiguous float32 of 20"),
    (lambda e, x, p, s: e.linear_block8(x, p, 20, s, None, None, 5), "act=5"),
    (lambda e, x, p, s: e.pack_q8(p.float()), "pack_q8: expected strided int8 codes"),
])
def test_block8_bad_arguments_are_named(call, match):
    x, codes, scales_t = torch.randn(4, 64), torch.randint(-127, 128, (20, 64), dtype=torch.int8), torch.rand(2, 20)
    with pytest.raises(RuntimeError, match=match):
        call(_ext(), x, _ext().pack_q8(codes), scales_t)
