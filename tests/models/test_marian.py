"""Marian against transformers on tiny random weights (float32, right-padded encoder batches): the base model
and MarianMTModel with and without labels, shared and separate decoder vocabularies, sinusoidal positions,
and decoding with the cache equal to the full forward."""

import pytest
import torch
from conftest import assert_close_outputs, build_reference, rel_err

import fastformers

PAD, EOS = 98, 0
TINY = dict(vocab_size=99, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=37, max_position_embeddings=64,
            pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD, scale_embedding=True)
FIELDS = ("decoder_hidden_states", "decoder_attentions", "cross_attentions", "encoder_last_hidden_state",
          "encoder_hidden_states", "encoder_attentions")


def build(tmp_path, task="AutoModelForSeq2SeqLM", **config):
    """(ours, theirs) on the same random weights. randomize_ also overwrote transformers' sinusoidal position
    table, which is not saved: it is restored; final_logits_bias gets random values too."""
    path, hf = build_reference("marian", task, tmp_path, **{**TINY, **config})
    with torch.no_grad():
        for module in hf.modules():
            if hasattr(module, "create_weight"):
                module.weight.copy_(module.create_weight())
        if hasattr(hf, "final_logits_bias"):
            hf.final_logits_bias.normal_(generator=torch.Generator().manual_seed(3))
    hf.save_pretrained(path)
    return getattr(fastformers, task).from_pretrained(path), hf


def inputs(padded_batch, vocab=99, length=6, pad=PAD):
    ids, mask = padded_batch(lengths=(9, 5, 2), pad_id=pad, vocab_size=90)
    dec = torch.randint(1, vocab, (3, length), generator=torch.Generator().manual_seed(2))
    dec[:, 0] = pad
    return dict(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)


def compare(ours, theirs, batch, fields, tol=1e-5):
    with torch.no_grad():
        a = ours(**batch, output_hidden_states=True, output_attentions=True)
        b = theirs(**batch, output_hidden_states=True, output_attentions=True)
        assert_close_outputs(a, b, fields, tol)
        main = [f for f in fields if f in ("logits", "last_hidden_state", "loss")]
        assert_close_outputs(ours(**batch), b, main, tol)
    return a


@pytest.mark.parametrize("task,field", [("AutoModel", "last_hidden_state"), ("AutoModelForSeq2SeqLM", "logits")])
def test_marian_matches_transformers(task, field, tmp_path, padded_batch):
    ours, theirs = build(tmp_path, task)
    assert type(ours).__name__ == type(theirs).__name__
    compare(ours, theirs, inputs(padded_batch), (field,) + FIELDS)


def test_loss_from_labels_matches_transformers(tmp_path, padded_batch):
    ours, theirs = build(tmp_path)
    batch = inputs(padded_batch)
    labels = batch.pop("decoder_input_ids")
    labels[2, 3:] = -100
    out = compare(ours, theirs, dict(batch, labels=labels), ("logits", "loss"))
    assert out.loss.ndim == 0


def test_separate_decoder_vocabulary(tmp_path, padded_batch):
    ours, theirs = build(tmp_path, share_encoder_decoder_embeddings=False, decoder_vocab_size=77, pad_token_id=70,
                         decoder_start_token_id=70)
    assert not hasattr(ours.model, "shared")
    assert ours.lm_head.weight is ours.model.decoder.embed_tokens.weight
    assert ours.model.encoder.embed_tokens.weight is not ours.model.decoder.embed_tokens.weight
    out = compare(ours, theirs, inputs(padded_batch, vocab=77, pad=70), ("logits",) + FIELDS)
    assert out.logits.shape[-1] == 77


def test_untied_embeddings(tmp_path, padded_batch):
    ours, theirs = build(tmp_path, tie_word_embeddings=False, scale_embedding=False)
    assert ours.lm_head.weight is not ours.model.shared.weight
    compare(ours, theirs, inputs(padded_batch), ("logits", "encoder_last_hidden_state"))


def test_incremental_decoding_equals_full_forward(tmp_path, padded_batch):
    ours, _ = build(tmp_path)
    batch = inputs(padded_batch, length=7)
    dec = batch.pop("decoder_input_ids")
    with torch.no_grad():
        full = ours(**batch, decoder_input_ids=dec).logits
        cache = ours.make_static_cache(3, 7)
        steps = []
        for t in range(7):
            steps.append(ours(**batch, decoder_input_ids=dec[:, t:t + 1], past_key_values=cache).logits)
    assert cache.get_seq_length() == 7
    assert rel_err(torch.cat(steps, 1), full) <= 1e-5


def test_positions_are_computed_and_bad_inputs_named(tmp_path, padded_batch):
    ours, _ = build(tmp_path)
    assert not any("embed_positions" in k for k in ours.state_dict())
    batch = inputs(padded_batch)
    with pytest.raises(ValueError, match="decoder_input_ids"):
        ours.model(input_ids=batch["input_ids"])
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        ours(input_ids=batch["input_ids"], decoder_input_ids=torch.full((3, 65), 5))
