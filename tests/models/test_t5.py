"""T5 against transformers on tiny random weights (float32, padded encoder batches): every head, the
feed-forward variants, tied / untied embeddings, the loss, decoding through the caches, and generate()."""

import json

import pytest
import torch
from conftest import build_reference, randomize_, rel_err

import fastformers
from fastformers.generation.cache import DynamicCache, EncoderDecoderCache, StaticCache
from fastformers.models.t5 import T5Config, T5EncoderModel, relative_position_bucket

# few buckets and a short max_distance, so that the sequences below reach the log-spaced buckets and the
# last (clamped) one, in both the bidirectional (encoder) and the causal (decoder) bucketing
TINY = {"vocab_size": 99, "d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 2, "num_decoder_layers": 3,
        "num_heads": 4, "relative_attention_num_buckets": 8, "relative_attention_max_distance": 8,
        "decoder_start_token_id": 0}
VARIANTS = {
    "relu": {},
    "gated-gelu-untied": {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},
    "gated-silu": {"feed_forward_proj": "gated-silu"},
    "gelu-eps": {"feed_forward_proj": "gelu", "layer_norm_epsilon": 1e-3},
}
OURS = {"AutoModel": fastformers.AutoModel, "AutoModelForSeq2SeqLM": fastformers.AutoModelForSeq2SeqLM,
        "AutoModelForTextEncoding": getattr(fastformers, "AutoModelForTextEncoding", T5EncoderModel)}
SEQ2SEQ_FIELDS = ("encoder_last_hidden_state", "decoder_hidden_states", "decoder_attentions", "cross_attentions",
                  "encoder_hidden_states", "encoder_attentions")


def compare(ours, theirs, fields, tol=1e-5):
    for name in fields:
        a, b = ours[name], theirs[name]
        pairs = list(zip(a, b)) if isinstance(b, (tuple, list)) else [(a, b)]
        if isinstance(b, (tuple, list)):
            assert len(a) == len(b) > 0, f"{name}: {len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(pairs):
            assert x.shape == y.shape, f"{name}[{i}]: shape {tuple(x.shape)} vs {tuple(y.shape)}"
            err = rel_err(x, y)
            assert err <= tol, f"{name}[{i}]: relative error {err:.2e} > {tol:.0e}"


def decoder_ids(batch: int, length: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, TINY["vocab_size"], (batch, length), generator=g)
    ids[:, 0] = 0  # decoder_start_token_id
    return ids


def load_pair(task, tmp_path, std=None, **config):
    path, hf = build_reference("t5", task, tmp_path, **{**TINY, **config})
    if std is not None:  # larger weights: generation picks varied tokens
        randomize_(hf, 0, std=std)
        hf.save_pretrained(path)
    return path, hf, OURS[task].from_pretrained(path)


@pytest.mark.parametrize("task", list(OURS))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_t5_matches_transformers(variant, task, tmp_path, padded_batch):
    _, hf, ours = load_pair(task, tmp_path, **VARIANTS[variant])
    assert type(ours).__name__ == type(hf).__name__
    ids, mask = padded_batch(lengths=(13, 6, 1), left=variant == "relu")
    inputs = {"input_ids": ids, "attention_mask": mask}
    if task == "AutoModelForTextEncoding":
        fields = ("last_hidden_state", "hidden_states", "attentions")
    else:
        inputs["decoder_input_ids"] = decoder_ids(3, 10)
        head = "logits" if task == "AutoModelForSeq2SeqLM" else "last_hidden_state"
        fields = (head,) + SEQ2SEQ_FIELDS
    with torch.no_grad():
        a = ours(**inputs, output_hidden_states=True, output_attentions=True)
        b = hf(**inputs, output_hidden_states=True, output_attentions=True)
        compare(a, b, fields)
        fast = ours(**inputs)  # without the optional outputs: the SDPA path
        compare(fast, b, fields[:1] + (("encoder_last_hidden_state",) if task != "AutoModelForTextEncoding" else ()))
    expected = {k for k, v in b.items() if k != "past_key_values" and not isinstance(v, tuple)}
    assert {k for k in fast if k != "past_key_values"} == expected
    if task == "AutoModelForSeq2SeqLM":
        scaled = variant != "gated-gelu-untied"
        assert ours.config.scale_decoder_outputs is hf.config.scale_decoder_outputs is scaled
        assert ours.lm_head.weight is ours.shared.weight  # transformers 5 ties it whenever the checkpoint has none
    if task != "AutoModelForTextEncoding":
        assert ours.encoder.embed_tokens.weight is ours.shared.weight is ours.decoder.embed_tokens.weight


