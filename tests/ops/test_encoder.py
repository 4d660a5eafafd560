"""ops.encoder_layers: the one-call BERT-family encoder (csrc/cpu/encoder_step.cpp) against its reference on random
weights: float32 weights and oneDNN-packed copies against the float64 reference; the int8 formats (W8A8 through
torch._int_mm or packed for the VNNI tiles, blockwise int8) against the reference in float32 (activations are quantized
to int8 from float32 values); both GELUs, odd sequence lengths (1, an empty sequence, tails
after the 16-wide loops), a head size that is not a multiple of 16; its dispatch, schema, fake and errors."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from fastformers import ops
from fastformers.ops import native
from fastformers.ops.encoder import (
    BLOCK8,
    BLOCK8_PANELS,
    F32_PACKED,
    FLOAT,
    PACKED,
    SLOTS,
    W8A8,
    W8A8_PACKED,
    EncoderWeights,
    block8_usable,
    encoder_layers_cpu,
    encoder_layers_reference,
    pack_blockwise8,
    pack_q8,
    pack_w8a8,
    unpack_blockwise8,
    unpack_q8,
    unpack_w8a8,
    w8a8_packed_usable,
)

pytestmark = pytest.mark.skipif(os.environ.get("FASTFORMERS_BUILD_EXT") == "0",
                                reason="FASTFORMERS_BUILD_EXT=0: the extension was deliberately not built")

KINDS = {"float": [FLOAT] * 4, "packed": [PACKED] * 4, "w8a8": [W8A8] * 4, "mixed": [PACKED, W8A8, FLOAT, W8A8],
         "block8": [BLOCK8] * 4, "block8-mixed": [BLOCK8, PACKED, W8A8, BLOCK8], "w8a8-packed": [W8A8_PACKED] * 4,
         "w8a8-packed-mixed": [W8A8_PACKED, W8A8, FLOAT, W8A8_PACKED], "f32": [F32_PACKED] * 4,
         "f32-mixed": [F32_PACKED, W8A8, FLOAT, F32_PACKED], "panels": [BLOCK8_PANELS] * 4,
         "panels-mixed": [BLOCK8_PANELS, W8A8_PACKED, F32_PACKED, BLOCK8_PANELS]}
f32_usable = native.available() and torch.ops.fastformers_ext.gemm_f32_usable()
# what each format needs beyond the extension: (usable here, what it needs)
NEEDS = {BLOCK8: (block8_usable(), "format 3 (gemm_a8.cpp's blocks) needs AVX-512 VNNI"),
         W8A8_PACKED: (w8a8_packed_usable(), "format 4 (gemm_a8.cpp) needs AVX-512 VNNI or AVX2"),
         F32_PACKED: (f32_usable, "format 5 (gemm_f32.cpp) needs AVX2 with FMA"),
         BLOCK8_PANELS: (f32_usable, "format 6 (gemm_f32.cpp's gemm_block8) needs AVX2 with FMA")}


def skip_unless_usable(kinds):
    for kind in set(KINDS[kinds]):
        usable, needs = NEEDS.get(kind, (True, ""))
        if not usable:
            pytest.skip(f"{needs}, which this CPU lacks")


needs_vnni = pytest.mark.skipif(not block8_usable(),
                                reason="format 3 (gemm_a8.cpp's blocks) needs AVX-512 VNNI, which this CPU lacks")
needs_w8a8_packed = pytest.mark.skipif(not w8a8_packed_usable(),
                                       reason="format 4 (gemm_a8.cpp) needs AVX-512 VNNI or AVX2, which this CPU lacks")


def _block8(w):
    qw = ops.quantize_weight(w, bits=8, group_size=32)
    return pack_blockwise8(dataclasses.replace(qw, method="blockwise_a8"))


def make_case(seed, *, kinds="float", hidden=72, heads=3, inter=100, layers=2, lengths=(5, 1, 0, 37, 18), act=0):
    """(args for the kernel, float64 reference args or None for W8A8 cases, float32 reference args)."""
    g = torch.Generator().manual_seed(seed)
    got, ref64, ref32 = EncoderWeights(), EncoderWeights(), EncoderWeights()
    for _ in range(layers):
        linears = ([], [], [])
        for (n, k), kind in zip([(3 * hidden, hidden), (hidden, hidden), (inter, hidden), (hidden, inter)],
                                KINDS[kinds]):
            w = torch.randn(n, k, generator=g) * k ** -0.5
            b = torch.randn(n, generator=g) * 0.1
            if kind in (W8A8, BLOCK8, W8A8_PACKED, BLOCK8_PANELS):
                if kind == W8A8:
                    qw = ops.quantize_weight(w, bits=8, method="w8a8")
                    parts = (qw.qweight, qw.scales.reshape(-1).contiguous(), b, W8A8)
                elif kind == W8A8_PACKED:
                    parts = pack_w8a8(ops.quantize_weight(w, bits=8, method="w8a8")) + (b, W8A8_PACKED)
                elif kind == BLOCK8_PANELS:
                    qw = ops.quantize_weight(w, bits=8, group_size=32)
                    parts = (pack_q8(qw.qweight), qw.scales.float().t().contiguous(), b, BLOCK8_PANELS)
                else:
                    parts = _block8(w) + (b, BLOCK8)
                linears[0].append(parts)
                linears[1].append(parts)
                linears[2].append(parts)
                continue
            packed = {PACKED: lambda: torch.ops.mkldnn._reorder_linear_weight(w, None),
                      F32_PACKED: lambda: torch.ops.fastformers_ext.pack_f32(w)}.get(kind, lambda: w)()
            linears[0].append((packed, None, b, kind))
            linears[1].append((w.double(), None, b.double(), FLOAT))
            linears[2].append((w, None, b, FLOAT))
        norms = [1 + 0.3 * torch.randn(hidden, generator=g), 0.1 * torch.randn(hidden, generator=g),
                 1 + 0.3 * torch.randn(hidden, generator=g), 0.1 * torch.randn(hidden, generator=g)]
        got.add_layer(linears[0], norms)
        ref64.add_layer(linears[1], [n.double() for n in norms])
        ref32.add_layer(linears[2], norms)
    x = torch.randn(sum(lengths), hidden, generator=g) * 2
    cu = torch.tensor([0] + list(lengths)).cumsum(0).to(torch.int32)
    tail = (heads, 1e-12, act)

    def args(w, xx):
        return (xx, cu, w.weights, w.formats) + tail

    exact = all(kind in (FLOAT, PACKED, F32_PACKED) for kind in KINDS[kinds])  # int8 activations: compared in float32
    return args(got, x), (args(ref64, x.double()) if exact else None), args(ref32, x)


CASES = {
    "float": dict(kinds="float"),
    "packed": dict(kinds="packed"),
    "packed-gelu-tanh": dict(kinds="packed", act=1),
    "float-head-dim-20": dict(kinds="float", hidden=60, heads=3, act=1),
    "one-sequence": dict(kinds="packed", lengths=(16,)),
    "long-sequences": dict(kinds="packed", lengths=(130, 64), layers=1),
    "head-dim-40": dict(kinds="float", hidden=80, heads=2, lengths=(5, 1, 67, 2)),  # a 32-wide block and a tail
    # 216 qkv and 100 intermediate outputs: panels of 16 with tails; 61 tokens: tiles of 6 with a tail
    "f32": dict(kinds="f32"),
    "f32-gelu-tanh-long": dict(kinds="f32", act=1, hidden=64, heads=2, inter=136, lengths=(130, 7)),
    "f32-mixed": dict(kinds="f32-mixed", act=1),
    "w8a8": dict(kinds="w8a8"),
    "mixed": dict(kinds="mixed", act=1),
    "block8": dict(kinds="block8", hidden=96, inter=160),
    "block8-long-and-tails": dict(kinds="block8-mixed", hidden=64, heads=4, inter=128, lengths=(1, 2, 3, 130, 7)),
    "w8a8-packed": dict(kinds="w8a8-packed", hidden=96, inter=160),
    "w8a8-packed-long-and-tails": dict(kinds="w8a8-packed-mixed", hidden=64, heads=4, inter=128,
                                       lengths=(1, 2, 3, 130, 7)),
    # formats 4 and 6 need inputs that are multiples of 32 (outputs that are not: tests/ops/test_gemm_f32.py)
    "panels": dict(kinds="panels", hidden=96, inter=160),
    "panels-mixed-tails": dict(kinds="panels-mixed", hidden=64, heads=4, inter=224, lengths=(1, 2, 3, 130, 7),
                               layers=1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_encoder_layers_matches_the_reference(case):
    skip_unless_usable(CASES[case]["kinds"])
    got, ref64, ref32 = make_case(1, **CASES[case])
    out = encoder_layers_cpu(*got)
    assert out.shape == got[0].shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    if ref64 is not None:
        ref = encoder_layers_reference(*ref64)
        assert (out.double() - ref).abs().max() <= 2e-5 * ref.abs().max()
    else:
        # int8 activations, quantized from float32 values on both sides: where an activation lands on a rounding tie,
        # the two sides may round it apart, a whole step, which the later layers carry along (measured: max errors
        # of ~3e-7 or, with such a tie, ~3e-3 of the largest output, for format 2 as for the packed ones; mean errors
        # ~3e-8 or ~8e-6). A wrong tile, scale or tail moves most outputs.
        ref = encoder_layers_reference(*ref32)
        err = (out - ref).abs()
        assert err.max() <= 1e-2 * ref.abs().max() and err.mean() <= 5e-5 * ref.abs().max()
        assert (out - ref).abs().mean() <= 1e-5 * ref.abs().max()


def test_each_sequence_attends_to_its_own_tokens_only():
    got, _, _ = make_case(2, kinds="packed", lengths=(6, 9))
    x, cu = got[0], got[1]
    whole = encoder_layers_cpu(*got)
    for start, end in ((0, 6), (6, 15)):
        alone = encoder_layers_cpu(x[start:end], torch.tensor([0, end - start]), *got[2:])
        assert (alone - whole[start:end]).abs().max() <= 1e-5


def test_the_op_dispatches_to_the_cpu_kernel_at_inference_and_to_the_reference_when_forced():
    got, _, ref32 = make_case(3, kinds="float")
    assert ops.encoder_layers.choose("cpu", got) == "cpu"
    with ops.use_backend("torch"):
        assert ops.encoder_layers.choose("cpu", got) == "torch"
        assert (ops.encoder_layers(*ref32) - encoder_layers_cpu(*got)).abs().max() <= 1e-4
    x = got[0].clone().requires_grad_()
    with torch.enable_grad():
        assert ops.encoder_layers.choose("cpu", (x,) + got[1:]) == "torch"
    assert ops.encoder_layers.choose("cpu", (got[0].bfloat16(),) + got[1:]) == "torch"


@pytest.mark.parametrize("kinds", ["packed", pytest.param("f32", marks=pytest.mark.skipif(
    not f32_usable, reason="format 5 (gemm_f32.cpp) needs AVX2 with FMA, which this CPU lacks"))])
def test_the_reference_refuses_a_packed_weight(kinds):
    got, _, _ = make_case(4, kinds=kinds, layers=1)
    with pytest.raises(ValueError, match="packed float32 weight"):
        encoder_layers_reference(*got)


def test_schema_and_fake_implementation():
    got, _, _ = make_case(5, kinds="w8a8", layers=1)
    torch.library.opcheck(torch.ops.fastformers_ext.encoder_layers.default, got,
                          test_utils=("test_schema", "test_faketensor"))


def _with(args, i, value):
    return args[:i] + (value,) + args[i + 1:]


def _slot(args, i, value):
    return _with(args, 2, [value if j == i else w for j, w in enumerate(args[2])])


@pytest.mark.parametrize("edit, match", [
    (lambda a: _with(a, 2, a[2][:-1]), "16 weights per layer"),
    (lambda a: _with(a, 3, a[3][:-1]), "4 formats per layer"),
    (lambda a: _with(a, 0, a[0].double()), "x must be float32"),
    (lambda a: _with(a, 1, torch.tensor([0, 5, 60])), "cu_seqlens must run from 0 to the 61 tokens"),
    (lambda a: _with(a, 1, torch.tensor([0, 40, 30, 61])), "must not decrease"),
    (lambda a: _with(a, 4, 5), "not a multiple of num_heads=5"),
    (lambda a: _with(a, 6, 2), "act=2"),
    (lambda a: _with(a, 3, [7] + list(a[3][1:])), "layer 0 qkv: format 7"),
    (lambda a: _with(a, 3, [PACKED] + list(a[3][1:])), "layer 0 qkv: format 1 takes oneDNN's packed"),
    (lambda a: _with(a, 3, [F32_PACKED] + list(a[3][1:])),
     r"layer 0 qkv: format 5 (takes a contiguous float32 weight packed by pack_f32|needs AVX2)"),
    (lambda a: _slot(a, 3, a[2][3][:, :-1]), r"layer 0 o: the weight is \[72, 71\]"),
    (lambda a: _slot(a, 0, None), "layer 0 qkv: the weight is missing"),
    (lambda a: _slot(a, SLOTS + 11, a[2][SLOTS + 11][:-1]), "layer 1 output: the bias"),
    (lambda a: _slot(a, SLOTS + 13, a[2][SLOTS + 13][:-1]), "layer 1: attention LayerNorm bias"),
])
def test_bad_arguments_are_named(edit, match):
    got, _, _ = make_case(6, kinds="float")
    with pytest.raises(RuntimeError, match=match):
        encoder_layers_cpu(*edit(got))


def test_w8a8_needs_its_scales():
    got, _, _ = make_case(7, kinds="w8a8", layers=1)
    with pytest.raises(RuntimeError, match="layer 0 qkv: W8A8 needs contiguous float32 scales"):
        encoder_layers_cpu(*_slot(got, 1, None))


def test_block8_packing_round_trips():
    g = torch.Generator().manual_seed(8)
    qw = dataclasses.replace(ops.quantize_weight(torch.randn(64, 96, generator=g), bits=8, group_size=32),
                             method="blockwise_a8")
    packed, scales_t = pack_blockwise8(qw)
    assert packed.dtype == torch.uint8 and packed.shape == (64, 96) and scales_t.shape == (3, 64)
    back = unpack_blockwise8(packed, scales_t)
    assert torch.equal(back.qweight, qw.qweight) and torch.equal(back.scales, qw.scales)


def test_w8a8_packing_round_trips():
    qw = ops.quantize_weight(torch.randn(64, 96, generator=torch.Generator().manual_seed(8)), bits=8, method="w8a8")
    packed, scales = pack_w8a8(qw)
    assert packed.dtype == torch.uint8 and packed.shape == (64, 96) and scales.shape == (64,)
    back = unpack_w8a8(packed, scales)
    assert torch.equal(back.qweight, qw.qweight) and torch.equal(back.scales, qw.scales.view(-1, 1))


@needs_w8a8_packed
def test_packed_w8a8_computes_what_torch_int_mm_computes():
    """Formats 2 and 4 hold the same codes and scales and sum the same int32 products (torch._int_mm or exact float32
    blocks; the VNNI or AVX2 tiles): on inputs where no activation lands near a rounding tie, the same outputs to
    float rounding."""
    one, _, _ = make_case(12, kinds="w8a8", hidden=96, inter=160, lengths=(3, 17, 6), layers=1)
    four, _, _ = make_case(12, kinds="w8a8-packed", hidden=96, inter=160, lengths=(3, 17, 6), layers=1)
    a, b = encoder_layers_cpu(*one), encoder_layers_cpu(*four)
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


@needs_w8a8_packed
def test_w8a8_packed_bad_slots_are_named():
    got, _, _ = make_case(9, kinds="w8a8-packed", hidden=96, inter=160, layers=1)
    with pytest.raises(RuntimeError, match=r"layer 0 qkv: format 4 \(W8A8\) needs contiguous float32 scales, one per "
                                           r"output \(288\)"):
        encoder_layers_cpu(*_slot(got, 1, got[2][1][:-1]))
    with pytest.raises(RuntimeError, match="layer 0 qkv: format 4 takes contiguous packed uint8 codes"):
        encoder_layers_cpu(*_slot(got, 0, got[2][0].view(torch.int8)))


@needs_vnni
def test_block8_bad_slots_are_named():
    got, _, _ = make_case(9, kinds="block8", hidden=96, inter=160, layers=1)
    qkv = got[2][0]
    with pytest.raises(RuntimeError, match="layer 0 qkv: the weight is"):
        encoder_layers_cpu(*_slot(got, 0, qkv[:-32]))
    with pytest.raises(RuntimeError, match=r"layer 0 qkv: format 3 needs contiguous float32 scales \(3, 288\)"):
        encoder_layers_cpu(*_slot(got, 1, got[2][1][:, :-1]))


@pytest.mark.parametrize("kinds", ["packed", "w8a8", "mixed", "w8a8-packed-mixed", "panels-mixed"])
def test_calls_of_other_sizes_in_a_row_do_not_disturb_each_other(kinds):
    """The kernel keeps its layer buffers from call to call: a result stays as it was after later calls (its own
    memory), and calls of growing and shrinking sizes give the same results as before them (bit for bit: the
    kernel is deterministic), and those of the reference."""
    skip_unless_usable(kinds)
    sizes = {}
    if any(kind in (BLOCK8, W8A8_PACKED, BLOCK8_PANELS) for kind in KINDS[kinds]):
        sizes = dict(hidden=64, heads=4, inter=128)  # multiples of 32
    small, _, ref_small = make_case(10, kinds=kinds, lengths=(3, 5), **sizes)
    big, _, ref_big = make_case(10, kinds=kinds, lengths=(40, 70, 9), **sizes)
    first = encoder_layers_cpu(*small)
    kept = first.clone()
    big_first = encoder_layers_cpu(*big)
    assert (big_first - encoder_layers_reference(*ref_big)).abs().mean() <= 1e-4 * big_first.abs().max()
    for _ in range(2):
        assert torch.equal(encoder_layers_cpu(*small), kept)
        assert torch.equal(encoder_layers_cpu(*big), big_first)
    assert torch.equal(first, kept)
    assert (first - encoder_layers_reference(*ref_small)).abs().max() <= 1e-3 * first.abs().max()


_KERNEL_PATHS = """
import sys
import torch
from test_encoder import CASES, make_case
from fastformers.ops.encoder import encoder_layers_cpu, encoder_layers_reference, w8a8_packed_usable
for name in ("float", "float-head-dim-20", "head-dim-40", "long-sequences", "one-sequence", "packed-gelu-tanh"):
    got, ref64, _ = make_case(1, **CASES[name])
    out = encoder_layers_cpu(*got)
    ref = encoder_layers_reference(*ref64)
    err = float((out.double() - ref).abs().max() / ref.abs().max())
    assert err <= 2e-5, (name, err)
