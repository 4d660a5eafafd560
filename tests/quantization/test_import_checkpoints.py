"""GPTQ and AutoAWQ checkpoints loaded by from_pretrained, as transformers users have them: a tiny random Llama's
linears quantized here (known integer codes, zero points and float16 scales), packed in GPTQ / AWQ GEMM layout
with test_importers.py's packers, written as sharded safetensors with a transformers-style quantization_config.
The loaded model must compute exactly what a float model whose linear weights are the dequantized values
computes (logits and greedy generation), keep lm_head float, save in fastformers' packed format and load back
bit-identically; a bad checkpoint must raise an error naming the module, tensor or config key."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_reference, rel_err
from safetensors.torch import load_file, save_file
from test_importers import AWQ_ORDER, pack_cols, pack_rows
from torch import nn

import fastformers
from fastformers.quantization import QuantizedLinear
from fastformers.quantization.imported import ImportedLoader

LLAMA = dict(vocab_size=99, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
LINEARS = [f"model.layers.{i}.{part}" for i in range(2) for part in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
    "mlp.down_proj")]
GPTQ_V1 = {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": False, "sym": False,
           "checkpoint_format": "gptq"}
GPTQ_V2_INT8 = {"quant_method": "gptq", "bits": 8, "group_size": 32, "desc_act": False, "sym": False,
                "checkpoint_format": "gptq_v2", "modules_to_not_convert": ["lm_head", "model.layers.1.mlp.gate_proj"]}
AWQ = {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True, "version": "gemm",
       "backend": "autoawq"}
CASES = {"gptq-v1-int4": GPTQ_V1, "gptq-v2-int8-partial": GPTQ_V2_INT8, "awq-gemm": AWQ}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(folder, transformers model) of the float Llama the checkpoints are quantized from."""
    return build_reference("llama", "AutoModelForCausalLM", tmp_path_factory.mktemp("llama"), **LLAMA)


