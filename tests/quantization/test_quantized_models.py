"""Quantized models end to end on tiny random Llama and BERT checkpoints: from_pretrained(quantization_config=...)
against the float model (close within the measured quantization error, and bit-identical to a float model whose
weights are dequantize_weight(quantize_weight(w))), save/load round trips, load_in_8bit / load_in_4bit, skip
patterns, fused quantized linears, errors of bad quantized checkpoints, and peak memory while loading."""

from __future__ import annotations

import json
import weakref

import pytest
import torch
from conftest import build_reference, rel_err
from safetensors.torch import load_file, save_file
from torch import nn

import fastformers
from fastformers import QuantizationConfig, ops
from fastformers.quantization import QuantizedLinear, quantize_model

LLAMA = dict(vocab_size=99, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
BERT = dict(vocab_size=99, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64)
FORMATS = [dict(bits=8, group_size=None), dict(bits=8, group_size=32), dict(bits=4, group_size=32),
           dict(bits=4, group_size=None, symmetric=True), dict(bits=8, group_size=48, symmetric=False)]


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory):
    return build_reference("llama", "AutoModelForCausalLM", tmp_path_factory.mktemp("llama"), **LLAMA)[0]


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory):
    return build_reference("bert", "AutoModelForMaskedLM", tmp_path_factory.mktemp("bert"), **BERT)[0]


def _ids(vocab=99, shape=(2, 11), seed=0):
    return torch.randint(3, vocab, shape, generator=torch.Generator().manual_seed(seed))


def quantized_names(model):
    return sorted(n for n, m in model.named_modules() if isinstance(m, QuantizedLinear))


def fake_quantized(float_model, quantized_model):
    """The float model with each weight the quantized model quantizes replaced by dequantize(quantize(w))."""
    with torch.no_grad():
        for name, module in quantized_model.named_modules():
            if isinstance(module, QuantizedLinear):
                lin = float_model.get_submodule(name)
                fmt = module.format
                qw = ops.quantize_weight(lin.weight.detach(), fmt.bits, fmt.group_size, fmt.symmetric, fmt.method)
                lin.weight = nn.Parameter(ops.dequantize_weight(qw))
    return float_model


def weight_error(float_model, quantized_model) -> float:
    """The largest relative (Frobenius) error of a quantized weight."""
    errs = []
    for name, module in quantized_model.named_modules():
        if isinstance(module, QuantizedLinear):
            w = float_model.get_submodule(name).weight.detach().double()
            errs.append(float((ops.dequantize_weight(module.weight).double() - w).norm() / w.norm()))
    return max(errs)


def same_numbers(q, fake, *args, **kwargs):
    """The plumbing: the quantized model computes what a float model holding the dequantized weights does -- bit
    for bit on the torch reference (dequantize, then the same matmul), and within float32 rounding (sums in
    another order) on the cpu backend's compiled kernel. Returns the auto-mode logits."""
    with ops.use_backend("torch"):
        assert torch.equal(q(*args, **kwargs).logits, fake(*args, **kwargs).logits)
    got = q(*args, **kwargs).logits
    assert rel_err(got, fake(*args, **kwargs).logits) <= 1e-5
    return got


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: "-".join(f"{k}{v}" for k, v in f.items()))
def test_llama_matches_fake_quantized_float_model_exactly(llama_path, fmt):
    cfg = QuantizationConfig(**fmt)
    q = fastformers.AutoModelForCausalLM.from_pretrained(llama_path, quantization_config=cfg)
    names = quantized_names(q)
    assert len(names) == 14 and "lm_head" not in names  # 7 linears x 2 layers; the head stays float
    assert isinstance(q.lm_head, nn.Linear)
    m = q.model.layers[0].self_attn.q_proj
    assert isinstance(m.weight, ops.QuantizedWeight) and m.weight.bits == fmt["bits"]
    assert "weight" not in dict(m.named_parameters()) and m.qweight.dtype in (torch.int8, torch.uint8)
    ref = fastformers.AutoModelForCausalLM.from_pretrained(llama_path)
    werr = weight_error(ref, q)
    ids, mask = _ids(), torch.ones(2, 11, dtype=torch.long)
    mask[1, :4] = 0  # left padding
    with torch.no_grad():
        full = ref(ids, attention_mask=mask).logits
        got = same_numbers(q, fake_quantized(ref, q), ids, attention_mask=mask)  # the plumbing
    real = mask.bool()
    err = rel_err(got[real], full[real])
    # against the float model: the error the quantized weights bring (these 2-layer random models amplify
    # a relative weight error w by a factor ~2-4 on the logits; measured: int8 ~1-2%, int4 g32 ~25%)
    print(f"logits error {err:.4f}, weight error {werr:.4f}")
    assert 0 < err <= 6 * werr, f"logits error {err:.4f} vs weight error {werr:.4f}"


