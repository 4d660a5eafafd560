"""BART against transformers on tiny random weights (float32, right-padded encoder batches): every head with
and without labels, hidden states and attentions of encoder, decoder and cross-attention; decoding with the
cache (dynamic and static) equals the full forward; weights round-trip; bad input is named."""

import pytest
import torch
from conftest import assert_close_outputs, build_reference, rel_err

import fastformers
from fastformers.generation.cache import DynamicCache, EncoderDecoderCache

PAD, EOS = 1, 2
TINY = dict(vocab_size=99, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=37, max_position_embeddings=64,
            pad_token_id=PAD, bos_token_id=0, eos_token_id=EOS, decoder_start_token_id=EOS)
SEQ2SEQ_FIELDS = ("decoder_hidden_states", "decoder_attentions", "cross_attentions", "encoder_last_hidden_state",
                  "encoder_hidden_states", "encoder_attentions")
HEAD_FIELDS = {"AutoModel": ("last_hidden_state",), "AutoModelForSeq2SeqLM": ("logits",),
               "AutoModelForSequenceClassification": ("logits",),
               "AutoModelForQuestionAnswering": ("start_logits", "end_logits")}


def build(tmp_path, task="AutoModelForSeq2SeqLM", **config):
    """(ours, theirs) on the same random weights; final_logits_bias random too (randomize_ skips buffers)."""
    path, hf = build_reference("bart", task, tmp_path, **{**TINY, **config})
    if hasattr(hf, "final_logits_bias"):
        hf.final_logits_bias.copy_(torch.randn(hf.final_logits_bias.shape, generator=torch.Generator().manual_seed(3)))
        hf.save_pretrained(path)
    return getattr(fastformers, task).from_pretrained(path), hf


def encoder_batch(padded_batch):
    """Right-padded encoder inputs (lengths 9, 5, 2), each ending with one eos."""
    ids, mask = padded_batch(lengths=(9, 5, 2), pad_id=PAD)
    ids[torch.arange(3), mask.sum(1) - 1] = EOS
    return ids, mask


def decoder_ids(batch=3, length=6, seed=2):
    ids = torch.randint(3, 99, (batch, length), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = EOS
    return ids


def compare(ours, theirs, inputs, fields, tol=1e-5):
    with torch.no_grad():
        a = ours(**inputs, output_hidden_states=True, output_attentions=True)
        b = theirs(**inputs, output_hidden_states=True, output_attentions=True)
        assert_close_outputs(a, b, fields, tol)
        fast = ours(**inputs)  # without the optional outputs
    assert_close_outputs(fast, b, [f for f in fields if f in ("logits", "last_hidden_state", "start_logits",
                                                               "end_logits", "loss")], tol)
    if "encoder_last_hidden_state" in fields:  # the encoder may unpad (ops.unpadding_pays): real positions
        real = inputs["attention_mask"].bool() if "attention_mask" in inputs else None
        assert_close_outputs(fast, b, ["encoder_last_hidden_state"], tol, real)
    return a, b


@pytest.mark.parametrize("task", list(HEAD_FIELDS))
def test_heads_match_transformers(task, tmp_path, padded_batch):
    ours, theirs = build(tmp_path, task)
    assert type(ours).__name__ == type(theirs).__name__
    ids, mask = encoder_batch(padded_batch)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if task != "AutoModelForSequenceClassification":  # it pools the decoder at input_ids' eos: same length
        inputs["decoder_input_ids"] = decoder_ids()
    compare(ours, theirs, inputs, HEAD_FIELDS[task] + SEQ2SEQ_FIELDS)


@pytest.mark.parametrize("task", ["AutoModelForSeq2SeqLM", "AutoModelForSequenceClassification",
                                  "AutoModelForQuestionAnswering"])
def test_losses_match_transformers(task, tmp_path, padded_batch):
    ours, theirs = build(tmp_path, task)
    ids, mask = encoder_batch(padded_batch)
    g = torch.Generator().manual_seed(1)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if task == "AutoModelForSeq2SeqLM":  # no decoder_input_ids: shifted labels (with -100 -> pad) are used
        labels = torch.randint(3, 99, (3, 7), generator=g)
        labels[1, 4:] = -100
        inputs["labels"] = labels
    elif task == "AutoModelForSequenceClassification":
        inputs["labels"] = torch.randint(0, 3, (3,), generator=g)
    else:
        inputs.update(decoder_input_ids=decoder_ids(), start_positions=torch.tensor([0, 3, 9]),
                      end_positions=torch.tensor([5, 1, 2]))
    a, _ = compare(ours, theirs, inputs, HEAD_FIELDS[task] + ("loss",))
    assert a.loss.ndim == 0 and float(a.loss) > 0
    assert a.get("past_key_values") is None  # labels turn the cache off, as in transformers


def test_sequence_classification_regression_and_multilabel(tmp_path, padded_batch):
    ids, mask = encoder_batch(padded_batch)
    for config, labels in ((dict(num_labels=1), torch.tensor([0.5, -1.0, 2.0])),
                           (dict(num_labels=3, problem_type="multi_label_classification"),
                            torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]))):
        ours, theirs = build(tmp_path / str(config["num_labels"]), "AutoModelForSequenceClassification", **config)
        compare(ours, theirs, dict(input_ids=ids, attention_mask=mask, labels=labels), ("logits", "loss"))


