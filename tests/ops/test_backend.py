"""Backend selection: env var, use_backend, auto rule, and no silent fallback."""

import pytest
import torch

from fastformers import ops
from fastformers.ops.backend import Op
from conftest import DEVICE


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


def test_unsupported_call_goes_to_next_backend_in_auto_and_raises_when_forced(monkeypatch):
    fake = Op("fake", lambda x: "torch")
    fake.register("triton", unsupported=lambda x: "odd sizes" if x.shape[-1] % 2 else None)(lambda x: "triton")
    monkeypatch.setattr("fastformers.ops.backend.backend_status", lambda name: None)
    even, odd = torch.randn(2), torch.randn(3)
    assert fake.pick("cuda", (even,))(even) == "triton"
    assert fake.pick("cuda", (odd,))(odd) == "torch"
    with ops.use_backend("triton"):
        assert fake(even) == "triton"
        with pytest.raises(ops.BackendUnavailableError, match="op 'fake' cannot run this call on the 'triton' "
                                                              "backend: odd sizes"):
            fake(odd)


def test_every_fused_op_has_a_triton_implementation_registered():
    for name in ("attention", "varlen_attention", "layer_norm", "rms_norm", "gelu", "silu_mul", "rotary"):
        assert getattr(ops, name).has("triton"), name


def test_forced_triton_runs_the_kernel_not_torch(triton_backend):
    x = torch.randn(3, 5, device=DEVICE)
    out = ops.gelu(x)
    assert triton_backend["gelu"] >= 1, dict(triton_backend)
    assert not out.isnan().any()


def test_torch_compile_traces_through_dispatch_and_kernels(triton_backend):
    """fullgraph torch.compile of a decoder-layer-like function on the triton backend: no graph break in
    the op layer, the custom ops run, outputs and gradients equal eager."""
    import random

    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)

    def layer(x, w, cos, sin):
        h = ops.rms_norm(x, w, 1e-6)
        q = h.view(1, 5, 2, 4).transpose(1, 2)
        q, k = ops.rotary(q, q, cos, sin)
        a = ops.attention(q, k, q, causal=True)
        return ops.silu_mul(a, a).sum()

    x, w = torch.randn(1, 5, 8, generator=g, requires_grad=True), torch.randn(8, generator=g) + 1
    cos, sin = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    eager = layer(x, w, cos, sin)
    (dx_eager,) = torch.autograd.grad(eager, x)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")(x, w, cos, sin)
    (dx,) = torch.autograd.grad(compiled, x)
    assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-6), seed
    assert torch.allclose(dx, dx_eager, rtol=1e-5, atol=1e-6), seed
    assert triton_backend["attention_decode"] and triton_backend["attention_bwd_dq"] and triton_backend["rms_norm_bwd"]


def test_dense_linear_is_torch_on_every_backend(triton_backend):
    """linear has no kernel of ours (cuBLAS is the kernel): a forced triton backend leaves it on torch."""
    assert ops.linear.choose("cpu") == "torch"
    x, w = torch.randn(2, 3), torch.randn(4, 3)
    assert torch.equal(ops.linear(x, w), torch.nn.functional.linear(x, w))
    assert not triton_backend
