"""BERT x every head against transformers on tiny random weights (float32, padded batches)."""

import pytest
import torch

from conftest import ENCODER_HEADS, check_against_transformers

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2, num_labels=3)


@pytest.mark.parametrize("task", ENCODER_HEADS)
def test_bert_head_matches_transformers(task, tmp_path, padded_batch):
    ids, mask = padded_batch()
    token_types = torch.zeros_like(ids)
    token_types[:, 3:] = 1
    inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=token_types * mask)
    config = dict(TINY, num_labels=2) if task == "AutoModelForQuestionAnswering" else TINY
    check_against_transformers("bert", task, tmp_path, inputs, **config)


@pytest.mark.parametrize("hidden_act", ["gelu_new", "relu"])
def test_bert_activations(hidden_act, tmp_path, padded_batch):
    ids, mask = padded_batch(lengths=(4, 7))
    check_against_transformers("bert", "AutoModel", tmp_path, dict(input_ids=ids, attention_mask=mask),
                               **dict(TINY, hidden_act=hidden_act))


def test_fused_qkv_inference_matches_autograd_path_and_saves(tmp_path, padded_batch):
    """Inference fuses query/key/value into one GEMM; autograd mode, dtype moves and saving still work."""
    import transformers

    import fastformers
    from conftest import build_reference, rel_err

    ids, mask = padded_batch()
    path, hf = build_reference("bert", "AutoModelForMaskedLM", tmp_path, **TINY)
    model = fastformers.AutoModelForMaskedLM.from_pretrained(path)
    with torch.no_grad():
        fused = model(input_ids=ids, attention_mask=mask).logits
    attn = model.bert.encoder.layer[0].attention.self
    assert attn.query.weight.data_ptr() == attn.qkv.weight.data_ptr()  # the fused path ran
    labels = torch.where(mask.bool(), ids, -100)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)  # autograd on: separate GEMMs, padded batch
    real = mask.bool()  # (inference unpadded it: ops.unpadding_pays)
    assert rel_err(out.logits[real], fused[real]) <= 1e-6
    out.loss.backward()
    assert attn.query.weight.grad is not None and attn.value.bias.grad.abs().sum() > 0
    model.save_pretrained(tmp_path / "saved")
    back = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "saved", attn_implementation="eager").eval()
    with torch.no_grad():
        assert rel_err(back(input_ids=ids, attention_mask=mask).logits, hf(input_ids=ids, attention_mask=mask).logits) == 0
        model.double()
        assert rel_err(model(input_ids=ids, attention_mask=mask).logits, fused) <= 1e-5