def test_decoder_mask_encoder_outputs_tuple_and_embeds(tmp_path, padded_batch):
    _, hf, ours = load_pair("AutoModelForSeq2SeqLM", tmp_path)
    ids, mask = padded_batch(lengths=(9, 4))
    dec = decoder_ids(2, 6)
    dec_mask = torch.ones_like(dec)
    dec_mask[1, 4:] = 0
    with torch.no_grad():
        b = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
        a = ours(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
        compare(a, b, ("logits",))
        enc = ours.get_encoder()(input_ids=ids, attention_mask=mask, return_dict=False)
        c = ours(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
        compare(c, b, ("logits", "encoder_last_hidden_state"))
        embeds = ours(inputs_embeds=ours.shared(ids), attention_mask=mask, decoder_inputs_embeds=ours.shared(dec),
                      decoder_attention_mask=dec_mask)
        compare(embeds, b, ("logits", "encoder_last_hidden_state"))


@pytest.mark.parametrize("variant", ["relu", "gated-gelu-untied"])
def test_loss_with_labels_matches_transformers(variant, tmp_path, padded_batch):
    _, hf, ours = load_pair("AutoModelForSeq2SeqLM", tmp_path, **VARIANTS[variant])
    ids, mask = padded_batch(lengths=(9, 5, 3))
    labels = decoder_ids(3, 7, seed=5)
    labels[1, 5:] = -100
    labels[2, 2:] = -100
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=mask, labels=labels)
        b = hf(input_ids=ids, attention_mask=mask, labels=labels)
    compare(a, b, ("loss", "logits", "encoder_last_hidden_state"))
    shifted = ours.prepare_decoder_input_ids_from_labels(labels)
    assert torch.equal(shifted, hf.prepare_decoder_input_ids_from_labels(labels))
    assert shifted[0, 0] == 0 and bool((shifted != -100).all())


def _legacy_untied_checkpoint(tmp_path):
    """A T5 v1.1 / flan-t5 style checkpoint: its own lm_head.weight, config tie_word_embeddings=False."""
    from safetensors.torch import load_file, save_file

    path, _ = build_reference("t5", "AutoModelForSeq2SeqLM", tmp_path, **TINY, feed_forward_proj="gated-gelu")
    config = json.loads((path / "config.json").read_text())
    for key in ("scale_decoder_outputs", "dense_act_fn", "is_gated_act"):
        config.pop(key, None)
    config["tie_word_embeddings"] = False
    (path / "config.json").write_text(json.dumps(config))
    tensors = {k: v.clone() for k, v in load_file(path / "model.safetensors").items()}
    tensors["lm_head.weight"] = torch.randn(tensors["shared.weight"].shape, generator=torch.Generator().manual_seed(7))
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return path, tensors["lm_head.weight"]


def test_checkpoint_with_its_own_lm_head_stays_untied_and_round_trips(tmp_path, padded_batch):
    import transformers

    path, lm_head = _legacy_untied_checkpoint(tmp_path)
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(path, attn_implementation="eager").eval()
    ours = fastformers.AutoModelForSeq2SeqLM.from_pretrained(path)
    assert ours.lm_head.weight is not ours.shared.weight and torch.equal(ours.lm_head.weight, lm_head)
    assert ours.config.scale_decoder_outputs is hf.config.scale_decoder_outputs is False
    ids, mask = padded_batch(lengths=(8, 3))
    inputs = {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder_ids(2, 5)}
    with torch.no_grad():
        compare(ours(**inputs), hf(**inputs), ("logits",))
    # saved by fastformers, read by transformers: the same weights and the same logits
    ours.save_pretrained(tmp_path / "saved")
    back = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "saved", attn_implementation="eager").eval()
    for name, tensor in hf.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    with torch.no_grad():
        compare(back(**inputs), hf(**inputs), ("logits",))
    again = fastformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "saved")
    assert again.lm_head.weight is not again.shared.weight and again.config.scale_decoder_outputs is False