def test_bert_matches_fake_quantized_float_model_exactly(bert_path):
    cfg = QuantizationConfig(bits=4, group_size=32)
    q = fastformers.AutoModelForMaskedLM.from_pretrained(bert_path, quantization_config=cfg)
    names = quantized_names(q)
    # 6 linears per layer and the MLM transform; the decoder is tied to the word embeddings and stays float
    assert len(names) == 13 and "cls.predictions.transform.dense" in names
    assert isinstance(q.cls.predictions.decoder, nn.Linear)
    assert q.cls.predictions.decoder.weight is q.bert.embeddings.word_embeddings.weight
    ref = fastformers.AutoModelForMaskedLM.from_pretrained(bert_path)
    werr = weight_error(ref, q)
    ids, mask = _ids(), torch.ones(2, 11, dtype=torch.long)
    mask[1, 7:] = 0
    with torch.no_grad():
        full = ref(ids, attention_mask=mask).logits
        got = same_numbers(q, fake_quantized(ref, q), ids, attention_mask=mask)  # the plumbing
    real = mask.bool()
    err = rel_err(got[real], full[real])
    print(f"logits error {err:.4f}, weight error {werr:.4f}")
    assert 0 < err <= 6 * werr, f"logits error {err:.4f} vs weight error {werr:.4f}"


@pytest.mark.parametrize("fmt", [dict(bits=4, group_size=32), dict(bits=8, group_size=None),
                                 dict(method="w8a8")], ids=["int4-g32", "int8", "w8a8"])
def test_save_load_round_trip_is_bit_identical(llama_path, tmp_path, fmt, monkeypatch):
    q = fastformers.AutoModelForCausalLM.from_pretrained(llama_path, quantization_config=QuantizationConfig(**fmt))
    ids = _ids()
    with torch.no_grad():
        before = q(ids).logits
    q.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "fastformers" and saved["skip"] == ["lm_head"]
    assert QuantizationConfig.from_dict(saved).format_for("model.layers.0.mlp.up_proj") == \
        q.model.layers[0].mlp.up_proj.format
    tensors = load_file(tmp_path / "model.safetensors")
    prefix = "model.layers.1.self_attn.q_proj"
    assert f"{prefix}.qweight" in tensors and f"{prefix}.scales" in tensors and f"{prefix}.weight" not in tensors
    assert (f"{prefix}.mins" in tensors) == (fmt.get("bits") == 4)
    assert "lm_head.weight" in tensors

    def no_requantizing(*args, **kwargs):
        raise AssertionError("a saved quantized checkpoint was quantized again")

    monkeypatch.setattr("fastformers.quantization.linear.quantize_weight", no_requantizing)
    for loader in (fastformers.AutoModelForCausalLM, type(q)):
        again = loader.from_pretrained(tmp_path)
        assert quantized_names(again) == quantized_names(q)
        with torch.no_grad():
            after = again(ids).logits
        assert torch.equal(before, after)
        for key, value in again.state_dict().items():
            assert torch.equal(value, tensors[key]), key
    # the checkpoint is quantized already: a different request is ignored (with a warning), as in transformers
    other = fastformers.AutoModelForCausalLM.from_pretrained(tmp_path, load_in_4bit=fmt.get("bits") != 4)
    with torch.no_grad():
        assert torch.equal(other(ids).logits, before)