assert w8a8_packed_usable() == (sys.argv[1] == "FASTFORMERS_CPU_NO_AVX512")
if w8a8_packed_usable():
    for name in ("w8a8-packed", "w8a8-packed-long-and-tails"):
        got, _, ref32 = make_case(1, **CASES[name])
        out = encoder_layers_cpu(*got)
        ref = encoder_layers_reference(*ref32)
        err = float((out - ref).abs().max() / ref.abs().max())
        assert err <= 1e-3, (name, err)
print("ok")
"""


@pytest.mark.skipif(not f32_usable, reason="the AVX2 kernels need AVX2 with FMA, which this CPU lacks")
@pytest.mark.parametrize("setting", ["FASTFORMERS_CPU_NO_AVX512", "FASTFORMERS_CPU_PORTABLE"])
def test_every_attention_and_w8a8_kernel_matches(setting):
    """The AVX2 kernels of the attention and of W8A8 (format 4's int16 tiles) with FASTFORMERS_CPU_NO_AVX512=1 (on an
    AVX-512 CPU; the default on an AVX2 one), and the portable loops with FASTFORMERS_CPU_PORTABLE=1 (format 4
    refused), each read when the library loads, hence a fresh process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    env[setting] = "1"
    done = subprocess.run([sys.executable, "-c", _KERNEL_PATHS, setting], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr[-2000:]