def test_tied_model_round_trips_through_save_pretrained(tmp_path):
    import transformers

    _, hf, ours = load_pair("AutoModelForSeq2SeqLM", tmp_path, feed_forward_proj="gated-gelu",
                            tie_word_embeddings=False)
    ours.save_pretrained(tmp_path / "saved")
    back = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "saved")
    assert back.config.scale_decoder_outputs is False and back.config.is_gated_act
    for name, tensor in hf.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    assert T5Config.from_pretrained(tmp_path / "saved").scale_decoder_outputs is False


@pytest.mark.parametrize("cache_kind", ["static", "dynamic"])
def test_incremental_decoding_equals_full_decoding(cache_kind, tmp_path, padded_batch):
    _, hf, ours = load_pair("AutoModelForSeq2SeqLM", tmp_path, feed_forward_proj="gated-gelu")
    ids, mask = padded_batch(lengths=(11, 4))
    dec = decoder_ids(2, 10)
    with torch.no_grad():
        full = ours(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, use_cache=False)
        assert full.past_key_values is None
        compare(full, hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec), ("logits",))
        enc = ours.get_encoder()(input_ids=ids, attention_mask=mask)
        cache = ours.make_static_cache(2, 16) if cache_kind == "static" else None
        out = ours(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=dec[:, :3], past_key_values=cache,
                   use_cache=True)
        cache = out.past_key_values
        assert isinstance(cache, EncoderDecoderCache)
        inner = StaticCache if cache_kind == "static" else DynamicCache
        assert isinstance(cache.self_attention_cache, inner)
        assert all(cache.cross(i) is not None for i in range(TINY["num_decoder_layers"]))
        steps = [out.logits]
        for t in range(3, 10):
            out = ours(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=dec[:, t:t + 1],
                       past_key_values=cache)
            steps.append(out.logits)
        assert cache.get_seq_length() == 10
    assert rel_err(torch.cat(steps, dim=1), full.logits) <= 1e-5


def test_chunked_decoding_through_the_cache(tmp_path, padded_batch):
    """Several new decoder tokens at once against a non-empty cache: causal bias offset by the cache length."""
    _, _, ours = load_pair("AutoModelForSeq2SeqLM", tmp_path)
    ids, mask = padded_batch(lengths=(7, 2))
    dec = decoder_ids(2, 10)
    with torch.no_grad():
        full = ours(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        out = ours(input_ids=ids, attention_mask=mask, decoder_input_ids=dec[:, :4])
        rest = ours(input_ids=ids, attention_mask=mask, decoder_input_ids=dec[:, 4:], past_key_values=out.past_key_values,
                    output_attentions=True)
    assert rel_err(torch.cat([out.logits, rest.logits], dim=1), full) <= 1e-5
    assert rest.decoder_attentions[0].shape == (2, TINY["num_heads"], 6, 10)


def test_relative_position_bucket_matches_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-300, 300)[None, :] - torch.arange(0, 40)[:, None]
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 8), (16, 50)):
            ours = relative_position_bucket(rel, bidirectional, buckets, distance)
            theirs = T5Attention._relative_position_bucket(rel, bidirectional, buckets, distance)
            assert torch.equal(ours, theirs), (bidirectional, buckets, distance)


# -- generate() -------------------------------------------------------------------------------
GENERATE = {
    "greedy": {"do_sample": False},
    "beam": {"num_beams": 3, "num_return_sequences": 2, "do_sample": False},
}


# transformers 5.23's generate() sizes its T5 cache by num_layers: it fails when num_decoder_layers differs
GENERATE_CONFIG = {"num_decoder_layers": TINY["num_layers"]}


