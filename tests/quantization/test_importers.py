"""GPTQ and AWQ importers (quantization/gptq.py, awq.py): checkpoint tensors packed here, plainly and
independently of the importers, from known integer codes / zero points / scales; the imported
QuantizedWeight must dequantize to the published formula (float64), and every malformed input must raise
an error that names the tensor."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fastformers import ops
from fastformers.quantization.awq import (
    AWQ_TENSORS,
    check_awq_config,
    import_awq,
    is_awq_config,
)
from fastformers.quantization.gptq import (
    GPTQ_TENSORS,
    check_gptq_config,
    import_gptq,
    is_gptq_config,
)

NAME = "model.layers.0.mlp.up_proj"
FP16_HALF_ULP = 2.0 ** -11  # relative error of one round-to-nearest into float16


# --- packing, written from the published layouts -------------------------------------------------------------

def to_int32(words: torch.Tensor) -> torch.Tensor:
    """int64 words in [0, 2^32) -> the int32 with the same bits (how the checkpoints store them)."""
    return torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)


def pack_rows(values: torch.Tensor, bits: int) -> torch.Tensor:
    """GPTQ qweight: (n, c) -> int32 (n * bits / 32, c); value r * p + j at bits j * bits of row r."""
    per = 32 // bits
    words = torch.zeros(values.shape[0] // per, values.shape[1], dtype=torch.int64)
    for j in range(per):
        words |= values[j::per].long() << (bits * j)
    return to_int32(words)


def pack_cols(values: torch.Tensor, bits: int, order=None) -> torch.Tensor:
    """(r, c) -> int32 (r, ceil(c * bits / 32)); slot i of word w holds column w * p + order[i] (zero padding)."""
    per = 32 // bits
    order = order or list(range(per))
    padded = F.pad(values.long(), (0, -values.shape[1] % per))
    words = torch.zeros(values.shape[0], padded.shape[1] // per, dtype=torch.int64)
    for i, column in enumerate(order):
        words |= padded[:, column::per] << (bits * i)
    return to_int32(words)


def gptq_case(bits, group_size, in_features, out_features, version=2, seed=0, scale_dtype=torch.float16):
    """(tensors, config, expected float64 weight (out, in)) for a random GPTQ linear."""
    g = torch.Generator().manual_seed(seed)
    group = in_features if group_size == -1 else group_size
    groups = math.ceil(in_features / group)
    q = torch.randint(0, 2 ** bits, (in_features, out_features), generator=g)
    if version == 1:  # v1 stores z - 1: z in [1, 2^bits] (a stored 15 is a z of 16)
        z = torch.randint(1, 2 ** bits + 1, (groups, out_features), generator=g)
        stored = z - 1
    else:
        z = stored = torch.randint(0, 2 ** bits, (groups, out_features), generator=g)
    scales = (torch.rand(groups, out_features, generator=g) * 0.02 + 1e-3).to(scale_dtype)
    g_idx = torch.arange(in_features) // group
    tensors = {"qweight": pack_rows(q, bits), "qzeros": pack_cols(stored, bits), "scales": scales,
               "g_idx": g_idx.to(torch.int32), "bias": torch.randn(out_features, generator=g)}
    config = {"quant_method": "gptq", "bits": bits, "group_size": group_size, "desc_act": False, "sym": False,
              "checkpoint_format": "gptq" if version == 1 else "gptq_v2"}
    expected = (scales.double()[g_idx] * (q - z[g_idx]).double()).t()  # w[o, k] = s[g[k], o] (q[k, o] - z[g[k], o])
    return tensors, config, expected


AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def awq_case(group_size, in_features, out_features, seed=0):
    g = torch.Generator().manual_seed(seed)
    group = in_features if group_size == -1 else group_size
    groups = in_features // group
    q = torch.randint(0, 16, (in_features, out_features), generator=g)
    z = torch.randint(0, 16, (groups, out_features), generator=g)
    scales = (torch.rand(groups, out_features, generator=g) * 0.02 + 1e-3).to(torch.float16)
    tensors = {"qweight": pack_cols(q, 4, AWQ_ORDER), "qzeros": pack_cols(z, 4, AWQ_ORDER), "scales": scales}
    config = {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True, "version": "gemm"}
    rows = torch.arange(in_features) // group
    expected = (scales.double()[rows] * (q - z[rows]).double()).t()
    return tensors, config, expected


def check_import(qw, qw32, expected, bias=None):
    """qw (default dtype): expected up to one float16 rounding of mins; qw32 (dtype=float32): exactly;
    quantized_linear(x, qw32) = x @ expected.T (+ bias)."""
    assert qw.shape == qw32.shape == expected.shape
    assert torch.equal(ops.dequantize_weight(qw32, torch.float64), expected)
    got = ops.dequantize_weight(qw, torch.float64)
    if qw.mins is None:
        assert torch.equal(got, expected)
    else:
        mins = qw32.mins.double().repeat_interleave(qw32.group, dim=1)[:, :qw32.in_features]
        bound = mins.abs() * FP16_HALF_ULP + expected.abs() * 2.0 ** -23
        assert bool(((got - expected).abs() <= bound).all())
    x = torch.randn(3, 5, qw32.in_features, generator=torch.Generator().manual_seed(7))
    y = ops.quantized_linear(x, qw32, bias)
    want = x.double() @ expected.t() + (0 if bias is None else bias.double())
    assert (y.double() - want).abs().max() <= 1e-5 * want.abs().max()


# --- GPTQ ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("group_size", [32, 64, 128, -1])
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("out_features", [48, 37])
def test_gptq_dequantizes_to_the_formula(bits, group_size, version, out_features):
    tensors, config, expected = gptq_case(bits, group_size, 256, out_features, version, seed=bits + group_size)
    qw = import_gptq(tensors, config, NAME)
    qw32 = import_gptq(tensors, config, NAME, dtype=torch.float32, shape=(out_features, 256))
    assert qw.bits == bits and qw.dtype == torch.float16 and qw.in_features == 256
    assert qw.group_size == (None if group_size == -1 else group_size)
    check_import(qw, qw32, expected, tensors["bias"])


@pytest.mark.parametrize("bits", [4, 8])
def test_gptq_short_last_group_and_no_g_idx(bits):
    """groups = ceil(in / group_size): the last group is shorter; a checkpoint without g_idx reads as k // g."""
    tensors, config, expected = gptq_case(bits, 64, 160, 24, seed=3)
    del tensors["g_idx"]
    qw = import_gptq(tensors, config, NAME)
    assert qw.scales.shape == (24, 3)
    check_import(qw, import_gptq(tensors, config, NAME, dtype=torch.float32), expected)


