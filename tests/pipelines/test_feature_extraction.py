"""feature-extraction and sentence-embedding: a tiny model against transformers' pipeline, and the real
all-MiniLM-L6-v2 against transformers' hidden states and the sentence-transformers recipe."""

import pytest
import torch
import transformers

import fastformers
from fastformers.pipelines.defaults import default_embedding_model
from pipeline_models import assert_same, saved_model

TEXTS = ["Hello world", "A much longer sentence, with punctuation and émojis 🍕, to make padding matter.", "x"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = saved_model(tmp_path_factory, "AutoModel")
    return fastformers.pipeline("feature-extraction", model=path), transformers.pipeline("feature-extraction",
                                                                                          model=path)


def test_tiny_matches_transformers(tiny):
    ours, theirs = tiny
    assert_same(ours(TEXTS[0]), theirs(TEXTS[0]))
    expected = theirs(TEXTS)  # batch size 1 in transformers: no padding in its outputs
    assert_same(ours(TEXTS), expected)
    assert_same(ours(TEXTS, batch_size=3), expected)  # padding is cut off: the same result in any batch
    assert_same(list(ours((t for t in TEXTS), batch_size=2)), expected)
    assert_same(ours(TEXTS[1], return_tensors=True), theirs(TEXTS[1], return_tensors=True))


@pytest.fixture(scope="module")
def minilm():
    path = default_embedding_model()
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    return path, hf_tok, transformers.AutoModel.from_pretrained(path).eval()


def test_minilm_features_equal_transformers_hidden_states(minilm):
    path, hf_tok, hf_model = minilm
    features = fastformers.pipeline("feature-extraction", model=path, batch_size=2)(TEXTS, return_tensors=True)
    for text, ours in zip(TEXTS, features):
        with torch.inference_mode():
            theirs = hf_model(**hf_tok(text, return_tensors="pt")).last_hidden_state
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max() <= 1e-5


def test_minilm_sentence_embedding_is_mean_pool_and_normalise(minilm):
    path, hf_tok, hf_model = minilm
    embed = fastformers.pipeline("sentence-embedding", model=path, batch_size=2)
    with torch.inference_mode():
        enc = hf_tok(TEXTS, padding=True, truncation=True, return_tensors="pt")
        hidden = hf_model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    ours = embed(TEXTS)
    assert isinstance(ours, list) and all(isinstance(v, list) and len(v) == 384 for v in ours)
    assert (torch.tensor(ours) - expected).abs().max() <= 1e-5
    single = embed(TEXTS[0], return_tensors=True)
    assert single.shape == (384,) and (single - expected[0]).abs().max() <= 1e-5
    assert torch.allclose(torch.stack(list(embed(iter(TEXTS), return_tensors=True))), expected, atol=1e-5)