def test_padded_batch_runs_unpadded_on_the_cpu_backend(tmp_path, padded_batch, monkeypatch):
    """On CPU tensors (auto mode) the parity tests' padded batches take the fast path: every layer in one C++ call
    (ops.encoder_layers) over the unpadded tokens. Where that path does not apply (a forward hook on a layer) the
    layers run one by one, still unpadded: the cpu backend's varlen attention, GELU inside the packed feed-forward
    GEMM. FASTFORMERS_BACKEND=torch keeps the padded reference path."""
    from fastformers import ops
    from fastformers.models import bert
    from fastformers.ops import native

    calls = {"varlen": 0, "linear_gelu": 0, "one_call": []}
    for name, op in (("varlen", ops.varlen_attention), ("linear_gelu", ops.linear_gelu)):
        def spy(*args, _name=name, _fn=op.impls["cpu"], **kwargs):
            calls[_name] += 1
            return _fn(*args, **kwargs)
        monkeypatch.setitem(op.impls, "cpu", spy)
        monkeypatch.setattr(op, "_resolved", {})  # bindings resolve afresh, to the spy
    one_call = bert.encoder_layers_cpu
    monkeypatch.setattr(bert, "encoder_layers_cpu", lambda x, *a: calls["one_call"].append(x.shape[0]) or one_call(x, *a))
    ids, mask = padded_batch()
    model = check_against_transformers("bert", "AutoModel", tmp_path, dict(input_ids=ids, attention_mask=mask),
                                       **TINY)
    # output_attentions (the padded path: probabilities, layer by layer), then the fast path: one call, real tokens
    layers = TINY["num_hidden_layers"]
    if not native.available():  # no extension (FASTFORMERS_NO_EXTENSION=1): the layers one by one, unpadded
        assert calls == {"varlen": layers, "linear_gelu": 2 * layers, "one_call": []}
        return
    assert calls == {"varlen": 0, "linear_gelu": layers, "one_call": [int(mask.sum())]}
    with torch.no_grad():
        fast = model(input_ids=ids, attention_mask=mask).last_hidden_state
        handle = model.encoder.layer[1].register_forward_hook(lambda *args: None)
        layered = model(input_ids=ids, attention_mask=mask).last_hidden_state
        handle.remove()
        assert calls["varlen"] == layers and calls["linear_gelu"] == 2 * layers and len(calls["one_call"]) == 2
        real = mask.bool()
        assert (fast[real] - layered[real]).abs().max() <= 1e-5 and fast[~real].abs().max() == 0
        with ops.use_backend("torch"):
            padded = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert calls["varlen"] == layers and len(calls["one_call"]) == 2  # the torch backend: no unpadding, no one call
    assert (padded[real] - fast[real]).abs().max() <= 1e-5 and padded[~real].abs().min() > 0


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_question_answering_keeps_the_padded_batch(model_type, tmp_path, padded_batch, monkeypatch):
    """Span logits are a softmax over every position, padded ones included: a QA head never unpads, and its
    logits equal transformers' at every position on the fast path too."""
    import fastformers.ops

    packed = []
    unpad = fastformers.ops.unpad
    monkeypatch.setattr(fastformers.ops, "unpad", lambda x, mask: packed.append(1) or unpad(x, mask))
    ids, mask = padded_batch(vocab_size=99, lengths=(9, 5, 1))
    config = dict(TINY, num_labels=2) if model_type == "bert" else dict(
        vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)
    check_against_transformers(model_type, "AutoModelForQuestionAnswering", tmp_path,
                               dict(input_ids=ids, attention_mask=mask), **config)
    assert not packed, "a QA head unpadded its batch"


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert"])
def test_unpadded_encoder_matches_transformers(model_type, tmp_path, padded_batch, monkeypatch):
    """The unpadded path (taken on GPU kernels) gives the same real-position outputs as transformers."""
    import fastformers.ops

    packed = []
    unpad = fastformers.ops.unpad
    monkeypatch.setattr(fastformers.ops, "unpadding_pays", lambda x, mask: mask is not None)
    monkeypatch.setattr(fastformers.ops, "unpad", lambda x, mask: packed.append(1) or unpad(x, mask))
    ids, mask = padded_batch(vocab_size=99, lengths=(9, 5, 1))
    config = TINY if model_type != "distilbert" else dict(vocab_size=99, dim=32, n_layers=2, n_heads=4,
                                                          hidden_dim=37, max_position_embeddings=64)
    check_against_transformers(model_type, "AutoModelForTokenClassification", tmp_path,
                               dict(input_ids=ids, attention_mask=mask), real_positions_only=True, **config)
    assert packed, "the encoder did not unpad"


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_encoder_on_triton_kernels_matches_transformers(model_type, tmp_path, padded_batch, triton_backend):
    """Every fused op of an encoder on the Triton kernels (the interpreter on CPU), the padded batch
    unpadded into varlen attention: the same outputs as transformers on real positions."""
    ids, mask = padded_batch(vocab_size=99, lengths=(9, 5, 1))
    config = TINY if model_type == "bert" else dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                                    max_position_embeddings=64)
    check_against_transformers(model_type, "AutoModelForSequenceClassification", tmp_path,
                               dict(input_ids=ids, attention_mask=mask), tol=1e-4, real_positions_only=True,
                               **config)
    for name in ("layer_norm", "gelu", "varlen_attention_fwd"):
        assert any(key.startswith(name) for key in triton_backend), (name, dict(triton_backend))


# -- the one-call encoder (ops.encoder_layers, csrc/cpu/encoder_step.cpp) ------------------------------------------
def _one_call_model(tmp_path, monkeypatch, config=TINY, **load):
    import fastformers
    from conftest import build_reference
    from fastformers.models import bert
    from fastformers.ops import native

    if not native.available():
        pytest.skip(f"the one-call encoder is in fastformers._C: {native.load_error()}")

    calls = []
    one_call = bert.encoder_layers_cpu
    monkeypatch.setattr(bert, "encoder_layers_cpu", lambda *a: calls.append(1) or one_call(*a))
    path, hf = build_reference("bert", "AutoModel", tmp_path, **config)
    return fastformers.AutoModel.from_pretrained(path, **load), hf, calls


