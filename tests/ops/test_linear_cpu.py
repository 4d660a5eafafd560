"""The cpu backend's linear: weights packed once by oneDNN, against the float64 reference, and every way a weight
can change under a packed copy (ops/linear.py)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from fastformers import ops, weights_changed
from fastformers.layers.linear import Linear

linear_module = importlib.import_module("fastformers.ops.linear")  # the module: `ops.linear` is the op


def rel_err(got, expected):
    expected = expected.detach()
    return float((got.detach().double() - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("shape, out_features", [((1, 384), 1152), ((2, 13, 383), 7), ((3, 1, 5), 2), ((16, 1536), 384)])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_prepacked_linear_matches_reference(shape, out_features, dtype, tol, with_bias):
    g = torch.Generator().manual_seed(sum(shape) + out_features)
    layer = Linear(shape[-1], out_features, bias=with_bias).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
        if with_bias:
            layer.bias.copy_(torch.randn(out_features, generator=g))
    x = torch.randn(*shape, generator=g).to(dtype)
    assert ops.linear.choose("cpu", (x, layer.weight, layer.bias)) == "torch"  # autograd on: F.linear
    packs = _packs_here(dtype)
    with torch.no_grad():
        assert ops.linear.choose("cpu", (x, layer.weight, layer.bias)) == ("cpu" if packs else "torch")
        got = layer(x)
    expected = x.double() @ layer.weight.double().t() + (layer.bias.double() if with_bias else 0)
    assert got.shape == (*shape[:-1], out_features) and got.dtype == dtype
    assert rel_err(got, expected) < tol
    assert (_pack_of(layer.weight, dtype) is not None) == packs  # it ran packed


def _packs_here(dtype) -> bool:
    """Whether oneDNN packs `dtype` weights on this CPU (bfloat16 needs AVX-512 or AVX-NE-CONVERT)."""
    return dtype == torch.float32 or linear_module._bf16_packable()


def _key(weight, dtype=torch.float32):
    """The packed copies' key of a weight: gemm_f32's layout for float32 on AVX2 CPUs without AVX-512, else oneDNN's."""
    gemm = dtype == torch.float32 and linear_module.gemm_f32_preferred()
    return (id(weight), "gemm_f32") if gemm else id(weight)


def _pack_of(weight, dtype=torch.float32):
    return linear_module._packs.entries.get(_key(weight, dtype))


def test_bfloat16_where_onednn_packs_none_runs_f_linear(monkeypatch):
    """On a CPU without AVX-512 oneDNN refuses to pack bfloat16 weights ("bf16 path needs the cpu support ..."):
    such calls run F.linear, with the reason, instead of raising."""
    monkeypatch.setattr(linear_module, "_bf16_packable", lambda: False)
    layer, x = _gelu_layer((3, 24), 10, torch.bfloat16, True, 5)
    with torch.no_grad():
        args = (x, layer.weight, layer.bias)
        assert "bfloat16" in ops.linear.unsupported["cpu"](*args) and ops.linear.choose("cpu", args) == "torch"
        assert torch.equal(ops.linear(*args), torch.nn.functional.linear(*args))
        assert torch.equal(ops.linear_gelu(*args), torch.nn.functional.gelu(torch.nn.functional.linear(*args)))
    assert _pack_of(layer.weight, torch.bfloat16) is None


def _layer(seed=0):
    g = torch.Generator().manual_seed(seed)
    layer = Linear(24, 10)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(10, 24, generator=g))
    return layer, torch.randn(3, 24, generator=g)


def _expected(layer, x):
    return x.double() @ layer.weight.double().t() + layer.bias.double()


@pytest.mark.parametrize("change", ["in place", "optimizer step", "load_state_dict", "assign .data",
                                    "dense edit through .data"])
def test_a_changed_weight_packs_again(change):
    layer, x = _layer()
    with torch.no_grad():
        layer(x)  # packed now
        if change == "in place":
            layer.weight.mul_(-2)
        elif change == "load_state_dict":
            layer.load_state_dict({"weight": torch.randn(10, 24), "bias": layer.bias.detach().clone()})
        elif change == "assign .data":
            layer.weight.data = torch.randn(10, 24)
        elif change == "dense edit through .data":
            layer.weight.data += torch.randn(10, 4) @ torch.randn(4, 24)  # a LoRA merge (peft: unsafe merge)
    if change == "optimizer step":
        opt = torch.optim.SGD(layer.parameters(), lr=0.5)
        layer(x).square().sum().backward()
        opt.step()
    with torch.no_grad():
        assert rel_err(layer(x), _expected(layer, x)) < 1e-5


def test_a_sparse_edit_through_data_is_seen_after_weights_changed():
    layer, x = _layer()
    with torch.no_grad():
        layer(x)
        layer.weight.data[3, 1] += 100.0  # one element: the 16-element sample may not see it
        weights_changed()  # the documented way to say so
        assert rel_err(layer(x), _expected(layer, x)) < 1e-5


