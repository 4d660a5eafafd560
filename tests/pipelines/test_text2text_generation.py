"""summarization, translation and text2text-generation pipelines on tiny random BART and T5 models.

transformers 5 has no such pipelines: the expected outputs are transformers' own model.generate() on the
same saved weights, with the input built as transformers 4's pipelines built it (the model's prefix or
its task_specific_params' prefix, then the tokenizer), decoded with skip_special_tokens=True."""

from __future__ import annotations

import pytest
import torch

from conftest import build_reference
from pipeline_models import hf_tokenizer

import fastformers

# the real all-MiniLM-L6-v2 WordPiece tokenizer: [CLS]=101, [SEP]=102, [PAD]=0
SPECIAL = dict(vocab_size=30522, pad_token_id=0, bos_token_id=101, eos_token_id=102)
BART = dict(d_model=16, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128, decoder_start_token_id=102,
            forced_eos_token_id=102, **SPECIAL)
T5 = dict(d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2, num_heads=2, decoder_start_token_id=0,
          feed_forward_proj="gated-gelu", tie_word_embeddings=False, **SPECIAL,
          task_specific_params={"summarization": {"prefix": "summarize: ", "num_beams": 2, "max_length": 9},
                                "translation_en_to_de": {"prefix": "translate English to German: ",
                                                         "max_length": 7}})
TEXTS = ["The quick brown fox jumps over the lazy dog near the river bank.",
         "Paris is the capital of France.",
         "A short one"]


def _save(tmp_path_factory, model_type, config):
    path, hf_model = build_reference(model_type, "AutoModelForSeq2SeqLM", tmp_path_factory.mktemp(model_type),
                                     **config)
    hf_tokenizer().save_pretrained(path)
    return str(path), hf_model


@pytest.fixture(scope="module")
def bart(tmp_path_factory):
    return _save(tmp_path_factory, "bart", BART)


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    return _save(tmp_path_factory, "t5", T5)


def expected(hf_model, texts, prefix="", batch=False, **generate):
    """transformers' generate on the same weights, decoded as the pipelines decode."""
    tok = hf_tokenizer()
    texts = [texts] if isinstance(texts, str) else texts
    groups = [texts] if batch else [[t] for t in texts]
    out = []
    for group in groups:
        enc = tok([prefix + t for t in group], return_tensors="pt", padding=True, return_token_type_ids=False)
        with torch.no_grad():
            seqs = hf_model.generate(**enc, **generate)
        per = seqs.shape[0] // len(group)
        for i in range(len(group)):
            out.append([tok.decode(s, skip_special_tokens=True) for s in seqs[i * per:(i + 1) * per]])
    return out


def test_summarization_single_text_bart(bart):
    path, hf_model = bart
    summarize = fastformers.pipeline("summarization", model=path)
    result = summarize(TEXTS[0], max_new_tokens=8, num_beams=2)
    assert result == [{"summary_text": expected(hf_model, TEXTS[0], max_new_tokens=8, num_beams=2)[0][0]}]
    assert result[0]["summary_text"]  # random weights still write something


def test_summarization_list_batched_matches_transformers_batch(bart):
    path, hf_model = bart
    summarize = fastformers.pipeline("summarization", model=path, max_new_tokens=6)
    ours = summarize(TEXTS, batch_size=3)
    theirs = expected(hf_model, TEXTS, batch=True, max_new_tokens=6)
    assert ours == [{"summary_text": t[0]} for t in theirs]  # one sequence each: a flat list
    # one at a time gives the same texts (padding changes nothing but float rounding)
    assert summarize(TEXTS, batch_size=1) == [{"summary_text": t[0]} for t in expected(hf_model, TEXTS,
                                                                                        max_new_tokens=6)]


def test_several_return_sequences_nest_per_input(bart):
    path, hf_model = bart
    pipe = fastformers.pipeline("text2text-generation", model=path)
    gen = dict(max_new_tokens=5, num_beams=3, num_return_sequences=2)
    ours = pipe(TEXTS[:2], **gen)
    theirs = expected(hf_model, TEXTS[:2], **gen)
    assert ours == [[{"generated_text": t} for t in texts] for texts in theirs]