def test_load_in_8bit_and_4bit(llama_path):
    ids = _ids()
    for flag, bits in (("load_in_8bit", 8), ("load_in_4bit", 4)):
        q = fastformers.AutoModelForCausalLM.from_pretrained(llama_path, **{flag: True})
        formats = {m.format for m in q.modules() if isinstance(m, QuantizedLinear)}
        assert formats == {QuantizationConfig(bits=bits, group_size=128).format_for("")}, flag
        assert q.config.quantization_config["bits"] == bits
        with torch.no_grad():
            assert torch.isfinite(q(ids).logits).all()
    # the class itself (not AutoModel) takes the same arguments
    q = type(q).from_pretrained(llama_path, quantization_config={"bits": 8, "group_size": 32})
    assert q.model.layers[0].mlp.down_proj.format.group_size == 32
    with pytest.raises(ValueError, match="load_in_8bit=True and load_in_4bit=True"):
        fastformers.AutoModelForCausalLM.from_pretrained(llama_path, load_in_8bit=True, load_in_4bit=True)
    with pytest.raises(ValueError, match="either quantization_config or load_in_8bit"):
        fastformers.AutoModelForCausalLM.from_pretrained(llama_path, load_in_8bit=True,
                                                         quantization_config=QuantizationConfig(bits=4))
    with pytest.raises(ValueError, match="bits=5"):
        fastformers.AutoModelForCausalLM.from_pretrained(llama_path, quantization_config={"bits": 5})
    with pytest.raises(ValueError, match="from_gguf.*gguf_file"):
        fastformers.AutoModelForCausalLM.from_pretrained(llama_path, quantization_config=QuantizationConfig.from_gguf())


def test_skip_patterns(llama_path, tmp_path_factory):
    q = fastformers.AutoModelForCausalLM.from_pretrained(llama_path, quantization_config=QuantizationConfig(
        bits=8, skip=["mlp", "*.layers.1.self_attn.o_proj"]))
    names = quantized_names(q)
    assert not any(".mlp." in n for n in names) and "model.layers.1.self_attn.o_proj" not in names
    assert "model.layers.0.self_attn.o_proj" in names and len(names) == 7 + 1
    assert isinstance(q.model.layers[0].mlp.gate_proj, nn.Linear)
    assert isinstance(q.lm_head, QuantizedLinear)  # a list replaces the default: the untied head is quantized
    q = fastformers.AutoModelForCausalLM.from_pretrained(llama_path, quantization_config=QuantizationConfig(
        skip=["lm_head", "down_proj"]))
    assert isinstance(q.lm_head, nn.Linear) and len(quantized_names(q)) == 12
    # a tied lm_head stays float whatever skip says (its weight is the embedding matrix)
    tied = build_reference("llama", "AutoModelForCausalLM", tmp_path_factory.mktemp("tied"),
                           **dict(LLAMA, tie_word_embeddings=True))[0]
    q = fastformers.AutoModelForCausalLM.from_pretrained(tied, quantization_config=QuantizationConfig(skip=[]))
    assert isinstance(q.lm_head, nn.Linear) and q.lm_head.weight is q.model.embed_tokens.weight