def test_peft_unsafe_merge_after_inference_uses_the_merged_weights():
    import peft  # a test dependency (the test extra): this test runs wherever the suite does

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = Linear(24, 10)

        def forward(self, x):
            return self.proj(x)

    torch.manual_seed(0)
    model, x = Tiny().eval(), torch.randn(3, 24)
    with torch.no_grad():
        model(x)  # the base weight is packed
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["proj"], init_lora_weights=False))
    with torch.no_grad():
        with_adapter = wrapped(x)
    merged = wrapped.merge_and_unload(safe_merge=False)  # weight.data += delta
    with torch.no_grad():
        got = merged(x)
    assert rel_err(got, with_adapter.double()) < 1e-5


def test_packs_leave_with_their_weights_and_respect_the_budget(monkeypatch):
    layer, x = _layer()
    with torch.no_grad():
        layer(x)
    key = _key(layer.weight)
    assert key in linear_module._packs.entries
    del layer
    assert key not in linear_module._packs.entries
    monkeypatch.setattr(linear_module._packs, "budget", 0)
    layer, x = _layer(1)
    with torch.no_grad():
        assert ops.linear.choose("cpu", (x, layer.weight, layer.bias)) == "torch"  # prepacking off
        assert rel_err(layer(x), _expected(layer, x)) < 1e-5


# A garbage collection inside packed_weight's locked region that frees another packed weight runs that weight's
# weakref callback on the same thread; with a non-reentrant lock this hung a CI run for good. Run in a child
# process, so that a regression fails here instead of hanging the suite.
_COLLECTION_INSIDE_THE_LOCK = """
import gc, importlib, weakref, torch
linear = importlib.import_module("fastformers.ops.linear")
class Cycle:
    pass
gc.disable()
def garbage_holding_a_pack():
    c = Cycle(); c.me = c; c.w = torch.nn.Parameter(torch.randn(64, 48))
    assert linear.packed_weight(c.w) is not None
garbage_holding_a_pack()
assert len(linear._packs.entries) == 1 and linear._packs.bytes == 64 * 48 * 4
class CollectingWeakref:  # what an allocation in the locked region can trigger: a full collection
    @staticmethod
    def ref(*args):
        gc.collect()
        return weakref.ref(*args)
linear.weakref = CollectingWeakref
w = torch.nn.Parameter(torch.randn(32, 16))
assert linear.packed_weight(w) is not None
assert list(linear._packs.entries) == [id(w)], linear._packs.entries.keys()
assert linear._packs.bytes == 32 * 16 * 4, linear._packs.bytes
print("ok")
"""


def test_a_collection_inside_the_pack_lock_that_frees_a_packed_weight_neither_hangs_nor_miscounts():
    if linear_module._budget() <= 0:
        pytest.skip("prepacking is off here (FASTFORMERS_CPU_PREPACK_MB=0, or a torch without oneDNN)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTFORMERS_CPU_PREPACK")}
    done = subprocess.run([sys.executable, "-c", _COLLECTION_INSIDE_THE_LOCK], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_views_made_per_call_and_the_torch_backend_stay_on_f_linear(monkeypatch):
    layer, x = _layer()
    with torch.no_grad():
        transposed = layer.weight.t().contiguous().t()  # a fresh view each call, as GPT-2's Conv1D passes
        assert ops.linear.choose("cpu", (x, layer.weight.detach().t().t(), None)) == "torch"
        assert ops.linear.choose("cpu", (x, transposed, None)) == "torch"
        monkeypatch.setenv("FASTFORMERS_BACKEND", "torch")
        assert ops.linear.choose("cpu", (x, layer.weight, layer.bias)) == "torch"


def test_a_quantized_twin_runs_the_weight_from_its_packed_bytes_until_it_changes(monkeypatch):
    """attach_quantized_twin: a GGUF model's tied head runs from the file's Q8_0 table (same values, fewer bytes)."""
    from fastformers.ops import native

    if os.environ.get("FASTFORMERS_BUILD_EXT") == "0":  # as tests/ops/test_native.py: only a deliberate opt-out
        pytest.skip("FASTFORMERS_BUILD_EXT=0: the extension was deliberately not built")
    assert native.available(), native.load_error()
    g = torch.Generator().manual_seed(4)
    qw = ops.quantize_weight(torch.randn(70, 96, generator=g), bits=8, group_size=32)
    layer = Linear(96, 70, bias=False)
    with torch.no_grad():
        layer.weight.copy_(ops.dequantize_weight(qw))
    assert linear_module.attach_quantized_twin(layer.weight, qw)
    other = ops.quantize_weight(torch.randn(70, 96, generator=g), bits=8, group_size=32)
    assert not linear_module.attach_quantized_twin(layer.weight.detach().clone(), other)  # values differ: refused
    calls = []
    real = linear_module.quantized_linear
    monkeypatch.setattr(linear_module, "quantized_linear", lambda *a: calls.append(a[1]) or real(*a))
    x = torch.randn(3, 96, generator=g)
    with torch.no_grad():
        got = layer(x)
        assert calls == [qw] and rel_err(got, x.double() @ layer.weight.double().t()) < 1e-5
        layer.weight.mul_(-1)  # a changed weight drops the twin: the float weight serves
        got = layer(x)
        assert calls == [qw] and rel_err(got, x.double() @ layer.weight.double().t()) < 1e-5

# -- linear_gelu: the GELU as oneDNN's post-op of the packed GEMM ---------------------------------------------------

def _gelu_layer(shape, out_features, dtype, with_bias, seed):
    g = torch.Generator().manual_seed(seed)
    layer = Linear(shape[-1], out_features, bias=with_bias).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) / shape[-1] ** 0.5)
        if with_bias:
            layer.bias.copy_(torch.randn(out_features, generator=g))
    return layer, torch.randn(*shape, generator=g).to(dtype)


