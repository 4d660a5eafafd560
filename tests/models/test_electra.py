"""ELECTRA x every head against transformers on tiny random weights (float32, padded batches).

embedding_size (16) differs from hidden_size (32) unless a test says otherwise, so the
`embeddings_project` path is the one compared. References use transformers' eager attention so
that `attentions` are really compared."""

import logging

import pytest
import torch

import fastformers
from conftest import ENCODER_HEADS, assert_close_outputs, build_reference, check_against_transformers, rel_err

TINY = dict(vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=64, type_vocab_size=2, num_labels=3,
            attn_implementation="eager")


def tiny(task="AutoModel", **extra):
    return dict(TINY, num_labels=2, **extra) if task == "AutoModelForQuestionAnswering" else dict(TINY, **extra)


def batch(padded_batch, **kw):
    ids, mask = padded_batch(**kw)
    types = torch.zeros_like(ids)
    types[:, 3:] = 1
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types * mask)


def auto_pretraining():
    """fastformers.AutoModelForPreTraining when the package exports one, else the same Auto class built
    from the registry (electra.MODEL_CLASSES carries the task)."""
    return getattr(fastformers, "AutoModelForPreTraining", None) or fastformers.auto._auto("AutoModelForPreTraining")


def check_pretraining(tmp_path, inputs, with_mask_loss=True, **config):
    """ElectraForPreTraining: logits, hidden states, attentions and the (mask-aware) BCE loss."""
    path, hf = build_reference("electra", "AutoModelForPreTraining", tmp_path, **config)
    ours = auto_pretraining().from_pretrained(path)
    assert type(ours).__name__ == type(hf).__name__ == "ElectraForPreTraining"
    labels = torch.randint(0, 2, inputs["input_ids"].shape, generator=torch.Generator().manual_seed(1))
    fields = ("logits", "hidden_states", "attentions", "loss")
    with torch.no_grad():
        a = ours(**inputs, labels=labels, output_hidden_states=True, output_attentions=True)
        b = hf(**inputs, labels=labels, output_hidden_states=True, output_attentions=True)
        assert_close_outputs(a, b, fields)
        assert type(a).__name__ == "ElectraForPreTrainingOutput" and set(a.keys()) == set(b.keys())
        if with_mask_loss:  # without a mask every token counts
            plain = {k: v for k, v in inputs.items() if k != "attention_mask"}
            assert_close_outputs(ours(**plain, labels=labels), hf(**plain, labels=labels), ("logits", "loss"))
    return ours


@pytest.mark.parametrize("task", ENCODER_HEADS)
def test_electra_head_matches_transformers(task, tmp_path, padded_batch):
    model = check_against_transformers("electra", task, tmp_path, batch(padded_batch), **tiny(task))
    assert hasattr(model.base_model, "embeddings_project")


def test_electra_pretraining_matches_transformers(tmp_path, padded_batch):
    from fastformers.models.electra import MODEL_CLASSES, ElectraForPreTraining

    assert MODEL_CLASSES["AutoModelForPreTraining"] is ElectraForPreTraining
    check_pretraining(tmp_path, batch(padded_batch), **TINY)


@pytest.mark.parametrize("task", ["AutoModel", "AutoModelForMaskedLM"])
def test_equal_embedding_and_hidden_size_has_no_projection(task, tmp_path, padded_batch):
    model = check_against_transformers("electra", task, tmp_path, batch(padded_batch), **tiny(embedding_size=32))
    assert not hasattr(model.base_model, "embeddings_project")


@pytest.mark.parametrize("hidden_act,task", [
    ("relu", "AutoModelForSequenceClassification"),  # the classification head keeps erf-gelu
    ("gelu_new", "AutoModelForMaskedLM"),  # so does the generator head
    ("silu", "AutoModel"),
])
def test_electra_activations(hidden_act, task, tmp_path, padded_batch):
    check_against_transformers("electra", task, tmp_path, batch(padded_batch, lengths=(4, 7)),
                               **tiny(task, hidden_act=hidden_act))


