"""The cpu backend's quantized_linear (W8A8 through torch._int_mm; weight-only formats: test_native.py) against the float64 reference, and the auto rule
that sends CPU tensors to it."""

from __future__ import annotations

import pytest
import torch

from fastformers import ops
from fastformers.ops.quant import quantized_linear_reference


@pytest.mark.parametrize("shape, out_features", [((1, 384), 1536), ((2, 13, 383), 7), ((3, 1, 5), 2), ((0, 16), 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_w8a8_cpu_matches_reference(shape, out_features, dtype):
    g = torch.Generator().manual_seed(sum(shape) + out_features)
    w = torch.randn(out_features, shape[-1], generator=g) * 0.05
    qw = ops.quantize_weight(w, bits=8, method="w8a8")
    # rows of very different ranges, so per-token activation scales matter
    x = (torch.randn(*shape, generator=g) * torch.rand(*shape[:-1], 1, generator=g) * 10).to(dtype)
    b = torch.randn(out_features, generator=g).to(dtype)
    with ops.use_backend("cpu"):
        got = ops.quantized_linear(x, qw.to(dtype), b)
    expected = quantized_linear_reference(x.double(), qw.to(torch.float64), b.double())
    assert got.shape == (*shape[:-1], out_features) and got.dtype == dtype
    if got.numel() == 0:
        return  # an empty batch: the right shape and dtype is all there is to check
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    scale = expected.abs().max().clamp_min(1e-12)
    assert float((got.double() - expected).abs().max() / scale) < tol


def test_auto_sends_cpu_w8a8_to_the_cpu_backend_and_torch_forces_the_reference(monkeypatch):
    w8a8 = ops.quantize_weight(torch.randn(8, 32), bits=8, method="w8a8")
    odd = ops.quantize_weight(torch.randn(8, 40), bits=8)  # 40 inputs: not a multiple of the kernels' 32
    x = torch.randn(2, 32)
    assert ops.quantized_linear.choose("cpu", (x, w8a8)) == "cpu"
    assert ops.quantized_linear.choose("cpu", (torch.randn(2, 40), odd)) == "torch"  # no cpu kernel for that shape
    monkeypatch.setenv("FASTFORMERS_BACKEND", "torch")
    assert ops.quantized_linear.choose("cpu", (x, w8a8)) == "torch"
    monkeypatch.setenv("FASTFORMERS_BACKEND", "cpu")
    with pytest.raises(ops.BackendUnavailableError, match="multiples of 32"):
        ops.quantized_linear(torch.randn(2, 40), odd)