def test_one_call_encoder_sees_weights_edited_between_calls(tmp_path, padded_batch, monkeypatch):
    """What the one call reads is checked on every call: a weight edited in place through .data (peft's merge), a
    replaced LayerNorm parameter, an in-place edit, a swapped activation are all seen at the next call."""
    from conftest import rel_err
    from fastformers.models import bert

    ids, mask = padded_batch()
    model, hf, calls = _one_call_model(tmp_path, monkeypatch)
    real = mask.bool()

    def both():
        with torch.no_grad():
            ours = model(input_ids=ids, attention_mask=mask).last_hidden_state
            theirs = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        return rel_err(ours[real], theirs[real])

    assert both() <= 1e-5 and len(calls) == 1
    delta = 0.05 * torch.randn(TINY["hidden_size"], TINY["intermediate_size"])
    with torch.no_grad():
        for m in (model, hf):  # a dense change through .data bypasses the version counter
            m.encoder.layer[1].output.dense.weight.data += delta
        for m in (model, hf):
            m.encoder.layer[0].attention.output.LayerNorm.weight = torch.nn.Parameter(torch.full((32,), 1.5))
    assert both() <= 1e-5 and len(calls) == 2
    with torch.no_grad():
        model.encoder.layer[0].attention.self.query.weight.mul_(0.5)  # in place, through the fused storage
        hf.encoder.layer[0].attention.self.query.weight.mul_(0.5)
    assert both() <= 1e-5 and len(calls) == 3
    model.encoder.layer[0].intermediate.act = type(model.encoder.layer[0].intermediate.act)("gelu_new")
    # the tanh GELU now runs in layer 0 only (hf keeps erf); the activations differ between layers, which the one call
    # does not take: the layers run one by one
    assert both() > 1e-5 and len(calls) == 3
    assert "activations differ" in bert._encoder_plan(model.encoder).reason


@pytest.mark.parametrize("method, group", [("w8a8", None), ("blockwise_a8", 32)])
def test_one_call_encoder_runs_int8(method, group, tmp_path, padded_batch, monkeypatch):
    """W8A8 weights (packed for csrc/cpu/gemm_a8.cpp's VNNI or AVX2 tiles where the CPU has either, else
    torch._int_mm) and int8 in groups of 32 with int8 activations per block of 32 (gemm_a8.cpp with VNNI, else
    gemm_f32.cpp's gemm_block8 with AVX2) run in the one call too, as the layers one by one compute them."""
    import fastformers
    from fastformers.models import bert
    from fastformers.ops.encoder import (BLOCK8, BLOCK8_PANELS, W8A8, W8A8_PACKED, block8_usable,
                                         f32_packing_preferred, w8a8_packed_usable)

    if method == "blockwise_a8":
        kind = BLOCK8 if block8_usable() else BLOCK8_PANELS if f32_packing_preferred() else None
        if kind is None:
            pytest.skip("the blockwise_a8 GEMMs of the one call need AVX-512 VNNI or AVX2 (without AVX-512)")
    else:
        kind = W8A8_PACKED if w8a8_packed_usable() else W8A8
    ids, mask = padded_batch()
    config = fastformers.QuantizationConfig(bits=8, group_size=group, method=method)
    # (blockwise_a8's kernel takes linears whose outputs are multiples of 32)
    model, _, calls = _one_call_model(tmp_path, monkeypatch, dict(TINY, intermediate_size=64), quantization_config=config)
    real = mask.bool()
    with torch.no_grad():
        fast = model(input_ids=ids, attention_mask=mask).last_hidden_state
        assert len(calls) == 1
        handle = model.encoder.layer[0].register_forward_pre_hook(lambda *args: None)
        layered = model(input_ids=ids, attention_mask=mask).last_hidden_state
        handle.remove()
    assert len(calls) == 1
    assert (fast[real] - layered[real]).abs().max() <= 1e-3 * layered.abs().max()
    assert set(bert._encoder_plan(model.encoder).weights.formats) == {kind}
