"""Pipelines on empty input: an empty string and lists holding empty strings give transformers' results; an
empty list gives an empty list (transformers 5.25 fails with `IndexError: list index out of range`, or
token-classification's `ValueError: At least one input is required.`); fill-mask without a mask token is an error
naming the mask token, as in transformers."""

from __future__ import annotations

import pytest

import fastformers
from pipeline_models import assert_same, saved_model

TASKS = {"text-classification": "AutoModelForSequenceClassification", "feature-extraction": "AutoModel",
         "token-classification": "AutoModelForTokenClassification"}


@pytest.mark.malformed
@pytest.mark.parametrize("task", TASKS)
def test_empty_strings_match_transformers_and_an_empty_list_is_empty(task, tmp_path_factory):
    import transformers

    path = saved_model(tmp_path_factory, TASKS[task])
    ours, theirs = fastformers.pipeline(task, model=path), transformers.pipeline(task, model=path)
    for text in ("", [""], ["", "a b"], ["", ""]):
        assert_same(ours(text), theirs(text), where=repr(text))
    assert ours([]) == []


@pytest.mark.malformed
def test_fill_mask_without_a_mask_names_it(tmp_path_factory):
    path = saved_model(tmp_path_factory, "AutoModelForMaskedLM")
    ours = fastformers.pipeline("fill-mask", model=path)
    for text in ("", [""], ["a [MASK]", ""]):
        with pytest.raises(ValueError, match=r"no mask token \(\[MASK\]\) in the input ''"):
            ours(text)
    assert ours([]) == []
