"""fill-mask against transformers' pipeline on the same tiny saved model."""

import pytest
import transformers

import fastformers
from pipeline_models import assert_same, saved_model

TEXTS = ["Paris is the [MASK] of France.", "I [MASK] pizza.", "The [MASK] sat on the [MASK] all day long, purring."]


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    path = saved_model(tmp_path_factory, "AutoModelForMaskedLM")
    return fastformers.pipeline("fill-mask", model=path), transformers.pipeline("fill-mask", model=path)


@pytest.mark.parametrize("kwargs", [{}, {"top_k": 2}, {"targets": ["capital", "city", "pizza"]},
                                    {"targets": "love", "top_k": 3}])
def test_matches_transformers(pipes, kwargs):
    ours, theirs = pipes
    for inputs in (TEXTS[0], TEXTS[2], TEXTS, TEXTS[:1]):
        assert_same(ours(inputs, **kwargs), theirs(inputs, **kwargs))


def test_batches_and_generators(pipes):
    ours, theirs = pipes
    expected = theirs(TEXTS, top_k=3)
    assert_same(ours(TEXTS, top_k=3, batch_size=3), expected)
    assert_same(list(ours((t for t in TEXTS), top_k=3, batch_size=2)), expected)


def test_no_mask_is_an_error(pipes):
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        pipes[0]("no mask here")