@pytest.mark.parametrize("hidden_act", ["relu", "gelu_new"])
def test_discriminator_uses_hidden_act(hidden_act, tmp_path, padded_batch):
    check_pretraining(tmp_path, batch(padded_batch, lengths=(4, 7)), with_mask_loss=False, **tiny(hidden_act=hidden_act))


@pytest.mark.parametrize("summary", [
    dict(summary_type="mean", summary_activation="tanh"),
    dict(summary_type="last", summary_use_proj=False, summary_activation="linear"),
])
def test_multiple_choice_sequence_summary_variants(summary, tmp_path, padded_batch):
    check_against_transformers("electra", "AutoModelForMultipleChoice", tmp_path, batch(padded_batch),
                               **tiny(**summary))


def test_untied_generator_head(tmp_path, padded_batch):
    model = check_against_transformers("electra", "AutoModelForMaskedLM", tmp_path, batch(padded_batch),
                                       **tiny(tie_word_embeddings=False))
    assert model.generator_lm_head.weight is not model.electra.embeddings.word_embeddings.weight


def test_tied_generator_head_and_inputs_embeds(tmp_path):
    embeds = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(3))  # embedding_size wide
    model = check_against_transformers("electra", "AutoModelForMaskedLM", tmp_path, dict(inputs_embeds=embeds), **TINY)
    assert model.generator_lm_head.weight is model.electra.embeddings.word_embeddings.weight


def test_decoder_config_is_refused():
    config = fastformers.AutoConfig.for_model("electra", **dict(TINY, is_decoder=True))
    with pytest.raises(ValueError, match="is_decoder"):
        fastformers.AutoModel.from_config(config)


def test_base_checkpoint_into_head_warns_and_keeps_base(tmp_path, padded_batch, caplog):
    inputs = batch(padded_batch)
    path, hf = build_reference("electra", "AutoModel", tmp_path, **TINY)
    with caplog.at_level(logging.WARNING, logger="fastformers"):
        model = fastformers.AutoModelForSequenceClassification.from_pretrained(path)
    for name in ("classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                 "classifier.out_proj.bias"):
        assert name in caplog.text
    assert "newly initialized" in caplog.text and "electra.embeddings_project" not in caplog.text
    assert not any(t.is_meta for t in model.state_dict().values())
    real = inputs["attention_mask"].bool()  # the fast path unpads (ops.unpadding_pays): padded positions are zeros
    with torch.no_grad():
        assert rel_err(model.electra(**inputs).last_hidden_state[real], hf(**inputs).last_hidden_state[real]) <= 1e-5

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastformers"):
        disc = auto_pretraining().from_pretrained(path)
    assert "discriminator_predictions.dense_prediction.weight" in caplog.text
    with torch.no_grad():
        assert rel_err(disc.electra(**inputs).last_hidden_state[real], hf(**inputs).last_hidden_state[real]) <= 1e-5


def test_head_checkpoint_into_base_model(tmp_path, padded_batch, caplog):
    inputs = batch(padded_batch)
    path, hf = build_reference("electra", "AutoModelForPreTraining", tmp_path, **TINY)
    with caplog.at_level(logging.WARNING, logger="fastformers"):
        base = fastformers.AutoModel.from_pretrained(path)
    assert "discriminator_predictions.dense.weight" in caplog.text and "not used" in caplog.text
    real = inputs["attention_mask"].bool()  # the fast path unpads (ops.unpadding_pays): padded positions are zeros
    with torch.no_grad():
        assert rel_err(base(**inputs).last_hidden_state[real], hf.electra(**inputs).last_hidden_state[real]) <= 1e-5


def test_save_round_trip_loads_in_transformers(tmp_path, padded_batch):
    import transformers

    inputs = batch(padded_batch)
    path, hf = build_reference("electra", "AutoModelForMaskedLM", tmp_path, **TINY)
    model = fastformers.AutoModelForMaskedLM.from_pretrained(path)
    with torch.no_grad():
        model(**inputs)  # the fused q/k/v path runs once before saving
    model.save_pretrained(tmp_path / "saved")
    back = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "saved", attn_implementation="eager").eval()
    with torch.no_grad():
        assert rel_err(back(**inputs).logits, hf(**inputs).logits) == 0
