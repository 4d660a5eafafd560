"""DistilBERT x every head against transformers on tiny random weights (float32, padded batches).

The references run transformers' eager attention so that `attentions` are really compared (with
sdpa, transformers returns no attention probabilities at all)."""

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

import fastformers
from conftest import ENCODER_HEADS, HEAD_OUTPUTS, assert_close_outputs, build_reference, check_against_transformers, randomize_, rel_err

TINY = dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64, num_labels=3,
            attn_implementation="eager")


def tiny(task="AutoModel", **extra):
    return dict(TINY, num_labels=2, **extra) if task == "AutoModelForQuestionAnswering" else dict(TINY, **extra)


@pytest.mark.parametrize("task", ENCODER_HEADS)
def test_distilbert_head_matches_transformers(task, tmp_path, padded_batch):
    ids, mask = padded_batch()
    model = check_against_transformers("distilbert", task, tmp_path, dict(input_ids=ids, attention_mask=mask),
                                       **tiny(task))
    assert type(model.config).__name__ == "DistilBertConfig"


@pytest.mark.parametrize("activation", ["gelu_new", "relu"])
def test_distilbert_activations(activation, tmp_path, padded_batch):
    # the MLM head applies config.activation too
    ids, mask = padded_batch(lengths=(4, 7))
    check_against_transformers("distilbert", "AutoModelForMaskedLM", tmp_path, dict(input_ids=ids, attention_mask=mask),
                               **tiny(activation=activation))


def test_sinusoidal_table_is_transformers_table():
    from transformers.models.distilbert.modeling_distilbert import _create_sinusoidal_embeddings

    from fastformers.models.distilbert import sinusoidal_table

    for n_pos, dim in [(64, 32), (512, 768), (7, 18)]:
        ref = _create_sinusoidal_embeddings(n_pos, dim, torch.empty(n_pos, dim))
        assert torch.equal(sinusoidal_table(n_pos, dim), ref)
    # a model built from its config carries the table, as transformers' does
    config = fastformers.AutoConfig.for_model("distilbert", **tiny(sinusoidal_pos_embds=True))
    model = fastformers.AutoModel.from_config(config)
    assert torch.equal(model.embeddings.position_embeddings.weight, sinusoidal_table(64, 32))


def _sinusoidal_reference(task, tmp_path):
    """A transformers model with sinusoidal positions whose other weights are random; saved."""
    import transformers

    config = transformers.AutoConfig.for_model("distilbert", **tiny(task, sinusoidal_pos_embds=True))
    hf = getattr(transformers, task).from_config(config)
    table = hf.base_model.embeddings.position_embeddings.weight.detach().clone()
    randomize_(hf)
    with torch.no_grad():
        hf.base_model.embeddings.position_embeddings.weight.copy_(table)
    hf.eval().save_pretrained(tmp_path / "ref")
    return tmp_path / "ref", hf


@pytest.mark.parametrize("task", ["AutoModel", "AutoModelForSequenceClassification"])
def test_sinusoidal_positions_match_transformers(task, tmp_path, padded_batch, caplog):
    from fastformers.models.distilbert import sinusoidal_table

    ids, mask = padded_batch()
    path, hf = _sinusoidal_reference(task, tmp_path)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    fields = HEAD_OUTPUTS[task] + ("hidden_states", "attentions")

    ours = getattr(fastformers, task).from_pretrained(path)
    with torch.no_grad():
        assert_close_outputs(ours(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                                  output_attentions=True), ref, fields)

    # a checkpoint without the fixed table: both libraries write the sinusoidal table in its place
    state = load_file(path / "model.safetensors")
    key = "distilbert.embeddings.position_embeddings.weight" if task != "AutoModel" else "embeddings.position_embeddings.weight"
    del state[key]
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING, logger="fastformers"):
        ours = getattr(fastformers, task).from_pretrained(path)
    assert key in caplog.text
    base = ours.base_model
    assert torch.equal(base.embeddings.position_embeddings.weight, sinusoidal_table(64, 32))
    with torch.no_grad():  # the fast path unpads (ops.unpadding_pays): real positions
        assert_close_outputs(ours(input_ids=ids, attention_mask=mask), ref, HEAD_OUTPUTS[task], mask=mask.bool())