def test_gptq_bfloat16_scales_and_dtype_argument():
    tensors, config, expected = gptq_case(4, 32, 128, 16, scale_dtype=torch.bfloat16)
    assert import_gptq(tensors, config, NAME).dtype == torch.bfloat16
    assert import_gptq(tensors, config, NAME, dtype=torch.float16).dtype == torch.float16
    qw32 = import_gptq(tensors, config, NAME, dtype=torch.float32)
    assert torch.equal(ops.dequantize_weight(qw32, torch.float64), expected)


def test_gptq_symmetric_int8_has_no_mins():
    """sym int8 (all z = 128, codes in [1, 255]): int8 codes q - 128 with no mins, as quantize_weight makes."""
    g = torch.Generator().manual_seed(5)
    q = torch.randint(1, 256, (128, 16), generator=g)
    scales = (torch.rand(1, 16, generator=g) * 0.01 + 1e-3).to(torch.float16)
    tensors = {"qweight": pack_rows(q, 8), "qzeros": pack_cols(torch.full((1, 16), 127), 8), "scales": scales}
    qw = import_gptq(tensors, {"quant_method": "gptq", "bits": 8, "group_size": -1, "sym": True}, NAME)
    assert qw.mins is None and qw.group_size is None
    assert torch.equal(qw.qweight, (q - 128).t().to(torch.int8))
    assert torch.equal(ops.dequantize_weight(qw, torch.float64), (scales.double() * (q - 128).double()).t())


def test_gptq_packing_literal():
    """Input k of column 0 holding k (k < 8) is the word 0x76543210: lowest bits first along the input dim."""
    q = torch.arange(8)[:, None].expand(8, 8)
    assert pack_rows(q, 4)[0, 0] == 0x76543210
    tensors = {"qweight": torch.full((1, 8), 0x76543210, dtype=torch.int32),
               "qzeros": torch.zeros(1, 1, dtype=torch.int32), "scales": torch.ones(1, 8, dtype=torch.float16)}
    qw = import_gptq(tensors, {"quant_method": "gptq", "bits": 4, "group_size": -1, "checkpoint_format": "gptq_v2"},
                     NAME)
    assert torch.equal(ops.dequantize_weight(qw, torch.float64), q.t().double())


def test_gptq_act_order_is_a_clear_error():
    tensors, config, _ = gptq_case(4, 32, 128, 16)
    perm = torch.randperm(128, generator=torch.Generator().manual_seed(0))
    tensors["g_idx"] = tensors["g_idx"][perm]
    config["desc_act"] = True
    with pytest.raises(NotImplementedError, match=rf"{NAME}\.g_idx: act-order \(desc_act\)"):
        import_gptq(tensors, config, NAME)


def _drop(key):
    return lambda t: t.pop(key)


def _set(key, value):
    return lambda t: t.__setitem__(key, value(t) if callable(value) else value)


