"""zero-shot-classification against transformers' pipeline on the same tiny saved NLI-labelled model."""

import pytest
import transformers

import fastformers
from pipeline_models import assert_same, saved_model

NLI = {0: "contradiction", 1: "neutral", 2: "entailment"}
TEXTS = ["I have a problem with my iphone that needs to be resolved asap!!", "The match ended 2-1 after extra time.",
         "ok"]
LABELS = ["urgent", "not urgent", "phone", "sports", "politics"]


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    path = saved_model(tmp_path_factory, "AutoModelForSequenceClassification", num_labels=3, id2label=NLI,
                       label2id={v: k for k, v in NLI.items()})
    return (fastformers.pipeline("zero-shot-classification", model=path),
            transformers.pipeline("zero-shot-classification", model=path))


@pytest.mark.parametrize("kwargs", [{}, {"multi_label": True}, {"hypothesis_template": "This text is about {}."},
                                    {"hypothesis_template": "Topic: {}", "multi_label": True}])
def test_matches_transformers(pipes, kwargs):
    ours, theirs = pipes
    assert_same(ours(TEXTS[0], candidate_labels=LABELS, **kwargs), theirs(TEXTS[0], candidate_labels=LABELS, **kwargs))
    assert_same(ours(TEXTS, candidate_labels=LABELS, **kwargs), theirs(TEXTS, candidate_labels=LABELS, **kwargs))
    assert_same(ours(TEXTS, LABELS, batch_size=4, **kwargs), theirs(TEXTS, LABELS, **kwargs))


def test_comma_string_and_single_label(pipes):
    ours, theirs = pipes
    out = ours(TEXTS[1], candidate_labels="sports, politics ,, cooking")
    assert out["labels"] and sorted(out["labels"]) == ["cooking", "politics", "sports"]
    assert_same(out, theirs(TEXTS[1], candidate_labels="sports, politics ,, cooking"))
    assert abs(sum(out["scores"]) - 1) < 1e-5
    assert_same(ours(TEXTS, candidate_labels="sports"), theirs(TEXTS, candidate_labels="sports"))
    multi = ours(TEXTS[0], candidate_labels=LABELS, multi_label=True)
    assert multi["scores"] == sorted(multi["scores"], reverse=True)


def test_long_sequence_is_truncated(pipes):
    ours, theirs = pipes
    long = " ".join(["word"] * 300)  # past the tiny model's 128 positions: the premise is cut, not the hypothesis
    assert_same(ours([long, TEXTS[2]], candidate_labels=LABELS), theirs([long, TEXTS[2]], candidate_labels=LABELS))


def test_defaults_from_construction(pipes):
    ours, theirs = pipes
    pipe = fastformers.pipeline("zero-shot-classification", model=ours.model, tokenizer=ours.tokenizer,
                                candidate_labels=LABELS, multi_label=True)
    assert_same(pipe(TEXTS), theirs(TEXTS, candidate_labels=LABELS, multi_label=True))


def test_bad_template_and_labels(pipes):
    ours, _ = pipes
    for template in ("no placeholder", "{0} and {1}", "{label}"):
        with pytest.raises(ValueError, match="hypothesis_template"):
            ours(TEXTS[0], candidate_labels=LABELS, hypothesis_template=template)
    with pytest.raises(ValueError, match="at least one label"):
        ours(TEXTS[0], candidate_labels=[])
    with pytest.raises(ValueError, match="at least one label"):
        ours(TEXTS[0])


def test_missing_entailment_label(tmp_path_factory):
    labels = {0: "NEG", 1: "NEU", 2: "POS"}
    path = saved_model(tmp_path_factory, "AutoModelForSequenceClassification", seed=2, num_labels=3,
                       id2label=labels, label2id={v: k for k, v in labels.items()})
    with pytest.raises(ValueError, match="entail"):
        fastformers.pipeline("zero-shot-classification", model=path)(TEXTS[0], candidate_labels=LABELS)


def test_bart_mnli_style_model_matches_transformers(tmp_path):
    """facebook/bart-large-mnli is the task's default: a tiny BartForSequenceClassification with its labels
    (eos-token pooling, encoder-decoder) gives transformers' zero-shot results."""
    from conftest import build_reference
    from pipeline_models import hf_tokenizer

    path, _ = build_reference("bart", "AutoModelForSequenceClassification", tmp_path, vocab_size=30522, d_model=16,
                              encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                              encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128, pad_token_id=0,
                              bos_token_id=101, eos_token_id=102, decoder_start_token_id=102, num_labels=3,
                              id2label=NLI, label2id={v: k for k, v in NLI.items()})
    tokenizer = hf_tokenizer()
    tokenizer.save_pretrained(path)
    ours = fastformers.pipeline("zero-shot-classification", model=str(path))
    theirs = transformers.pipeline("zero-shot-classification", model=str(path))
    for kwargs in ({}, {"multi_label": True}):
        assert_same(ours(TEXTS, candidate_labels=LABELS, **kwargs), theirs(TEXTS, candidate_labels=LABELS, **kwargs))
    assert_same(ours(TEXTS, LABELS, batch_size=3), theirs(TEXTS, LABELS))