def test_return_tensors_gives_token_ids(bart):
    path, hf_model = bart
    pipe = fastformers.pipeline("text2text-generation", model=path)
    out = pipe(TEXTS[1], return_tensors=True, max_new_tokens=4)
    enc = hf_tokenizer()(TEXTS[1], return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        ids = hf_model.generate(**enc, max_new_tokens=4)[0]
    assert list(out[0]) == ["generated_token_ids"] and torch.equal(out[0]["generated_token_ids"], ids)


def test_generator_input_streams_results(bart):
    path, hf_model = bart
    pipe = fastformers.pipeline("text2text-generation", model=path, max_new_tokens=4)
    results = pipe(t for t in TEXTS)
    assert not isinstance(results, list)
    assert list(results) == [[{"generated_text": t[0]}] for t in expected(hf_model, TEXTS, max_new_tokens=4)]


def test_t5_summarization_uses_task_specific_params(t5):
    """T5 checkpoints say how to summarize: prefix "summarize: ", beams and length from the config."""
    path, hf_model = t5
    summarize = fastformers.pipeline("summarization", model=path)
    theirs = expected(hf_model, TEXTS[0], prefix="summarize: ", num_beams=2, max_length=9)
    assert summarize(TEXTS[0]) == [{"summary_text": theirs[0][0]}]
    # an explicit prefix replaces the task's
    assert summarize(TEXTS[0], prefix="") == [{"summary_text": expected(hf_model, TEXTS[0], num_beams=2,
                                                                         max_length=9)[0][0]}]


def test_translation_language_pair_picks_prefix(t5):
    path, hf_model = t5
    translate = fastformers.pipeline("translation_en_to_de", model=path)
    theirs = expected(hf_model, TEXTS[1], prefix="translate English to German: ", max_length=7)
    assert translate(TEXTS[1]) == [{"translation_text": theirs[0][0]}]
    plain = fastformers.pipeline("translation", model=path, max_new_tokens=3)
    assert plain(TEXTS[1]) == [{"translation_text": expected(hf_model, TEXTS[1], max_new_tokens=3)[0][0]}]


def test_decoder_only_model_is_refused(tmp_path):
    path, _ = build_reference("llama", "AutoModelForCausalLM", tmp_path, vocab_size=99, hidden_size=16,
                              intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    model = fastformers.AutoModelForCausalLM.from_pretrained(path)
    with pytest.raises(ValueError, match="needs an encoder-decoder model"):
        fastformers.pipeline("summarization", model=model, tokenizer=hf_tokenizer())


def test_non_string_input_is_refused(bart):
    pipe = fastformers.pipeline("summarization", model=bart[0])
    with pytest.raises(TypeError, match="each input must be a string, got int"):
        pipe([TEXTS[0], 3])


def test_marian_translation_with_sentencepiece_tokenizer(tmp_path):
    """A Marian checkpoint as opus-mt ships it: source.spm / target.spm / vocab.json, no tokenizer.json. The
    pipeline reads the SentencePiece models itself; the result is transformers' MarianTokenizer + generate."""
    import transformers
    from tokenization.test_sentencepiece import marian_folder, marian_vocab, train

    source, target = train("unigram", 250, seed=1), train("unigram", 260, seed=2)
    vocab = marian_vocab(source, target)
    path = marian_folder(tmp_path / "marian", source, target, vocab)
    _, hf_model = build_reference("marian", "AutoModelForSeq2SeqLM", tmp_path, vocab_size=len(vocab), d_model=16,
                                  encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
                                  decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                                  max_position_embeddings=64, pad_token_id=vocab["<pad>"], eos_token_id=0,
                                  decoder_start_token_id=vocab["<pad>"], forced_eos_token_id=0)
    with torch.no_grad():  # randomize_ overwrote the sinusoidal position table, which checkpoints do not store
        for module in hf_model.modules():
            if hasattr(module, "create_weight"):
                module.weight.copy_(module.create_weight())
    hf_model.save_pretrained(path)
    texts = ["the quick brown fox", "café crème brûlée in Zürich", "hello world"]
    translate = fastformers.pipeline("translation", model=str(path), max_new_tokens=6, num_beams=2)
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    for text in texts:
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            ids = hf_model.generate(**enc, max_new_tokens=6, num_beams=2)[0]
        assert translate(text) == [{"translation_text": tok.decode(ids, skip_special_tokens=True)}]
