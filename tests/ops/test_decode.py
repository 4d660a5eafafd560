"""ops.decode_layers: the one-call decode step of the Llama family (csrc/cpu/decode_step.cpp) against its float64
reference on random weights in every format the step takes (float32, int8 per channel / per group, int4 with mins),
Qwen2's biases, Qwen3's per-head norms, partial rotary, batched rotary tables and keep-masks, and a cache whose slots
after the position are poisoned (never read); its caches written at the position only; its schema, fake and errors.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from fastformers import ops
from fastformers.ops.decode import DecodeWeights, decode_layers_cpu, decode_layers_reference, linear_slots

pytestmark = pytest.mark.skipif(os.environ.get("FASTFORMERS_BUILD_EXT") == "0",
                                reason="FASTFORMERS_BUILD_EXT=0: the extension was deliberately not built")

# (bits, group, symmetric) per linear; None: float32
FORMATS = {
    "float": [None] * 4,
    "int8": [(8, None, True), (8, 32, True), (8, None, True), (8, 64, False)],
    "int4": [(4, 32, False), (4, 32, True), (4, 64, False), (4, 32, False)],
    "mixed": [(4, 32, False), None, (8, 32, True), None],
    "int8-activations": [(4, 32, False, "blockwise_a8"), (8, 32, True, "blockwise_a8"), (4, 64, False, "blockwise_a8"),
                         (8, None, False, "blockwise_a8")],
    "q6_k-like": [(8, 16, True), (8, 16, True, "blockwise_a8"), (4, 32, False), (8, 16, True)],
    "some-int8-activations": [(4, 32, False, "blockwise_a8"), None, (8, 32, True), (4, 32, False, "blockwise_a8")],
}


def _weight(g, n, k, fmt, bias):
    w = torch.randn(n, k, generator=g) * k ** -0.5
    b = torch.randn(n, generator=g) * 0.1 if bias else None
    if fmt is None:
        return w, b
    bits, group, symmetric, *method = fmt
    qw = ops.quantize_weight(w, bits=bits, group_size=group, symmetric=symmetric)
    if group == 32:  # scales and mins that float16 holds exactly (as GGUF's): linear_slots passes float16 copies
        qw = dataclasses.replace(qw, scales=qw.scales.half().float(),
                                 mins=None if qw.mins is None else qw.mins.half().float())
    return (dataclasses.replace(qw, method=method[0]) if method else qw), b


def _double(slots, fmt):
    return [None if t is None else (t.double() if t.is_floating_point() else t) for t in slots], fmt


def test_group_32_cases_run_with_float16_scales():
    got_args, _ = make_case(5, formats="int4")
    dtypes = {w.dtype for w in got_args[1][5::20]}  # each layer's qkv scales
    assert dtypes == {torch.float16}


def make_case(seed, *, formats="int4", batch=2, heads=4, kv_heads=2, head_dim=16, hidden=64, inter=96, layers=2,
              length=11, pos=6, bias=False, qk_norm=False, rot=None, batched_rope=False, keep="random"):
    """(float32 args, float64 args) of one decode step; caches random before `pos`, NaN after it."""
    g = torch.Generator().manual_seed(seed)
    rot = rot or head_dim
    w32, w64 = DecodeWeights(), DecodeWeights()
    for _ in range(layers):
        norms = [1 + 0.3 * torch.randn(hidden, generator=g), 1 + 0.3 * torch.randn(hidden, generator=g),
                 1 + 0.3 * torch.randn(head_dim, generator=g) if qk_norm else None,
                 1 + 0.3 * torch.randn(head_dim, generator=g) if qk_norm else None]
        shapes = [((heads + 2 * kv_heads) * head_dim, hidden, bias), (hidden, heads * head_dim, False),
                  (2 * inter, hidden, False), (hidden, inter, False)]
        linears = [linear_slots(*_weight(g, n, k, fmt, b)) for (n, k, b), fmt in zip(shapes, FORMATS[formats])]
        w32.add_layer(norms, linears)
        w64.add_layer([None if n is None else n.double() for n in norms], [_double(*s) for s in linears])
    final = 1 + 0.3 * torch.randn(hidden, generator=g)
    w32.finish(final)
    w64.finish(final.double())
    x = torch.randn(batch, 1, hidden, generator=g)
    caches = [torch.randn(batch, kv_heads, length, head_dim, generator=g) for _ in range(2 * layers)]
    for c in caches:
        c[:, :, pos + 1:] = float("nan")  # never read: the step attends to [0, pos]
    angles = (pos + 0.5 * torch.arange(batch if batched_rope else 1))[:, None, None] * torch.rand(rot // 2, generator=g)
    angles = torch.cat([angles, angles], dim=-1)
    cos, sin = angles.cos(), angles.sin()
    if keep == "random":
        mask = torch.rand(batch, length, generator=g) < 0.7
        mask[:, pos] = True
    elif keep == "none-kept":  # the first sequence keeps no key: its attention is zeros
        mask = torch.ones(batch, length, dtype=torch.bool)
        mask[0] = False
    else:
        mask = None
    position = torch.tensor([pos])
    scale = head_dim ** -0.5

    def args(weights, dtype):
        cs = [c.to(dtype) for c in caches]
        return (x.to(dtype), weights.weights, weights.formats, cs[:layers], cs[layers:], position, mask,
                cos.to(dtype), sin.to(dtype), heads, kv_heads, 1e-5, scale)

    return args(w32, torch.float32), args(w64, torch.float64)


def _check(got_args, ref_args, out, ref):
    assert out.shape == ref.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, rtol=2e-4, atol=2e-4)
    pos = int(got_args[5])
    for got, want in zip(got_args[3] + got_args[4], ref_args[3] + ref_args[4]):
        torch.testing.assert_close(got[:, :, pos].double(), want[:, :, pos], rtol=2e-4, atol=2e-4)
        # every other slot untouched (NaN after the position included)
        assert torch.equal(got[:, :, :pos].double(), want[:, :, :pos])
        assert got[:, :, pos + 1:].isnan().all()


CASES = {
    "llama-int4": dict(formats="int4"),
    "llama-int8": dict(formats="int8"),
    "llama-float": dict(formats="float"),
    "llama-int8-activations": dict(formats="int8-activations", batch=3),
    "int8-groups-of-16": dict(formats="q6_k-like"),
    "mixed-activations": dict(formats="some-int8-activations", bias=True),
    "mixed-formats-batch-3": dict(formats="mixed", batch=3),
    "qwen2-bias": dict(bias=True, formats="int8"),
    "qwen3-qk-norm": dict(qk_norm=True, head_dim=32, hidden=64, heads=2, kv_heads=1),
    "mha-one-layer": dict(heads=4, kv_heads=4, layers=1),
    "mqa-partial-rotary": dict(kv_heads=1, rot=8),
    "batched-rope": dict(batched_rope=True, batch=3),
    "no-mask": dict(keep=None),
    "a-sequence-keeps-no-key": dict(keep="none-kept"),
    "first-position": dict(pos=0, keep=None),
    "last-slot": dict(pos=10),
    # 30 attention features: o_proj cannot be packed (multiples of 32), the others can
    "batch-1-odd-sizes": dict(batch=1, heads=3, kv_heads=1, head_dim=10, hidden=96, inter=160, formats="mixed"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_decode_layers_matches_the_float64_reference(case):
    got_args, ref_args = make_case(1, **CASES[case])
    out = decode_layers_cpu(*got_args)
    ref = decode_layers_reference(*ref_args)
    _check(got_args, ref_args, out, ref)


def test_the_op_dispatches_to_the_cpu_kernel_at_inference_and_to_the_reference_when_forced():
    got_args, _ = make_case(2)
    assert ops.decode_layers.choose("cpu", got_args) == "cpu"
    with ops.use_backend("torch"):
        assert ops.decode_layers.choose("cpu", got_args) == "torch"
    x = got_args[0].clone().requires_grad_()
    with torch.enable_grad():
        assert ops.decode_layers.choose("cpu", (x,) + got_args[1:]) == "torch"
    half = (got_args[0].bfloat16(),) + got_args[1:]
    assert ops.decode_layers.choose("cpu", half) == "torch"


def test_schema_and_fake_implementation():
    got_args, _ = make_case(3, layers=1)
    torch.library.opcheck(torch.ops.fastformers_ext.decode_layers.default, got_args,
                          test_utils=("test_schema", "test_faketensor"))


def _with(args, i, value):
    return args[:i] + (value,) + args[i + 1:]


@pytest.mark.parametrize("edit, match", [
    (lambda a: _with(a, 1, a[1][:-1]), "weights per layer"),
    (lambda a: _with(a, 2, a[2][:-2]), "format entries per layer"),
    (lambda a: _with(a, 5, torch.tensor([11])), "outside the cache's 11 slots"),
    (lambda a: _with(a, 5, torch.tensor([1, 2])), "one int64 position"),
    (lambda a: _with(a, 0, a[0].double()), "x must be float32"),
    (lambda a: _with(a, 9, 3), "must be a multiple of num_kv_heads"),
    (lambda a: _with(a, 4, a[4][:1]), "one key and one value cache per layer"),
    (lambda a: _with(a, 6, torch.ones(2, 5, dtype=torch.bool)), "keep-mask must be"),
    (lambda a: _with(a, 1, [None if i == 4 else w for i, w in enumerate(a[1])]), "layer 0 qkv: the weight is missing"),
    (lambda a: _with(a, 2, [5] + list(a[2][1:])), "layer 0 qkv: bits=5"),
    (lambda a: _with(a, 2, list(a[2][:2]) + [2] + list(a[2][3:])), "layer 0 qkv: the int8-activation flag is 2"),
    (lambda a: _with(a, 1, [w[:, :-1] if i == 28 else w for i, w in enumerate(a[1])]), "layer 1 o: codes"),
    (lambda a: _with(a, 1, list(a[1][:-1]) + [a[1][-1][:-1]]), "the final norm must be"),
])
def test_bad_arguments_are_named(edit, match):
    got_args, _ = make_case(4)
    with pytest.raises(RuntimeError, match=match):
        decode_layers_cpu(*edit(got_args))


def test_linear_slots_refuses_what_the_step_does_not_take():
    w = torch.randn(64, 64)
    assert linear_slots(w, None)[1] == (0, 0, 0)
    assert linear_slots(w.double(), None) is None
    assert linear_slots(ops.quantize_weight(w, bits=8, method="w8a8"), None) is None
    assert linear_slots(ops.quantize_weight(w, bits=4, group_size=32).to(dtype=torch.bfloat16), None) is None
    qw = ops.quantize_weight(w, bits=4, group_size=32)
    assert linear_slots(qw, None)[1] == (4, 32, 0)
    assert linear_slots(dataclasses.replace(qw, method="blockwise_a8"), None)[1] == (4, 32, 1)
