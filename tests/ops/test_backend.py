"""Backend selection: env var, use_backend, auto rule, and no silent fallback."""

import pytest
import torch

from fastformers import ops
from fastformers.ops.backend import Op


def test_default_backend_is_auto_and_cpu_runs_torch(monkeypatch):
    monkeypatch.delenv("FASTFORMERS_BACKEND", raising=False)
    assert ops.current_backend() == "auto"
    assert ops.layer_norm.pick("cpu") is ops.layer_norm.impls["torch"]


def test_env_var_and_context_manager(monkeypatch):
    monkeypatch.setenv("FASTFORMERS_BACKEND", "torch")
    assert ops.current_backend() == "torch"
    with ops.use_backend("auto"):
        assert ops.current_backend() == "auto"
    assert ops.current_backend() == "torch"


def test_unknown_backend_is_named(monkeypatch):
    monkeypatch.setenv("FASTFORMERS_BACKEND", "tpu")
    with pytest.raises(ValueError, match="FASTFORMERS_BACKEND='tpu'"):
        ops.gelu(torch.randn(3))
    with pytest.raises(ValueError, match="use_backend='fast'"):
        with ops.use_backend("fast"):
            pass


def test_unavailable_backend_raises_instead_of_falling_back(monkeypatch):
    monkeypatch.delenv("FASTFORMERS_BACKEND", raising=False)
    reason = ops.backend_status("cuda")
    assert reason is not None  # no CUDA device and no extension on CPU machines
    with pytest.raises(ops.BackendUnavailableError, match="'cuda' is not available"):
        with ops.use_backend("cuda"):
            pass
    monkeypatch.setenv("FASTFORMERS_BACKEND", "cuda")
    with pytest.raises(ops.BackendUnavailableError, match="cuda"):
        ops.linear(torch.randn(2, 3), torch.randn(4, 3))


def test_op_without_forced_implementation_raises(monkeypatch):
    fake = Op("fake", lambda x: x)
    monkeypatch.setattr("fastformers.ops.backend.backend_status", lambda name: None)
    with ops.use_backend("triton"):
        with pytest.raises(ops.BackendUnavailableError, match="op 'fake' has no 'triton' implementation"):
            fake(torch.randn(2))


def test_auto_prefers_registered_fast_backend_on_cuda_tensors(monkeypatch):
    fake = Op("fake", lambda x: "torch")
    fake.register("triton")(lambda x: "triton")
    monkeypatch.setattr("fastformers.ops.backend.backend_status", lambda name: None)
    assert fake.pick("cuda")(None) == "triton"
    assert fake.pick("cpu")(None) == "torch"