@pytest.mark.parametrize("variant", ["relu", "gated-gelu-untied"])
@pytest.mark.parametrize("mode", list(GENERATE))
def test_generate_matches_transformers(mode, variant, tmp_path, padded_batch):
    _, hf, ours = load_pair("AutoModelForSeq2SeqLM", tmp_path, std=0.6, **GENERATE_CONFIG, **VARIANTS[variant])
    ids, mask = padded_batch(lengths=(9, 5, 2))
    settings = {"input_ids": ids, "attention_mask": mask, "max_new_tokens": 10, **GENERATE[mode]}
    with torch.no_grad():
        expected, got = hf.generate(**settings), ours.generate(**settings)
    assert got.shape[1] > 2
    assert torch.equal(got, expected)


def test_sampling_with_top_k_1_is_greedy(tmp_path, padded_batch):
    _, hf, ours = load_pair("AutoModelForSeq2SeqLM", tmp_path, std=0.6, feed_forward_proj="gated-gelu",
                            **GENERATE_CONFIG)
    ids, mask = padded_batch(lengths=(9, 5, 2))
    settings = {"input_ids": ids, "attention_mask": mask, "max_new_tokens": 10}
    with torch.no_grad():
        greedy = hf.generate(**settings, do_sample=False)
        torch.manual_seed(0)
        sampled = ours.generate(**settings, do_sample=True, top_k=1)
    assert torch.equal(sampled, greedy)


# -- errors -----------------------------------------------------------------------------------
def test_bad_config_and_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="feed_forward_proj='gated-gelu-x'"):
        T5Config(feed_forward_proj="gated-gelu-x")
    with pytest.raises(ValueError, match="feed_forward_proj='gated-foo'"):
        T5Config(feed_forward_proj="gated-foo")
    with pytest.raises(ValueError, match="d_kv=0"):
        T5Config(d_kv=0)
    _, _, ours = load_pair("AutoModelForSeq2SeqLM", tmp_path, decoder_start_token_id=None)
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="decoder_input_ids"):
        ours(input_ids=ids)
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        ours(input_ids=ids, labels=ids)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        ours(input_ids=ids, attention_mask=torch.ones(1, 4), decoder_input_ids=ids)
    with pytest.raises(ValueError, match="decoder_attention_mask must have shape"):
        ours(input_ids=ids, decoder_input_ids=ids, decoder_attention_mask=torch.ones(1, 2))
    with pytest.raises(TypeError, match="EncoderDecoderCache"):
        ours(input_ids=ids, decoder_input_ids=ids, past_key_values=DynamicCache())
    with pytest.raises(IndexError, match="token id 99"):
        ours(input_ids=ids, decoder_input_ids=torch.tensor([[0, 99]]))


def test_encoder_model_loads_a_seq2seq_checkpoint(tmp_path, padded_batch, caplog):
    """T5EncoderModel.from_pretrained on a full T5 checkpoint (the usual text-encoder use): the decoder
    weights are skipped without a warning, and the output is transformers' T5EncoderModel's."""
    import transformers

    path, _ = build_reference("t5", "AutoModelForSeq2SeqLM", tmp_path, **VARIANTS["gated-gelu-untied"], **TINY)
    hf = transformers.T5EncoderModel.from_pretrained(path, attn_implementation="eager").eval()
    with caplog.at_level("WARNING", logger="fastformers"):
        ours = T5EncoderModel.from_pretrained(path)
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    ids, mask = padded_batch(lengths=(9, 4))
    with torch.no_grad():
        compare(ours(ids, attention_mask=mask), hf(ids, attention_mask=mask), ("last_hidden_state",))


def test_from_config_initialises_as_t5(padded_batch):
    config = T5Config(**TINY, feed_forward_proj="gated-gelu")
    model = fastformers.AutoModelForSeq2SeqLM.from_config(config)
    assert model.lm_head.weight is model.shared.weight
    assert abs(float(model.shared.weight.detach().std()) - 1.0) < 0.1  # N(0, initializer_factor), not overwritten by lm_head
    q = model.encoder.block[0].layer[0].SelfAttention.q.weight
    assert abs(float(q.detach().std()) * (TINY["d_model"] * TINY["d_kv"]) ** 0.5 - 1.0) < 0.1
    ids, mask = padded_batch(lengths=(5, 3))
    labels = decoder_ids(2, 4)
    model.train()
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss) and model.shared.weight.grad.abs().sum() > 0