@pytest.mark.parametrize("shape, out_features", [((1, 384), 1536), ((2, 13, 383), 7), ((3, 1, 5), 2), ((17, 64), 37)])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_gelu_matches_reference(shape, out_features, dtype, tol, approximate, with_bias):
    layer, x = _gelu_layer(shape, out_features, dtype, with_bias, sum(shape) + out_features)
    args = (x, layer.weight, layer.bias)
    assert ops.linear_gelu.choose("cpu", args, {"approximate": approximate}) == "torch"  # autograd: linear, gelu
    packs = _packs_here(dtype)
    with torch.no_grad():
        assert ops.linear_gelu.choose("cpu", args, {"approximate": approximate}) == ("cpu" if packs else "torch")
        got = ops.linear_gelu(*args, approximate=approximate)
        unfused = ops.gelu(ops.linear(*args), approximate=approximate)
    expected = torch.nn.functional.gelu(
        x.double() @ layer.weight.double().t() + (layer.bias.double() if with_bias else 0), approximate=approximate)
    assert got.shape == (*shape[:-1], out_features) and got.dtype == dtype
    assert rel_err(got, expected) < tol
    assert rel_err(got, unfused.double()) < tol  # what ops.linear then ops.gelu give
    assert (_pack_of(layer.weight, dtype) is not None) == packs  # it ran packed


def test_linear_gelu_off_the_packed_path_is_linear_then_gelu():
    layer, x = _gelu_layer((4, 24), 10, torch.float32, True, 0)
    expected = torch.nn.functional.gelu(torch.nn.functional.linear(x, layer.weight, layer.bias))
    out = ops.linear_gelu(x, layer.weight, layer.bias)  # autograd on: F.linear and gelu, differentiable
    out.sum().backward()
    assert torch.allclose(out, expected, rtol=0, atol=1e-6) and layer.weight.grad is not None
    with torch.no_grad(), ops.use_backend("torch"):
        assert ops.linear_gelu.choose("cpu", (x, layer.weight, layer.bias)) == "torch"
        assert torch.equal(ops.linear_gelu(x, layer.weight, layer.bias), expected)
    with torch.no_grad(), pytest.raises(ValueError, match="approximate"):
        ops.linear_gelu(x, layer.weight, layer.bias, approximate="sigmoid")
    quantized = ops.quantize_weight(layer.weight.detach(), bits=8)  # a quantized weight: quantized_linear, gelu
    with torch.no_grad():
        want = torch.nn.functional.gelu(ops.quantized_linear(x, quantized, layer.bias))
        assert torch.equal(ops.linear_gelu(x, quantized, layer.bias), want)


@pytest.mark.parametrize("gemm_f32", [True, False])
def test_both_float32_layouts_match_the_reference(gemm_f32, monkeypatch):
    """float32 runs gemm_f32.cpp's GEMM (its layout's own pack) where it is preferred (AVX2 without AVX-512), oneDNN's
    elsewhere: each forced here, linear and linear_gelu against float64, the pack under that layout's key."""
    from fastformers.ops import native

    if gemm_f32 and not (native.available() and torch.ops.fastformers_ext.gemm_f32_usable()):
        pytest.skip("gemm_f32 needs AVX2 with FMA, which this CPU lacks")
    monkeypatch.setattr(linear_module, "gemm_f32_preferred", lambda: gemm_f32)
    layer, x = _gelu_layer((3, 7, 40), 37, torch.float32, True, 11)
    args = (x, layer.weight, layer.bias)
    with torch.no_grad():
        got, fused = ops.linear(*args), ops.linear_gelu(*args, approximate="tanh")
    expected = x.double() @ layer.weight.double().t() + layer.bias.double()
    assert rel_err(got, expected) < 1e-5
    assert rel_err(fused, torch.nn.functional.gelu(expected, approximate="tanh")) < 1e-5
    ours = (id(layer.weight), (id(layer.weight), "gemm_f32"))  # its oneDNN and gemm_f32 keys
    assert [k for k in linear_module._packs.entries if k in ours] == [ours[1] if gemm_f32 else ours[0]]