def test_model_builds_decoder_inputs_from_input_ids(tmp_path, padded_batch):
    ours, theirs = build(tmp_path, "AutoModel")
    ids, mask = encoder_batch(padded_batch)
    compare(ours, theirs, dict(input_ids=ids, attention_mask=mask), ("last_hidden_state",))


@pytest.mark.parametrize("variant", [dict(scale_embedding=True, activation_function="relu"),
                                     dict(tie_word_embeddings=False)])
def test_config_variants_match_transformers(variant, tmp_path, padded_batch):
    ours, theirs = build(tmp_path, **variant)
    if not variant.get("tie_word_embeddings", True):
        assert ours.lm_head.weight is not ours.model.shared.weight
        assert ours.model.encoder.embed_tokens.weight is not ours.model.shared.weight
    ids, mask = encoder_batch(padded_batch)
    compare(ours, theirs, dict(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids()),
            ("logits", "encoder_last_hidden_state"))


def test_tied_embeddings_and_save_round_trip(tmp_path, padded_batch):
    import transformers

    ours, theirs = build(tmp_path)
    shared = ours.model.shared.weight
    assert ours.lm_head.weight is shared and ours.model.encoder.embed_tokens.weight is shared
    assert ours.model.decoder.embed_tokens.weight is shared
    ours.save_pretrained(tmp_path / "saved")
    again = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "saved").eval()
    ids, mask = encoder_batch(padded_batch)
    inputs = dict(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids())
    mine = again.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in theirs.state_dict().items())
    with torch.no_grad():  # (transformers loads it with sdpa attention: not bit-identical to eager)
        assert rel_err(again(**inputs).logits, theirs(**inputs).logits) <= 1e-6


@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
def test_incremental_decoding_equals_full_forward(cache_kind, tmp_path, padded_batch):
    ours, _ = build(tmp_path)
    ids, mask = encoder_batch(padded_batch)
    dec = decoder_ids(length=7)
    with torch.no_grad():
        full = ours(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, use_cache=False).logits
        enc = ours.get_encoder()(input_ids=ids, attention_mask=mask)
        cache = ours.make_static_cache(3, 8) if cache_kind == "static" else None
        out = ours(decoder_input_ids=dec[:, :3], encoder_outputs=enc, attention_mask=mask, past_key_values=cache,
                   use_cache=True)
        steps, cache = [out.logits], out.past_key_values
        assert isinstance(cache, EncoderDecoderCache) and cache.cross(0) is not None
        for t in range(3, 7):
            out = ours(decoder_input_ids=dec[:, t:t + 1], encoder_outputs=(enc.last_hidden_state,),
                       attention_mask=mask, past_key_values=cache)
            steps.append(out.logits)
        assert cache.get_seq_length() == 7
    assert rel_err(torch.cat(steps, dim=1), full) <= 1e-5


def test_cache_reorder_follows_beams(tmp_path, padded_batch):
    ours, _ = build(tmp_path)
    ids, mask = encoder_batch(padded_batch)
    dec = decoder_ids(length=4)
    order = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = ours(input_ids=ids, attention_mask=mask, decoder_input_ids=dec[:, :3],
                   past_key_values=EncoderDecoderCache(DynamicCache()))
        out.past_key_values.reorder(order)
        step = ours(input_ids=ids[order], attention_mask=mask[order], decoder_input_ids=dec[order, 3:],
                    past_key_values=out.past_key_values).logits
        full = ours(input_ids=ids[order], attention_mask=mask[order], decoder_input_ids=dec[order]).logits
    assert rel_err(step[:, 0], full[:, -1]) <= 1e-5


def test_bad_inputs_raise_naming_them(tmp_path, padded_batch):
    ours, _ = build(tmp_path)
    ids, mask = encoder_batch(padded_batch)
    dec = decoder_ids()
    with pytest.raises(ValueError, match="decoder_attention_mask"):
        ours(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=mask)
    with pytest.raises(ValueError, match="attention_mask"):
        ours(input_ids=ids, attention_mask=mask[:, :3], decoder_input_ids=dec)
    with pytest.raises(TypeError, match="past_key_values"):
        ours(input_ids=ids, decoder_input_ids=dec, past_key_values=DynamicCache())
    with pytest.raises(IndexError, match="outside the vocabulary"):
        ours(input_ids=ids, decoder_input_ids=dec + 200)
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        ours(input_ids=torch.full((1, 65), 5), decoder_input_ids=dec[:1])
    with pytest.raises(NotImplementedError, match="inputs_embeds"):
        ours(inputs_embeds=torch.zeros(1, 3, 16), decoder_input_ids=dec[:1])
    clf, _ = build(tmp_path / "clf", "AutoModelForSequenceClassification")
    bad = ids.clone()
    bad[0, 3] = EOS  # two eos tokens in one row only
    with pytest.raises(ValueError, match="same number of <eos> tokens"):
        clf(input_ids=bad, attention_mask=mask)
    with pytest.raises(ValueError, match="at least one <eos>"):
        clf(input_ids=torch.full((2, 4), 7))


def test_config_aliases_and_defaults():
    config = fastformers.AutoConfig.for_model("bart", d_model=24, encoder_layers=3, encoder_attention_heads=4,
                                            decoder_attention_heads=6)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (24, 3, 4)
    assert config.num_labels == 3 and config.is_encoder_decoder and config.forced_eos_token_id == 2
    with pytest.raises(ValueError, match="decoder_attention_heads"):
        fastformers.AutoConfig.for_model("bart", d_model=24, encoder_attention_heads=4, decoder_attention_heads=5)