def test_token_type_ids_are_ignored_like_transformers(tmp_path, padded_batch):
    ids, mask = padded_batch()
    path, hf = build_reference("distilbert", "AutoModel", tmp_path, **TINY)
    ours = fastformers.AutoModel.from_pretrained(path)
    types = torch.ones_like(ids)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        out = ours(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        plain = ours(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()  # the fast path unpads (ops.unpadding_pays): padded positions are zeros
    assert rel_err(out[real], ref[real]) <= 1e-5 and torch.equal(out, plain)


def test_inputs_embeds_and_position_ids(tmp_path):
    g = torch.Generator().manual_seed(3)
    embeds = torch.randn(2, 6, 32, generator=g)
    positions = torch.randint(0, 64, (2, 6), generator=g)
    check_against_transformers("distilbert", "AutoModel", tmp_path, dict(inputs_embeds=embeds, position_ids=positions),
                               **TINY)


def test_config_aliases_and_qa_label_check():
    config = fastformers.AutoConfig.for_model("distilbert", **TINY)
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (32, 4, 2)
    config.hidden_size = 48
    assert config.dim == 48
    with pytest.raises(ValueError, match="num_labels should be 2"):
        fastformers.AutoModelForQuestionAnswering.from_config(fastformers.AutoConfig.for_model("distilbert", **TINY))


def test_base_checkpoint_into_head_warns_and_keeps_base(tmp_path, padded_batch, caplog):
    ids, mask = padded_batch()
    path, hf = build_reference("distilbert", "AutoModel", tmp_path, **TINY)
    with caplog.at_level(logging.WARNING, logger="fastformers"):
        model = fastformers.AutoModelForSequenceClassification.from_pretrained(path)
    for name in ("pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"):
        assert name in caplog.text
    assert "newly initialized" in caplog.text and "distilbert.embeddings" not in caplog.text
    assert not any(t.is_meta for t in model.state_dict().values())
    with torch.no_grad():
        ours = model.distilbert(input_ids=ids, attention_mask=mask).last_hidden_state
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()  # the fast path unpads (ops.unpadding_pays): padded positions are zeros
    assert rel_err(ours[real], ref[real]) <= 1e-5

    caplog.clear()  # the MLM projector is tied to the loaded embeddings, so it is not reported
    with caplog.at_level(logging.WARNING, logger="fastformers"):
        mlm = fastformers.AutoModelForMaskedLM.from_pretrained(path)
    assert "vocab_transform.weight" in caplog.text and "vocab_projector.weight" not in caplog.text
    assert mlm.vocab_projector.weight is mlm.distilbert.embeddings.word_embeddings.weight


def test_head_checkpoint_into_base_model(tmp_path, padded_batch, caplog):
    ids, mask = padded_batch()
    path, hf = build_reference("distilbert", "AutoModelForMaskedLM", tmp_path, **TINY)
    with caplog.at_level(logging.WARNING, logger="fastformers"):
        base = fastformers.AutoModel.from_pretrained(path)
    assert "vocab_transform.weight" in caplog.text and "not used" in caplog.text
    with torch.no_grad():
        ref = hf.distilbert(input_ids=ids, attention_mask=mask).last_hidden_state
        real = mask.bool()  # the fast path unpads (ops.unpadding_pays): padded positions are zeros
        assert rel_err(base(input_ids=ids, attention_mask=mask).last_hidden_state[real], ref[real]) <= 1e-5


def test_save_round_trip_and_fused_qkv(tmp_path, padded_batch):
    """Inference runs q/k/v as one GEMM; autograd mode agrees, and what we save (projector still tied)
    loads in transformers with identical outputs."""
    import transformers

    ids, mask = padded_batch()
    path, hf = build_reference("distilbert", "AutoModelForMaskedLM", tmp_path, **TINY)
    model = fastformers.AutoModelForMaskedLM.from_pretrained(path)
    with torch.no_grad():
        fused = model(input_ids=ids, attention_mask=mask).logits
    attn = model.distilbert.transformer.layer[0].attention
    assert attn.q_lin.weight.data_ptr() == attn.qkv.weight.data_ptr()  # the fused path ran
    labels = torch.where(mask.bool(), ids, -100)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)  # autograd: the padded batch
    real = mask.bool()  # (inference unpadded it: ops.unpadding_pays)
    assert rel_err(out.logits[real], fused[real]) <= 1e-6
    out.loss.backward()
    assert attn.v_lin.bias.grad.abs().sum() > 0
    assert model.vocab_projector.weight is model.distilbert.embeddings.word_embeddings.weight
    model.save_pretrained(tmp_path / "saved")
    back = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "saved", attn_implementation="eager").eval()
    with torch.no_grad():
        assert rel_err(back(input_ids=ids, attention_mask=mask).logits, hf(input_ids=ids, attention_mask=mask).logits) == 0