def test_mixed_formats_fuse_only_what_agrees(llama_path, tmp_path):
    """q_proj of layer 0 in int8, every other linear int4: layer 0's q/k/v run one by one, layer 1's fused."""
    cfg = QuantizationConfig(bits=4, group_size=32,
                             modules={"model.layers.0.self_attn.q_proj": {"bits": 8, "group_size": None}})
    q = fastformers.AutoModelForCausalLM.from_pretrained(llama_path, quantization_config=cfg)
    assert q.model.layers[0].self_attn.q_proj.format.bits == 8 and q.model.layers[1].self_attn.q_proj.format.bits == 4
    ref = fastformers.AutoModelForCausalLM.from_pretrained(llama_path)
    ids = _ids()
    with torch.no_grad():
        got = same_numbers(q, fake_quantized(ref, q), ids)
    assert q.model.layers[0].self_attn.qkv.weight is None  # formats differ: not fused
    fused = q.model.layers[1].self_attn.qkv.weight
    assert isinstance(fused, ops.QuantizedWeight) and fused.out_features == 128
    # the modules' buffers are views of the fused storage (no second copy)
    k = q.model.layers[1].self_attn.k_proj
    assert k.qweight.untyped_storage().data_ptr() == fused.qweight.untyped_storage().data_ptr()
    q.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved["modules"] == {"model.layers.0.self_attn.q_proj": {"bits": 8, "group_size": None, "symmetric": True}}
    again = fastformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, got)


def test_quantize_model_in_memory_equals_quantized_loading(llama_path, tmp_path):
    cfg = QuantizationConfig(bits=4, group_size=32)
    model = fastformers.AutoModelForCausalLM.from_pretrained(llama_path)
    ids = _ids()
    with torch.no_grad():
        model(ids)  # fuse the float linears first: quantizing must follow the modules it replaces
        quantize_model(model, cfg)
        loaded = fastformers.AutoModelForCausalLM.from_pretrained(llama_path, quantization_config=cfg)
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert model.config.quantization_config == loaded.config.quantization_config
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(fastformers.AutoModelForCausalLM.from_pretrained(tmp_path)(ids).logits, loaded(ids).logits)


def test_float16_scales(llama_path):
    q = fastformers.AutoModelForCausalLM.from_pretrained(llama_path, dtype=torch.float16, load_in_8bit=True)
    m = q.model.layers[0].mlp.up_proj
    assert m.scales.dtype == torch.float16 and m.qweight.dtype == torch.int8 and q.dtype == torch.float16
    ref = fastformers.AutoModelForCausalLM.from_pretrained(llama_path, dtype=torch.float16)
    with torch.no_grad():
        assert torch.equal(q(_ids()).logits, fake_quantized(ref, q)(_ids()).logits)


# -- bad quantized checkpoints ------------------------------------------------------------------------
Q = "model.layers.0.self_attn.q_proj"


def _drop(key):
    def edit(tensors, config):
        del tensors[key]
    return edit


def _set(key, fn):
    def edit(tensors, config):
        tensors[key] = fn(tensors[key])
    return edit


def _config(**changes):
    def edit(tensors, config):
        config["quantization_config"].update(changes)
    return edit


def _float_weight(tensors, config):
    for part in ("qweight", "scales", "mins"):
        del tensors[f"{Q}.{part}"]
    tensors[f"{Q}.weight"] = torch.zeros(64, 64)


@pytest.mark.parametrize("edit, words", [
    (_drop(f"{Q}.scales"), [f"{Q}.scales", "no"]),
    (_drop(f"{Q}.mins"), [f"{Q}.mins", "int4"]),
    (_drop(f"{Q}.qweight"), [f"{Q}.qweight"]),
    (_set(f"{Q}.qweight", lambda t: t[:, :-1].contiguous()), [f"{Q}.qweight", "(64, 32)", "(64, 31)"]),
    (_set(f"{Q}.qweight", lambda t: t.to(torch.int32)), [f"{Q}.qweight", "uint8", "int32"]),
    (_set(f"{Q}.scales", lambda t: t[:, :1].contiguous()), [f"{Q}.scales", "(64, 2)", "(64, 1)"]),
    (_set(f"{Q}.mins", lambda t: t.to(torch.int8)), [f"{Q}.mins", "float", "int8"]),
    (_config(bits=3), ["config.json", "quantization_config", "bits=3"]),
    (_config(group_size=64), ["model.layers.0.", "expected a float tensor of shape", "groups of 64"]),
    (_config(bits=8), ["model.layers.0.", ".qweight: expected an int8 tensor", "got uint8"]),
    (_float_weight, [f"{Q}.weight", "float weight in a quantized checkpoint"]),
], ids=["no-scales", "no-mins", "no-qweight", "qweight-shape", "qweight-dtype", "scales-shape", "mins-dtype",
        "bits-3", "group-size", "bits-8", "float-weight"])
