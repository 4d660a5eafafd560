"""Tiny random BERT models saved with the real all-MiniLM-L6-v2 tokenizer (WordPiece, 30522 tokens), and
a comparison of pipeline outputs with transformers'. (A helper module, not a conftest: a second conftest
module would shadow tests/conftest.py for the `from conftest import ...` of other tests.)"""

from __future__ import annotations

import functools

import numpy as np
import torch

from conftest import build_reference

from fastformers.pipelines.defaults import default_embedding_model

NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "MISC"}
TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=128)


@functools.lru_cache(maxsize=None)
def hf_tokenizer():
    import transformers

    return transformers.AutoTokenizer.from_pretrained(default_embedding_model())


def saved_model(tmp_path_factory, task: str, seed: int = 0, **config):
    """Save a tiny random BERT for `task` with the MiniLM tokenizer in one folder; return its path."""
    path, _ = build_reference("bert", task, tmp_path_factory.mktemp(task), seed=seed, **{**TINY, **config})
    tokenizer = hf_tokenizer()
    tokenizer.model_max_length = 128  # the tiny model's position embeddings
    tokenizer.save_pretrained(path)
    return str(path)


def assert_same(ours, theirs, tol: float = 1e-4, where: str = "output"):
    """Same structure, keys, strings and ints; floats (python or numpy) within `tol`, of the same type."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs), f"{where}: keys {list(ours)} vs {list(theirs)}"
        for key in theirs:
            assert_same(ours[key], theirs[key], tol, f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), f"{where}: {ours!r} vs {theirs!r}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, tol, f"{where}[{i}]")
    elif isinstance(theirs, torch.Tensor):
        assert isinstance(ours, torch.Tensor) and ours.shape == theirs.shape, f"{where}: shapes differ"
        assert (ours - theirs).abs().max() <= tol, f"{where}: tensors differ"
    elif isinstance(theirs, (float, np.floating)):
        assert type(ours) is type(theirs), f"{where}: type {type(ours).__name__} vs {type(theirs).__name__}"
        assert abs(float(ours) - float(theirs)) <= tol, f"{where}: {ours} vs {theirs}"
    else:
        assert type(ours) is type(theirs) and ours == theirs, f"{where}: {ours!r} vs {theirs!r}"


BPE_CORPUS = ["My name is Wolfgang and I live in Berlin.", "Hugging Face Inc. is a company based in New York City.",
              "Sarah works at the bakery in Paris, near the river."] * 20


def byte_level_bpe(model_max_length: int, **special_tokens):
    """A RoBERTa-style byte-level BPE tokenizer (300 tokens, <s>=0 <pad>=1 </s>=2) trained on BPE_CORPUS, as a
    transformers tokenizer; `special_tokens` adds e.g. cls_token / sep_token."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(BPE_CORPUS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                                pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                                model_max_length=model_max_length, **special_tokens)
