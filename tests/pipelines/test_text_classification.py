"""text-classification / sentiment-analysis against transformers' pipeline on the same tiny saved model."""

import pytest
import transformers

import fastformers
from pipeline_models import assert_same, saved_model

TEXTS = ["I love this movie", "Terrible. Would not watch again, not even for free!", "ok", "Crème brûlée 🍕"]
PAIR = {"text": "What is the capital of France?", "text_pair": "Paris is the capital of France."}


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    multi = saved_model(tmp_path_factory, "AutoModelForSequenceClassification", num_labels=3,
                        id2label={0: "NEG", 1: "NEU", 2: "POS"}, label2id={"NEG": 0, "NEU": 1, "POS": 2})
    single = saved_model(tmp_path_factory, "AutoModelForSequenceClassification", seed=1, num_labels=1)
    return {name: (fastformers.pipeline("text-classification", model=path),
                   transformers.pipeline("text-classification", model=path))
            for name, path in (("multi", multi), ("single", single))}


@pytest.mark.parametrize("kwargs", [{}, {"top_k": 1}, {"top_k": 2}, {"top_k": None},
                                    {"function_to_apply": "sigmoid"}, {"function_to_apply": "none", "top_k": None}])
def test_matches_transformers(pipes, kwargs):
    ours, theirs = pipes["multi"]
    assert_same(ours(TEXTS[0], **kwargs), theirs(TEXTS[0], **kwargs))
    assert_same(ours(TEXTS, **kwargs), theirs(TEXTS, **kwargs))
    assert_same(ours(PAIR, **kwargs), theirs(PAIR, **kwargs))
    assert_same(ours([PAIR, PAIR], **kwargs), theirs([PAIR, PAIR], **kwargs))


def test_single_label_model_uses_sigmoid(pipes):
    ours, theirs = pipes["single"]
    out = ours(TEXTS)
    assert_same(out, theirs(TEXTS))
    assert all(0 < r["score"] < 1 for r in out)


def test_batches_and_generators(pipes):
    ours, theirs = pipes["multi"]
    expected = theirs(TEXTS, top_k=None)
    assert_same(ours(TEXTS, top_k=None, batch_size=3), expected)
    lazy = ours((t for t in TEXTS), top_k=None, batch_size=2)
    assert not isinstance(lazy, list)
    assert_same(list(lazy), expected)
    assert_same(fastformers.pipeline("sentiment-analysis", model=ours.model, tokenizer=ours.tokenizer,
                                     batch_size=4, top_k=None)(TEXTS), expected)


def test_bad_arguments(pipes):
    ours, _ = pipes["multi"]
    with pytest.raises(ValueError, match="function_to_apply"):
        ours("x", function_to_apply="relu")
    with pytest.raises(ValueError, match="text_pair"):
        ours([["a", "b"]])
