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
    out = model(input_ids=ids, attention_mask=mask, labels=labels)  # autograd on: separate GEMMs
    assert rel_err(out.logits, fused) <= 1e-6
    out.loss.backward()
    assert attn.query.weight.grad is not None and attn.value.bias.grad.abs().sum() > 0
    model.save_pretrained(tmp_path / "saved")
    back = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "saved", attn_implementation="eager").eval()
    with torch.no_grad():
        assert rel_err(back(input_ids=ids, attention_mask=mask).logits, hf(input_ids=ids, attention_mask=mask).logits) == 0
        model.double()
        assert rel_err(model(input_ids=ids, attention_mask=mask).logits, fused) <= 1e-5
