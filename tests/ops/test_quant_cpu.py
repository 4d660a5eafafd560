"""The cpu backend's quantized_linear (W8A8 through int8_matmul: torch._int_mm, or exact float32 GEMMs on CPUs
without VNNI; weight-only formats: test_native.py) against the float64 reference, and the auto rule that sends CPU
tensors to it."""

from __future__ import annotations

import pytest
import torch

from fastformers import ops
from fastformers.ops import quant
from fastformers.ops.quant import int8_matmul, quantized_linear_reference


@pytest.fixture(params=["int_mm", "float32 blocks"])
def int8_sums(request, monkeypatch):
    """Both ways int8_matmul sums: torch._int_mm (CPUs with VNNI or AMX) and exact float32 GEMMs (elsewhere)."""
    monkeypatch.setattr(quant, "int_mm_is_fast", lambda: request.param == "int_mm")
    return request.param


@pytest.mark.parametrize("m, k, n", [(5, 2500, 7), (17, 1024, 33), (1, 1025, 1), (3, 0, 2)])
def test_int8_matmul_sums_exactly(int8_sums, m, k, n):
    """The largest products (-127 and 127 everywhere, of one sign per row: the partial sums reach 1024 * 127^2, just
    under 2^24, in every block) and random codes: the int32 sums equal int64 arithmetic."""
    g = torch.Generator().manual_seed(m * k + n)
    signs = torch.randint(0, 2, (m, 1), generator=g) * 2 - 1
    extreme = (signs * 127).expand(m, k).to(torch.int8), torch.full((n, k), 127, dtype=torch.int8)
    randoms = (torch.randint(-127, 128, (m, k), generator=g, dtype=torch.int8),
               torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8))
    for xq, wq in (extreme, randoms):
        got = int8_matmul(xq.contiguous(), wq)
        assert got.dtype == torch.int32 and got.shape == (m, n)
        assert torch.equal(got.long(), xq.long() @ wq.long().t())


@pytest.mark.parametrize("shape, out_features", [((1, 384), 1536), ((2, 13, 383), 7), ((3, 1, 5), 2), ((0, 16), 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_w8a8_cpu_matches_reference(int8_sums, shape, out_features, dtype):
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