GPTQ_BAD_TENSORS = {
    "missing qweight": (_drop("qweight"), "qweight is missing"),
    "missing qzeros": (_drop("qzeros"), "qzeros is missing"),
    "missing scales": (_drop("scales"), "scales is missing"),
    "qweight int64": (_set("qweight", lambda t: t["qweight"].long()), "qweight: must be a 2-D int32"),
    "qweight 1-D": (_set("qweight", lambda t: t["qweight"].flatten()), "qweight: must be a 2-D int32"),
    "qweight transposed": (_set("qweight", lambda t: t["qweight"].t().contiguous()), "scales: expected shape"),
    "qzeros float": (_set("qzeros", lambda t: t["qzeros"].float()), "qzeros: must be a 2-D int32"),
    "qzeros shape": (_set("qzeros", lambda t: t["qzeros"][:, :-1]), "qzeros: expected shape"),
    "qzeros unpacked": (_set("qzeros", lambda t: t["qzeros"].repeat(1, 8)), "qzeros: expected shape"),
    "scales int": (_set("scales", lambda t: t["scales"].to(torch.int32)), "scales: must be a 2-D float"),
    "scales shape": (_set("scales", lambda t: t["scales"][:-1]), "scales: expected shape"),
    "scales transposed": (_set("scales", lambda t: t["scales"].t()), "scales: expected shape"),
    "g_idx length": (_set("g_idx", lambda t: t["g_idx"][:-8]), "g_idx: must be an integer tensor of shape"),
    "g_idx float": (_set("g_idx", lambda t: t["g_idx"].float()), "g_idx: must be an integer tensor"),
    "g_idx range": (_set("g_idx", lambda t: t["g_idx"] + 1), r"g_idx: group indices must lie in \[0, 4\)"),
    "bias shape": (_set("bias", lambda t: t["bias"][:-1]), "bias: must be a float tensor of shape"),
    "unexpected": (_set("weight", torch.zeros(2)), rf"unexpected tensor\(s\) {NAME}\.weight"),
}


@pytest.mark.parametrize("case", list(GPTQ_BAD_TENSORS))
def test_gptq_bad_tensors_name_the_tensor(case):
    tensors, config, _ = gptq_case(4, 32, 128, 24)
    edit, message = GPTQ_BAD_TENSORS[case]
    edit(tensors)
    with pytest.raises(ValueError, match=rf"{NAME}.*{message}") as info:
        import_gptq(tensors, config, NAME)
    assert NAME in str(info.value)


def test_gptq_shape_argument_names_qweight():
    tensors, config, _ = gptq_case(4, 32, 128, 16)
    with pytest.raises(ValueError, match=rf"{NAME}\.qweight: packs a weight of shape \(16, 128\)"):
        import_gptq(tensors, config, NAME, shape=(16, 136))


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"bits": 2}, NotImplementedError, "bits=2 is not supported yet"),
    ({"bits": 3}, NotImplementedError, "bits=3 is not supported yet"),
    ({"bits": 5}, ValueError, "bits=5"),
    ({"group_size": 0}, ValueError, "group_size=0"),
    ({"checkpoint_format": "marlin"}, NotImplementedError, "checkpoint_format='marlin'"),
    ({"is_marlin_format": True}, NotImplementedError, "checkpoint_format='marlin'"),
    ({"pack_dtype": "int16"}, NotImplementedError, "pack_dtype='int16'"),
    ({"quant_method": "awq"}, ValueError, "quant_method='awq'"),
])
def test_gptq_bad_config(change, error, message):
    tensors, config, _ = gptq_case(4, 32, 128, 16)
    with pytest.raises(error, match=rf"quantization_config: (GPTQ )?{message}"):
        import_gptq(tensors, {**config, **change}, NAME)


def test_gptq_config_reading():
    # transformers' GPTQConfig.to_dict() spelling, GPTQModel's newer "format" key, and the defaults
    assert check_gptq_config({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False}) == \
        {"bits": 4, "group_size": 128, "version": 1}
    assert check_gptq_config({"bits": 8, "group_size": -1, "format": "gptq_v2", "pack_dtype": "int32"}) == \
        {"bits": 8, "group_size": -1, "version": 2}
    assert is_gptq_config({"quant_method": "gptq"}) and not is_gptq_config({"quant_method": "awq"})
    assert GPTQ_TENSORS == ("qweight", "qzeros", "scales", "g_idx", "bias")


# --- AWQ -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("group_size", [32, 64, 128, -1])
@pytest.mark.parametrize("out_features", [48, 37])
def test_awq_dequantizes_to_the_formula(group_size, out_features):
    tensors, config, expected = awq_case(group_size, 256, out_features, seed=group_size)
    qw = import_awq(tensors, config, NAME)
    qw32 = import_awq(tensors, config, NAME, dtype=torch.float32, shape=(out_features, 256))
    assert qw.bits == 4 and qw.dtype == torch.float16 and qw.group_size == (None if group_size == -1 else group_size)
    check_import(qw, qw32, expected)


