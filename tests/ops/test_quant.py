"""The quantized weight format (ops/quant.py): quantize / dequantize round trips, quantization error,
nibble packing, the reference quantized_linear, and the errors a malformed weight raises."""

from __future__ import annotations

import pytest
import torch

from fastformers import ops
from fastformers.ops.quant import QuantizedWeight, pack_int4, quantize_activations, unpack_int4


def _weight(out, n, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(out, n, generator=g) * 0.05).to(dtype)


def rel_weight_error(w, qw):
    """||dequantize(q(w)) - w|| / ||w|| (Frobenius)."""
    return float((ops.dequantize_weight(qw, torch.float64) - w.double()).norm() / w.double().norm())


@pytest.mark.parametrize("group_size", [None, 32, 64, 128])
@pytest.mark.parametrize("shape", [(37, 75), (96, 256), (64, 130)])
def test_int8_relative_weight_error_below_one_percent(shape, group_size):
    w = _weight(*shape, seed=sum(shape))
    qw = ops.quantize_weight(w, bits=8, group_size=group_size).check()
    err = rel_weight_error(w, qw)
    assert err < 0.01, f"int8 g{group_size} {shape}: relative weight error {err:.4f}"


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_error_is_bounded_by_half_a_step(group_size, symmetric):
    """Round to nearest: every weight is within half a quantization step of its value (a step = its
    group's scale); the relative error is what int4 g128 round-to-nearest gives (~10%)."""
    w = _weight(48, 300, seed=group_size)
    qw = ops.quantize_weight(w, bits=4, group_size=group_size, symmetric=symmetric).check()
    deq = ops.dequantize_weight(qw, torch.float64)
    step = qw.scales.double().repeat_interleave(group_size, dim=1)[:, :300]
    # symmetric: scale = absmax / 7, codes within [-7, 7]; asymmetric: (max - min) / 15: nothing is clamped
    assert bool(((deq - w.double()).abs() <= step / 2 * (1 + 1e-6)).all())
    assert rel_weight_error(w, qw) < 0.15


def test_int4_packing_round_trip_and_layout():
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 16, (5, 9), generator=g, dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.shape == (5, 5) and packed.dtype == torch.uint8
    assert torch.equal(packed[:, 0], codes[:, 0] | (codes[:, 1] << 4))  # column 0 low nibble, 1 high
    assert torch.equal(packed[:, 4], codes[:, 8])  # odd last column: high nibble is padding 0
    assert torch.equal(unpack_int4(packed, 9), codes)


def test_quantize_keeps_dtype_and_shapes():
    w = _weight(40, 70, seed=1, dtype=torch.bfloat16)
    qw = ops.quantize_weight(w, bits=4, group_size=32)
    assert qw.shape == (40, 70) and qw.dtype == torch.bfloat16
    assert qw.qweight.shape == (40, 35) and qw.scales.shape == (40, 3) and qw.mins.shape == (40, 3)
    assert ops.dequantize_weight(qw).dtype == torch.bfloat16
    assert qw.nbytes() == 40 * 35 + 2 * 40 * 3 * 2
    q8 = ops.quantize_weight(w, bits=8)
    assert q8.qweight.dtype == torch.int8 and q8.scales.shape == (40, 1) and q8.mins is None


def test_asymmetric_int8_uses_the_full_range():
    w = _weight(16, 64, seed=5) + 0.3  # all positive: symmetric would waste half the codes
    sym = rel_weight_error(w, ops.quantize_weight(w, bits=8, symmetric=True))
    asym = rel_weight_error(w, ops.quantize_weight(w, bits=8, symmetric=False))
    assert asym < sym


@pytest.mark.parametrize("bits,group_size", [(8, None), (8, 32), (4, 32), (4, 128), (4, None)])
def test_quantized_linear_reference_is_dequantize_then_matmul(bits, group_size):
    w = _weight(33, 130, seed=bits)
    qw = ops.quantize_weight(w, bits=bits, group_size=group_size)
    g = torch.Generator().manual_seed(7)
    x, b = torch.randn(2, 5, 130, generator=g), torch.randn(33, generator=g)
    expected = x.double() @ ops.dequantize_weight(qw, torch.float64).t() + b.double()
    out = ops.linear(x, qw, b)  # a QuantizedWeight sends ops.linear to quantized_linear
    assert out.shape == (2, 5, 33) and out.dtype == torch.float32
    assert float((out.double() - expected).abs().max() / expected.abs().max()) < 1e-5


def test_w8a8_reference_quantizes_activations_per_token():
    w = _weight(24, 96, seed=11)
    qw = ops.quantize_weight(w, bits=8, method="w8a8")
    g = torch.Generator().manual_seed(12)
    x = torch.randn(7, 96, generator=g) * torch.linspace(0.1, 10, 7)[:, None]  # very different row ranges
    xq, sx = quantize_activations(x)
    assert xq.dtype == torch.int8 and int(xq.abs().max()) == 127
    expected = (xq.double() @ qw.qweight.double().t()) * sx.double() * qw.scales.double().t()
    assert torch.allclose(ops.quantized_linear(x, qw).double(), expected, rtol=1e-6, atol=0)
    full = x.double() @ w.double().t()
    assert float((expected - full).norm() / full.norm()) < 0.02  # int8 x int8: close to the float product


def test_bad_quantized_weights_name_the_problem():
    w = _weight(8, 64, seed=0)
    qw = ops.quantize_weight(w, bits=4, group_size=32)
    with pytest.raises(ValueError, match="layer.q_proj: mins are missing"):
        QuantizedWeight(qw.qweight, qw.scales, None, 4, 32, 64).check("layer.q_proj")
    with pytest.raises(ValueError, match=r"qweight must be torch.uint8 of shape \(8, 32\)"):
        QuantizedWeight(qw.qweight[:, :30], qw.scales, qw.mins, 4, 32, 64).check()
    with pytest.raises(ValueError, match=r"scales must be a float tensor of shape \(8, 2\)"):
        QuantizedWeight(qw.qweight, qw.scales[:, :1], qw.mins, 4, 32, 64).check()
    with pytest.raises(ValueError, match="bits=3 is not supported"):
        QuantizedWeight(qw.qweight, qw.scales, qw.mins, 3, 32, 64).check()
    with pytest.raises(ValueError, match="bits=2 is not supported"):
        ops.quantize_weight(w, bits=2)
    with pytest.raises(ValueError, match="group_size=0"):
        ops.quantize_weight(w, bits=4, group_size=0)
    with pytest.raises(ValueError, match="w8a8"):
        ops.quantize_weight(w, bits=4, method="w8a8")
    with pytest.raises(ValueError, match="2-D float tensor"):
        ops.quantize_weight(torch.ones(3, dtype=torch.long))
