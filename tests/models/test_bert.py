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
    """On CPU tensors (auto mode) the parity tests' padded batches take the fast path: unpadded, attention by the
    cpu backend's varlen attention, GELU inside the packed feed-forward GEMM; FASTFORMERS_BACKEND=torch keeps the
    padded reference path."""
    from fastformers import ops

    calls = {"varlen": 0, "linear_gelu": 0}
    for name, op in (("varlen", ops.varlen_attention), ("linear_gelu", ops.linear_gelu)):
        def spy(*args, _name=name, _fn=op.impls["cpu"], **kwargs):
            calls[_name] += 1
            return _fn(*args, **kwargs)
        monkeypatch.setitem(op.impls, "cpu", spy)
        monkeypatch.setattr(op, "_resolved", {})  # bindings resolve afresh, to the spy
    ids, mask = padded_batch()
    model = check_against_transformers("bert", "AutoModel", tmp_path, dict(input_ids=ids, attention_mask=mask),
                                       **TINY)
    # output_attentions (the padded path: probabilities) and then the fast path: varlen attention in the second only
    assert calls == {"varlen": TINY["num_hidden_layers"], "linear_gelu": 2 * TINY["num_hidden_layers"]}
    with torch.no_grad(), ops.use_backend("torch"):
        padded = model(input_ids=ids, attention_mask=mask).last_hidden_state
        fast = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert calls["varlen"] == TINY["num_hidden_layers"]  # the torch backend did not unpad
    assert torch.equal(padded, fast) and padded[~mask.bool()].abs().min() > 0


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
