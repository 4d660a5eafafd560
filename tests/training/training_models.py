"""Tiny random models for the fine-tuning tests: one representative head per family that has a loss, with every
dropout probability at 0 (so that train mode is deterministic and comparable with transformers), the same
weights loaded in both libraries, and a batch with labels. (A helper module, not a conftest: a second conftest
would shadow tests/conftest.py.)"""

from __future__ import annotations

import torch

from conftest import build_reference

import fastformers

ENCODER = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
               max_position_embeddings=64, type_vocab_size=2, num_labels=3, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0)
DECODER = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=37, max_position_embeddings=64, pad_token_id=0)
SEQ2SEQ = dict(vocab_size=99, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
               decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=37, max_position_embeddings=64,
               dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)

GPT2 = dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=32, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, pad_token_id=0)

# name -> (model_type, task, config); a representative head per family with a loss, and a few more heads
FAMILIES = {
    "bert-mlm": ("bert", "AutoModelForMaskedLM", ENCODER),
    "bert-cls": ("bert", "AutoModelForSequenceClassification", ENCODER),
    "distilbert-cls": ("distilbert", "AutoModelForSequenceClassification",
                       dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64,
                            num_labels=3, dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)),
    "roberta-mlm": ("roberta", "AutoModelForMaskedLM", dict(ENCODER, type_vocab_size=1, pad_token_id=1)),
    "xlm-roberta-cls": ("xlm-roberta", "AutoModelForSequenceClassification",
                        dict(ENCODER, type_vocab_size=1, pad_token_id=1)),
    "electra-cls": ("electra", "AutoModelForSequenceClassification", dict(ENCODER, embedding_size=16)),
    "electra-mlm": ("electra", "AutoModelForMaskedLM", dict(ENCODER, embedding_size=16)),
    "gpt2": ("gpt2", "AutoModelForCausalLM", GPT2),
    "llama": ("llama", "AutoModelForCausalLM", DECODER),
    "llama-tied": ("llama", "AutoModelForCausalLM", dict(DECODER, tie_word_embeddings=True)),
    "mistral": ("mistral", "AutoModelForCausalLM", DECODER),
    "qwen2": ("qwen2", "AutoModelForCausalLM", DECODER),
    "qwen3": ("qwen3", "AutoModelForCausalLM", dict(DECODER, head_dim=16)),
    "bart": ("bart", "AutoModelForSeq2SeqLM",
             dict(SEQ2SEQ, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)),
    "marian": ("marian", "AutoModelForSeq2SeqLM",
               dict(SEQ2SEQ, pad_token_id=98, eos_token_id=0, decoder_start_token_id=98, scale_embedding=True)),
    "bert-tokens": ("bert", "AutoModelForTokenClassification", ENCODER),
    "bert-qa": ("bert", "AutoModelForQuestionAnswering", dict(ENCODER, num_labels=2)),
    "gpt2-cls": ("gpt2", "AutoModelForSequenceClassification", dict(GPT2, num_labels=3)),
    "bart-cls": ("bart", "AutoModelForSequenceClassification",
                 dict(SEQ2SEQ, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                      num_labels=3)),
    "t5": ("t5", "AutoModelForSeq2SeqLM",
           dict(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=2, num_heads=4,
                relative_attention_num_buckets=8, relative_attention_max_distance=8, decoder_start_token_id=0,
                pad_token_id=0, dropout_rate=0.0, feed_forward_proj="gated-gelu")),
}


# the dropout probabilities of each model type's config, for tests that want dropout on
_BERT, _LLAMA, _BART = ("hidden_dropout_prob", "attention_probs_dropout_prob"), ("attention_dropout",), \
    ("dropout", "attention_dropout", "activation_dropout")
DROPOUT_KEYS = {"bert": _BERT, "roberta": _BERT, "xlm-roberta": _BERT, "electra": _BERT,
                "distilbert": ("dropout", "attention_dropout"), "gpt2": ("resid_pdrop", "embd_pdrop", "attn_pdrop"),
                "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA, "bart": _BART, "marian": _BART,
                "t5": ("dropout_rate",)}


def with_dropout(name: str, p: float = 0.1) -> dict:
    return dict.fromkeys(DROPOUT_KEYS[FAMILIES[name][0]], p)


def load_pair(name: str, tmp_path, seed: int = 0, **overrides):
    """(ours, transformers', saved path) for FAMILIES[name] (config entries replaced by `overrides`), on the same
    random weights."""
    model_type, task, config = FAMILIES[name]
    path, hf = build_reference(model_type, task, tmp_path, seed=seed, **{**config, **overrides})
    restored = False
    with torch.no_grad():
        for module in hf.modules():
            if hasattr(module, "create_weight"):  # Marian's sinusoidal table, which is not saved
                module.weight.copy_(module.create_weight())
                restored = True
    if restored:
        hf.save_pretrained(path)
    return getattr(fastformers, task).from_pretrained(path), hf, path


def batch_for(name: str, seed: int = 0) -> dict:
    """A right-padded batch of 3 with labels (-100 on padding), for the head of FAMILIES[name]."""
    model_type, task, config = FAMILIES[name]
    vocab = config["vocab_size"]
    pad = config.get("pad_token_id", 0)
    g = torch.Generator().manual_seed(seed)
    lengths = (9, 6, 3)
    ids = torch.full((3, 9), pad, dtype=torch.long)
    mask = torch.zeros((3, 9), dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, vocab - 2, (n,), generator=g)
        mask[i, :n] = 1
        if "eos_token_id" in config and task == "AutoModelForSequenceClassification":
            ids[i, n - 1] = config["eos_token_id"]  # BART classifies at the last <eos>
    inputs = dict(input_ids=ids, attention_mask=mask)
    if task == "AutoModelForSequenceClassification":
        inputs["labels"] = torch.randint(0, config["num_labels"], (3,), generator=g)
    elif task == "AutoModelForTokenClassification":
        inputs["labels"] = torch.where(mask.bool(), torch.randint(0, config["num_labels"], ids.shape, generator=g),
                                       -100)
    elif task == "AutoModelForQuestionAnswering":
        inputs["start_positions"] = torch.tensor([1, 2, 0])
        inputs["end_positions"] = torch.tensor([4, 2, 12])  # past the sequence: ignored, as transformers does

    elif task == "AutoModelForSeq2SeqLM":
        labels = torch.randint(3, vocab - 2, (3, 5), generator=g)
        labels[2, 3:] = -100
        inputs["labels"] = labels
    else:  # MLM / causal LM: a label at every real position
        inputs["labels"] = torch.where(mask.bool(), torch.randint(3, vocab - 2, ids.shape, generator=g), -100)
    return inputs
