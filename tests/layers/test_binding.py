"""Layers bind their op once per (device type, dtype, backend setting): no backend choice per call."""

import threading

import pytest
import torch

from fastformers import layers, ops
from fastformers.ops.backend import Op


def counting_resolve(monkeypatch, op):
    calls = []
    original = op.resolve
    monkeypatch.setattr(op, "resolve", lambda *args: (calls.append(args), original(*args))[1])
    return calls


def test_layer_resolves_once_then_on_use_backend(monkeypatch):
    monkeypatch.delenv("FASTFORMERS_BACKEND", raising=False)
    norm, x = layers.RMSNorm(8, 1e-6), torch.randn(2, 8)
    calls = counting_resolve(monkeypatch, ops.rms_norm)
    for _ in range(5):
        torch.testing.assert_close(norm(x), ops.rms_norm_reference(x, norm.weight, 1e-6))
    assert len(calls) == 1
    norm.double()
    torch.testing.assert_close(norm(x.double()), ops.rms_norm_reference(x.double(), norm.weight, 1e-6))
    assert len(calls) == 1  # a dtype needs no new choice: predicates check dtypes per call
    with ops.use_backend("torch"):
        norm(x.double())
        norm(x.double())
    assert len(calls) == 2
    norm(x.double())  # leaving the block is a change of setting too
    assert len(calls) == 3


def test_bound_layer_reads_no_environment_per_call(monkeypatch):
    monkeypatch.delenv("FASTFORMERS_BACKEND", raising=False)
    act, x = layers.Activation("gelu"), torch.randn(4)
    act(x)
    monkeypatch.setenv("FASTFORMERS_BACKEND", "tpu")  # not a backend: any read of it would raise
    torch.testing.assert_close(act(x), torch.nn.functional.gelu(x))
    with pytest.raises(ValueError, match="FASTFORMERS_BACKEND='tpu'"):
        ops.gelu(x)  # the functional op reads it on every call


def test_forced_unavailable_backend_raises_when_a_layer_binds(monkeypatch):
    monkeypatch.setenv("FASTFORMERS_BACKEND", "cuda")
    with pytest.raises(ops.BackendUnavailableError, match="cuda"):
        layers.Linear(3, 2)(torch.randn(1, 3))
    with pytest.raises(ops.BackendUnavailableError, match="cuda"):
        layers.LayerNorm(3)(torch.randn(1, 3))


def fake_op(monkeypatch):
    fake = Op("fake", lambda x: "torch")
    fake.register("triton", unsupported=lambda x: "odd sizes" if x.shape[-1] % 2 else None)(lambda x: "triton")
    monkeypatch.setattr("fastformers.ops.backend.backend_status", lambda name: None)
    return fake


def test_support_predicate_runs_per_call_only_where_a_kernel_is_picked(monkeypatch):
    fake = fake_op(monkeypatch)
    bound, even, odd = fake.binding(), torch.randn(2), torch.randn(3)
    assert bound(even) == bound(odd) == "torch"  # CPU tensors, auto: torch, no predicate
    assert fake.resolve("cpu", "auto") is fake.impls["torch"]
    assert fake.resolve("cuda", "auto")(even) == "triton" and fake.resolve("cuda", "auto")(odd) == "torch"
    with ops.use_backend("triton"):
        assert bound(even) == "triton"
        with pytest.raises(ops.BackendUnavailableError, match="cannot run this call on the 'triton' backend: odd"):
            bound(odd)


def test_a_binding_made_under_use_backend_does_not_serve_another_thread(monkeypatch):
    fake = fake_op(monkeypatch)
    bound, x = fake.binding(), torch.randn(2)
    seen = {}

    def forced():
        with ops.use_backend("triton"):
            seen["forced"] = bound(x)

    thread = threading.Thread(target=forced)
    thread.start()
    thread.join()
    assert seen["forced"] == "triton"
    assert bound(x) == "torch"


def test_forced_triton_layers_run_the_kernels(triton_backend):
    x = torch.randn(2, 3, 8)
    norm, ln, act = layers.RMSNorm(8, 1e-6), layers.LayerNorm(8), layers.Activation("gelu_new")
    torch.testing.assert_close(norm(x), ops.rms_norm_reference(x, norm.weight, 1e-6), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ln(x), torch.nn.functional.layer_norm(x, (8,), ln.weight, ln.bias), rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(act(x), torch.nn.functional.gelu(x, approximate="tanh"), rtol=1e-5, atol=1e-5)
    assert triton_backend["rms_norm"] >= 1 and triton_backend["gelu"] >= 1, dict(triton_backend)


def test_layers_compile_in_one_graph():
    """torch.compile(fullgraph=True) traces through bound ops and a fused projection: no graph break."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = layers.RMSNorm(8, 1e-6)
            self.q_proj, self.k_proj, self.v_proj = (layers.Linear(8, 8) for _ in range(3))
            self.qkv = layers.FusedLinear(self, "q_proj", "k_proj", "v_proj")
            self.rotary, self.attn, self.act = layers.Rotary(), layers.Attention(causal=True), layers.SiluMul()
            self.o_proj = layers.Linear(8, 8)

        def forward(self, x, cos, sin):
            q, k, v = (t.view(1, 5, 2, 4).transpose(1, 2) for t in self.qkv(self.norm(x)))
            q, k = self.rotary(q, k, cos, sin)
            out, _ = self.attn(q, k, v)
            out = out.transpose(1, 2).reshape(1, 5, 8)
            return self.o_proj(self.act(out, out))

    block, x = Block().eval(), torch.randn(1, 5, 8)
    cos, sin = torch.randn(5, 4), torch.randn(5, 4)
    with torch.no_grad():
        eager = block(x, cos, sin)
        compiled = torch.compile(block, fullgraph=True, backend="aot_eager")(x, cos, sin)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
