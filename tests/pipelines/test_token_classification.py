"""token-classification / ner against transformers' pipeline on the same tiny saved model."""

import pytest
import torch
import transformers

import fastformers
from pipeline_models import NER_LABELS, assert_same, saved_model

TEXTS = ["My name is Wolfgang and I live in Berlin", "Hugging Face Inc. is a company based in New York City.",
         "Crème brûlée à São Paulo 🍕 xyzzyqwerty", "Hi"]


@pytest.fixture(scope="module", params=["random", "biased"])
def pipes(tmp_path_factory, request):
    """The random model predicts mostly B- labels; the biased one also I- runs, O and an unprefixed MISC,
    so that grouping has adjacent entities of one type to merge."""
    label2id = {v: k for k, v in NER_LABELS.items()}
    path = saved_model(tmp_path_factory, "AutoModelForTokenClassification", num_labels=len(NER_LABELS),
                       id2label=NER_LABELS, label2id=label2id)
    if request.param == "biased":
        hf_model = transformers.AutoModelForTokenClassification.from_pretrained(path)
        hf_model.classifier.bias.data = torch.tensor([0.0, -0.1, 0.3, -0.1, 0.3, 0.2])
        hf_model.save_pretrained(path)
    return fastformers.pipeline("ner", model=path), transformers.pipeline("ner", model=path)


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
@pytest.mark.parametrize("ignore_labels", [None, []])
def test_matches_transformers(pipes, strategy, ignore_labels):
    ours, theirs = pipes
    kwargs = {"aggregation_strategy": strategy, "ignore_labels": ignore_labels}
    expected = theirs(TEXTS, **kwargs)
    assert any(expected), "the random model should find some entities"
    if strategy in ("first", "average", "max") and ignore_labels == []:
        assert any("xyzzyqwerty" in e["word"] for e in expected[2]), "sub-word pieces fuse into one word"
    if strategy != "none" and ignore_labels == []:
        assert any(" " in e["word"] for out in expected for e in out), "some group spans several words"
    assert_same(ours(TEXTS, **kwargs), expected)
    assert_same(ours(TEXTS[1], **kwargs), theirs(TEXTS[1], **kwargs))
    assert_same(ours(TEXTS, batch_size=3, **kwargs), expected)
    assert_same(list(ours((t for t in TEXTS), batch_size=2, **kwargs)), expected)


def test_defaults_at_construction(pipes):
    ours, theirs = pipes
    grouped = fastformers.pipeline("token-classification", model=ours.model, tokenizer=ours.tokenizer,
                                   aggregation_strategy="simple")
    assert_same(grouped(TEXTS), theirs(TEXTS, aggregation_strategy="simple"))
    with pytest.raises(ValueError, match="aggregation_strategy"):
        ours("x", aggregation_strategy="longest")