def quantize_codes(w: torch.Tensor, bits: int, group: int, min_zero: int = 0):
    """Round-to-nearest asymmetric codes of a float weight (out, in), in the checkpoints' orientation:
    q (in, out) in [0, 2^bits), z (groups, out) in [min_zero, 2^bits), scales float16 (groups, out)."""
    out, n = w.shape
    qmax = 2 ** bits - 1
    wg = w.double().t().reshape(n // group, group, out)
    lo, hi = wg.amin(1), wg.amax(1)
    scales = ((hi - lo) / qmax).clamp_min(1e-4).half()
    s = scales.double()
    z = torch.round(-lo / s).clamp(min_zero, qmax)
    q = torch.round(wg / s[:, None] + z[:, None]).clamp(0, qmax)
    return q.reshape(n, out).long(), z.long(), scales


def dequantized(q, z, scales, group):
    """w[o, k] = s[k // g, o] * (q[k, o] - z[k // g, o]) as a float32 (out, in) weight (exact: <= 20 bits)."""
    rows = torch.arange(q.shape[0]) // group
    return (scales.double()[rows] * (q - z[rows]).double()).t().float().contiguous()


def write_checkpoints(folder, reference, qconfig, edit=None, shards=2):
    """Write `folder`/quantized (GPTQ / AWQ safetensors, `shards` files with the tensors of most modules split
    across them) and `folder`/float (the float model with each quantized weight dequantized); returns both."""
    source, hf_model = reference
    method, bits, group = qconfig["quant_method"], qconfig["bits"], qconfig["group_size"]
    keep = qconfig.get("modules_to_not_convert") or []
    state = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    float_state, quantized = dict(state), dict(state)
    for name in LINEARS:
        if name in keep:
            continue
        w = quantized.pop(f"{name}.weight")
        v1 = method == "gptq" and qconfig.get("checkpoint_format") == "gptq"
        q, z, scales = quantize_codes(w, bits, group, min_zero=1 if v1 else 0)  # v1 stores z - 1 >= 0
        float_state[f"{name}.weight"] = dequantized(q, z, scales, group)
        if method == "gptq":
            parts = {"qweight": pack_rows(q, bits), "qzeros": pack_cols(z - int(v1), bits), "scales": scales,
                     "g_idx": (torch.arange(q.shape[0]) // group).to(torch.int32)}
        else:
            parts = {"qweight": pack_cols(q, 4, AWQ_ORDER), "qzeros": pack_cols(z, 4, AWQ_ORDER), "scales": scales}
        quantized.update({f"{name}.{p}": t for p, t in parts.items()})
    if edit is not None:
        edit(quantized)
    config = json.loads((source / "config.json").read_text())
    paths = {}
    kinds = (("float", float_state, {}), ("quantized", quantized, {"quantization_config": qconfig}))
    for kind, tensors, extra in kinds:
        path = folder / kind
        path.mkdir(parents=True)
        (path / "config.json").write_text(json.dumps({**config, **extra}))
        names = sorted(tensors)
        n = shards if kind == "quantized" else 1
        if n == 1:
            save_file({k: tensors[k].contiguous() for k in names}, str(path / "model.safetensors"))
        else:
            weight_map = {}
            for i in range(n):
                file = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
                part = {k: tensors[k].contiguous() for k in names[i::n]}  # neighbours land in different shards
                save_file(part, str(path / file), metadata={"format": "pt"})
                weight_map.update({k: file for k in part})
            (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        paths[kind] = path
    return paths["quantized"], paths["float"], float_state


def _ids(shape=(2, 11), seed=0):
    return torch.randint(3, LLAMA["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


def row_major_(model):
    """Plain contiguous linear weights (from_pretrained lays them K-major on the CPU), so that the float model's
    matmuls see the same memory layout as the dequantized weights of the quantized one."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.data = module.weight.data.contiguous()
    return model


def quantized_names(model):
    return sorted(n for n, m in model.named_modules() if isinstance(m, QuantizedLinear))


@pytest.mark.parametrize("case", list(CASES))
def test_loads_as_the_dequantized_float_model(reference, tmp_path, case):
    check_against_float_model(reference, tmp_path, CASES[case])


def test_biases_load_as_plain_parameters(tmp_path):
    """attention_bias / mlp_bias: `<module>.bias` next to the packed tensors, in whichever shard it lands."""
    reference = build_reference("llama", "AutoModelForCausalLM", tmp_path / "ref", seed=3,
                                **dict(LLAMA, attention_bias=True, mlp_bias=True))
    q = check_against_float_model(reference, tmp_path, GPTQ_V1)
    up = q.model.layers[1].mlp.up_proj
    assert isinstance(up, QuantizedLinear) and torch.equal(up.bias, reference[1].model.layers[1].mlp.up_proj.bias)


def check_against_float_model(reference, tmp_path, qconfig):
    hf_model = reference[1]
    qpath, fpath, float_state = write_checkpoints(tmp_path, reference, qconfig)
    q = fastformers.AutoModelForCausalLM.from_pretrained(qpath)
    kept = [n for n in LINEARS if n in qconfig.get("modules_to_not_convert", [])]
    assert quantized_names(q) == sorted(set(LINEARS) - set(kept))
    assert isinstance(q.lm_head, nn.Linear) and torch.equal(q.lm_head.weight, hf_model.lm_head.weight)
    for name in kept:
        assert isinstance(q.get_submodule(name), nn.Linear)  # float (layers.Linear), not a QuantizedLinear
    up = q.model.layers[0].mlp.up_proj
    assert up.weight.bits == qconfig["bits"] and up.weight.group_size == 32 and up.scales.dtype == torch.float32
    for name in quantized_names(q):  # the exact dequantized values, no rounding anywhere
        weight = fastformers.ops.dequantize_weight(q.get_submodule(name).weight)
        assert torch.equal(weight, float_state[f"{name}.weight"]), name
    assert q.config.quantization_config["quant_method"] == "fastformers"

    ref = row_major_(fastformers.AutoModelForCausalLM.from_pretrained(fpath))
    hf_model = type(hf_model)(hf_model.config).eval()
    hf_model.load_state_dict(float_state)
    ids, mask = _ids(), torch.ones(2, 11, dtype=torch.long)
    mask[1, :4] = 0  # left padding
    with torch.no_grad():
        with fastformers.ops.use_backend("torch"):  # the reference dequantizes, then the same matmul: bit for bit
            exact = q(ids, attention_mask=mask).logits
            assert torch.equal(exact, ref(ids, attention_mask=mask).logits)
        got = q(ids, attention_mask=mask).logits  # auto: the compiled CPU kernel on the packed codes
        want = ref(ids, attention_mask=mask).logits
        theirs = hf_model(ids, attention_mask=mask).logits
    real = mask.bool()
    assert rel_err(got[real], want[real]) <= 1e-5  # float32 rounding only (sums in another order)
    assert rel_err(got[real], theirs[real]) <= 1e-5  # transformers: float32 rounding only
    kmajor = fastformers.AutoModelForCausalLM.from_pretrained(fpath)  # as loaded: a different GEMM layout
    with torch.no_grad():
        assert rel_err(got[real], kmajor(ids, attention_mask=mask).logits[real]) <= 1e-5

    prompt = _ids((1, 5), seed=1)
    greedy = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False)
    out = q.generate(prompt, **greedy)
    assert out.shape == (1, 17) and torch.equal(out, ref.generate(prompt, **greedy))
    return q


@pytest.mark.parametrize("case", list(CASES))
def test_save_pretrained_round_trip_is_bit_identical(reference, tmp_path, case):
    qconfig = CASES[case]
    qpath, _, _ = write_checkpoints(tmp_path / "src", reference, qconfig)
    q = fastformers.AutoModelForCausalLM.from_pretrained(qpath)
    ids = _ids()
    with torch.no_grad():
        before = q(ids).logits
    q.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "fastformers" and saved["bits"] == qconfig["bits"] and saved["group_size"] == 32
    assert saved["skip"] == ["lm_head"] + [m for m in qconfig.get("modules_to_not_convert", []) if m != "lm_head"]
    tensors = load_file(tmp_path / "saved" / "model.safetensors")
    assert not any(k.endswith(("qzeros", "g_idx")) for k in tensors) and "lm_head.weight" in tensors
    again = fastformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert quantized_names(again) == quantized_names(q)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, before)
    for key, value in again.state_dict().items():
        assert torch.equal(value, tensors[key]), key


def test_model_dtype_is_the_import_dtype(reference, tmp_path):
    qpath, _, _ = write_checkpoints(tmp_path, reference, AWQ, shards=1)
    q = fastformers.AutoModelForCausalLM.from_pretrained(qpath, dtype=torch.bfloat16)
    m = q.model.layers[1].self_attn.o_proj
    assert m.scales.dtype == m.mins.dtype == torch.bfloat16 and q.lm_head.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.isfinite(q(_ids()).logits.float()).all()


def test_tensors_are_imported_as_soon_as_a_module_is_complete(reference, tmp_path, monkeypatch):
    """One file, a module's tensors next to each other: at most one module's int32 tensors are held at a time."""
    qpath, _, _ = write_checkpoints(tmp_path, reference, GPTQ_V1, shards=1)
    most = []
    convert = ImportedLoader.convert

    def spy(self, *args, **kwargs):
        result = convert(self, *args, **kwargs)
        most.append(len(self.pending))
        return result

    monkeypatch.setattr(ImportedLoader, "convert", spy)
    fastformers.AutoModelForCausalLM.from_pretrained(qpath)
    assert max(most) == 1 and most[-1] == 0


def _drop(key):
    return lambda t: t.pop(key)


def _truncate(key):
    return lambda t: t.__setitem__(key, t[key][:-1].contiguous())


def _shuffle(key):
    return lambda t: t.__setitem__(key, t[key][torch.randperm(t[key].numel(), generator=torch.Generator()
                                                                          .manual_seed(0))].contiguous())


def _add(key, value):
    return lambda t: t.__setitem__(key, value)


M = "model.layers.1.mlp.down_proj"
# case: (config the checkpoint is written with, edit of its tensors, config.json's quantization_config instead)
BAD = {
    "missing qzeros": (GPTQ_V1, _drop(f"{M}.qzeros"), None, ValueError, rf"{M}\.qzeros is missing"),
    "missing scales awq": (AWQ, _drop(f"{M}.scales"), None, ValueError, rf"{M}\.scales is missing"),
    "missing qweight": (GPTQ_V1, _drop(f"{M}.qweight"), None, ValueError, rf"{M}\.qweight is missing"),
    "qweight shape": (GPTQ_V1, _truncate(f"{M}.qweight"), None, ValueError,
                      rf"{M}\.qweight: packs a weight of shape \(64, 88\) \(out, in\), the model expects \(64, 96\)"),
    "qweight shape awq": (AWQ, _truncate(f"{M}.qweight"), None, ValueError,
                          rf"{M}\.qweight: with {M}\.scales, packs a weight of shape \(64, 95\)"),
    "act order": ({**GPTQ_V1, "desc_act": True}, _shuffle(f"{M}.g_idx"), None, NotImplementedError,
                  rf"{M}\.g_idx: act-order \(desc_act\)"),
    "bits 3": (GPTQ_V1, None, {**GPTQ_V1, "bits": 3}, NotImplementedError,
               r"config\.json: quantization_config: GPTQ bits=3 is not supported"),
    "awq gemv": (AWQ, None, {**AWQ, "version": "gemv"}, NotImplementedError,
                 r"quantization_config: AWQ version='gemv' is not supported"),
    "weight and qweight": (GPTQ_V1, _add(f"{M}.weight", torch.zeros(64, 96)), None, ValueError,
                           rf"both a float weight .*{M}"),
    "not converted but packed": (GPTQ_V1, None, {**GPTQ_V1, "modules_to_not_convert": [M]}, ValueError,
                                 rf"{M}\.\w+: a GPTQ tensor for {M}, which stays float: .*modules_to_not_convert"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_checkpoints_name_the_module_tensor_or_key(reference, tmp_path, case):
    qconfig, edit, saved, error, message = BAD[case]
    qpath, _, _ = write_checkpoints(tmp_path, reference, qconfig, edit)
    if saved is not None:
        cfg = json.loads((qpath / "config.json").read_text())
        (qpath / "config.json").write_text(json.dumps({**cfg, "quantization_config": saved}))
    with pytest.raises(error, match=message):
        fastformers.AutoModelForCausalLM.from_pretrained(qpath)


def test_a_quantization_request_on_top_of_a_gptq_checkpoint_is_refused(reference, tmp_path):
    qpath, _, _ = write_checkpoints(tmp_path, reference, GPTQ_V1, shards=1)
    with pytest.raises(ValueError, match="already quantized \\(quant_method='gptq'\\)"):
        fastformers.AutoModelForCausalLM.from_pretrained(qpath, load_in_8bit=True)
