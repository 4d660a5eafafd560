"""token-classification with a byte-level BPE tokenizer (no '##' sub-word prefix: transformers' fallback
heuristic decides what is a sub-word) on a tiny RoBERTa, against transformers' pipeline."""

import pytest
import torch
import transformers

import fastformers
from conftest import build_reference
from pipeline_models import NER_LABELS, assert_same, byte_level_bpe

TEXTS = ["My name is Sarah and I live in Paris", "Wolfgang works at Hugging Face in New York, zyxw!", "in"]


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    hf_tok = byte_level_bpe(64)
    path, _ = build_reference("roberta", "AutoModelForTokenClassification", tmp_path_factory.mktemp("bpe"),
                              vocab_size=len(hf_tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=37, max_position_embeddings=80, pad_token_id=1,
                              num_labels=len(NER_LABELS), id2label=NER_LABELS,
                              label2id={v: k for k, v in NER_LABELS.items()})
    hf_model = transformers.AutoModelForTokenClassification.from_pretrained(path)
    hf_model.classifier.bias.data = torch.tensor([0.0, -0.1, 0.3, -0.1, 0.3, 0.2])
    hf_model.save_pretrained(path)
    hf_tok.save_pretrained(path)
    return fastformers.pipeline("ner", model=str(path)), transformers.pipeline("ner", model=str(path))


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
@pytest.mark.filterwarnings("ignore:Tokenizer does not support real words")
def test_matches_transformers(pipes, strategy):
    ours, theirs = pipes
    for ignore_labels in (None, []):
        expected = theirs(TEXTS, aggregation_strategy=strategy, ignore_labels=ignore_labels)
        assert any(expected)
        assert_same(ours(TEXTS, aggregation_strategy=strategy, ignore_labels=ignore_labels, batch_size=2), expected)


def test_word_strategies_warn_about_the_heuristic(pipes):
    with pytest.warns(UserWarning, match="fallback heuristic"):
        pipes[0](TEXTS[0], aggregation_strategy="first")