def test_awq_packing_literal():
    """Output column c of row 0 holding c (c < 8) is the word 0x75316420: nibble i holds column AWQ_ORDER[i]."""
    q = torch.arange(8)[None].expand(8, 8)
    assert pack_cols(q, 4, AWQ_ORDER)[0, 0] == 0x75316420
    tensors = {"qweight": torch.full((8, 1), 0x75316420, dtype=torch.int32),
               "qzeros": torch.zeros(1, 1, dtype=torch.int32), "scales": torch.ones(1, 8, dtype=torch.float16)}
    qw = import_awq(tensors, {"quant_method": "awq", "bits": 4, "group_size": -1, "version": "gemm"}, NAME)
    assert torch.equal(ops.dequantize_weight(qw, torch.float64), q.t().double())


AWQ_BAD_TENSORS = {
    "missing qweight": (_drop("qweight"), "qweight is missing"),
    "missing qzeros": (_drop("qzeros"), "qzeros is missing"),
    "missing scales": (_drop("scales"), "scales is missing"),
    "qweight float": (_set("qweight", lambda t: t["qweight"].float()), "qweight: must be a 2-D int32"),
    "qweight gptq layout": (_set("qweight", lambda t: t["qweight"].view(-1, 48)), "qweight: expected shape"),
    "qzeros shape": (_set("qzeros", lambda t: t["qzeros"][:-1]), "qzeros: expected shape"),
    "scales shape": (_set("scales", lambda t: t["scales"][:-1]), "scales: expected shape"),
    "scales int": (_set("scales", lambda t: t["scales"].to(torch.int16)), "scales: must be a 2-D float"),
    "bias": (_set("bias", torch.zeros(47)), "bias: must be a float tensor of shape"),
    "g_idx": (_set("g_idx", torch.zeros(128, dtype=torch.int32)), rf"unexpected tensor\(s\) {NAME}\.g_idx"),
}


@pytest.mark.parametrize("case", list(AWQ_BAD_TENSORS))
def test_awq_bad_tensors_name_the_tensor(case):
    tensors, config, _ = awq_case(32, 128, 48)
    edit, message = AWQ_BAD_TENSORS[case]
    edit(tensors)
    with pytest.raises(ValueError, match=rf"{NAME}.*{message}") as info:
        import_awq(tensors, config, NAME)
    assert NAME in str(info.value)


def test_awq_group_size_must_divide_in_features():
    tensors, config, _ = awq_case(32, 96, 16)
    with pytest.raises(ValueError, match=rf"{NAME}: group_size=64 does not divide in_features=96"):
        import_awq(tensors, {**config, "group_size": 64}, NAME)


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"version": "gemv"}, NotImplementedError, "version='gemv'"),
    ({"version": "marlin"}, NotImplementedError, "version='marlin'"),
    ({"version": "GEMV_FAST"}, NotImplementedError, "version='gemv_fast'"),
    ({"bits": 8}, NotImplementedError, "bits=8"),
    ({"zero_point": False}, NotImplementedError, "zero_point=False"),
    ({"backend": "llm-awq"}, NotImplementedError, "backend='llm-awq'"),
    ({"group_size": -2}, ValueError, "group_size=-2"),
    ({"quant_method": "gptq"}, ValueError, "quant_method='gptq'"),
])
def test_awq_bad_config(change, error, message):
    tensors, config, _ = awq_case(32, 128, 16)
    with pytest.raises(error, match=rf"quantization_config: (AWQ )?{message}"):
        import_awq(tensors, {**config, **change}, NAME)


def test_awq_config_reading():
    # transformers' AwqConfig spelling and AutoAWQ's own quant_config.json spelling (uppercase version)
    assert check_awq_config({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
                             "version": "gemm", "backend": "autoawq"}) == {"bits": 4, "group_size": 128}
    assert check_awq_config({"w_bit": 4, "q_group_size": 64, "zero_point": True, "version": "GEMM"}) == \
        {"bits": 4, "group_size": 64}
    assert is_awq_config({"quant_method": "AWQ"}) and not is_awq_config({"quant_method": "gptq"})
    assert AWQ_TENSORS == ("qweight", "qzeros", "scales", "bias")


def test_importers_keep_the_device_and_do_not_touch_inputs():
    tensors, config, _ = gptq_case(4, 32, 128, 16)
    before = {k: v.clone() for k, v in tensors.items()}
    qw = import_gptq(tensors, config, NAME)
    assert qw.device == tensors["qweight"].device
    assert all(torch.equal(before[k], tensors[k]) for k in before)