def test_bad_quantized_checkpoints_name_the_tensor(llama_path, tmp_path, edit, words):
    q = fastformers.AutoModelForCausalLM.from_pretrained(llama_path, quantization_config=QuantizationConfig(
        bits=4, group_size=32))
    q.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    config = json.loads((tmp_path / "config.json").read_text())
    edit(tensors, config)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as e:
        fastformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    for word in words:
        assert word in str(e.value), (word, str(e.value))


def test_unexpected_mins_in_int8_symmetric_checkpoint(llama_path, tmp_path):
    q = fastformers.AutoModelForCausalLM.from_pretrained(llama_path, load_in_8bit=True)
    q.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors[f"{Q}.mins"] = torch.zeros_like(tensors[f"{Q}.scales"])
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"{Q}.mins: unexpected mins .*int8 symmetric"):
        fastformers.AutoModelForCausalLM.from_pretrained(tmp_path)


def test_packed_checkpoint_without_its_config_is_refused(llama_path, tmp_path):
    q = fastformers.AutoModelForCausalLM.from_pretrained(llama_path, load_in_8bit=True)
    q.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["quantization_config"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="already holds packed quantized tensors"):
        fastformers.AutoModelForCausalLM.from_pretrained(tmp_path, load_in_8bit=True)


# -- memory --------------------------------------------------------------------------------------------
def test_loading_quantizes_layer_by_layer(tmp_path, monkeypatch):
    """While a float checkpoint loads quantized, at most a float weight or two are alive at any time: every
    linear weight read is tracked (weakref) and the live float bytes summed at each read. The same count for a
    float load reaches the whole model (so the check can see a model-sized peak)."""
    import fastformers.modeling as modeling

    big = dict(LLAMA, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
               num_key_value_heads=4)
    path = build_reference("llama", "AutoModelForCausalLM", tmp_path, **big)[0]
    read = modeling.read_tensors

    def measure(**kwargs):
        live, peak = [], [0, 0]

        def tracked(path, *args):
            for name, tensor in read(path, *args):
                if name.endswith("proj.weight"):
                    live.append((weakref.ref(tensor), tensor.numel() * tensor.element_size()))
                    peak[0] = max(peak[0], sum(n for ref, n in live if ref() is not None))
                    peak[1] += live[-1][1]
                yield name, tensor

        monkeypatch.setattr(modeling, "read_tensors", tracked)
        model = fastformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
        monkeypatch.setattr(modeling, "read_tensors", read)
        return model, peak[0], peak[1]

    model, peak, total = measure(load_in_4bit=True)
    print(f"\nlinear weights {total / 2**20:.1f} MiB float32; largest float weight alive while loading int4: "
          f"{peak / 2**20:.2f} MiB")
    largest = 256 * 768 * 4
    assert total == 4 * (4 * 256 * 256 - 2 * 256 * 128 + 3 * 256 * 768) * 4 == 12 * 2**20  # 12 MiB of linears
    assert peak <= largest <= total / 16, (peak, total)  # one float weight at a time
    packed = sum(b.numel() * b.element_size() for m in model.modules() if isinstance(m, QuantizedLinear)
                 for b in m.buffers())
    assert packed < 0.17 * total  # int4 + a float32 scale and min per 128 weights: 0.5625 / 4 bytes a weight
    _, float_peak, _ = measure()
    assert float_peak == total
