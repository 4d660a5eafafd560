"""Tokenizer-file readers: the `tokenizers.Tokenizer` backend of a tokenizer.json (as is, or only its vocabulary
for the classes transformers rebuilds), a vocab.txt (BERT WordPiece), a vocab.json + merges.txt (byte-level BPE,
GPT-2 / RoBERTa style) and an XLM-RoBERTa Unigram vocabulary, each with the pipeline transformers 5 gives it.

The other readers sit beside this one: sentencepiece.py (spiece.model / source.spm) and gguf.py (a GGUF file's
`tokenizer.ggml.*` vocabulary)."""

from __future__ import annotations

import json
import os
from typing import Optional

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE, Unigram, WordPiece

from fastformers.loading.hub import no_duplicate_keys


def read_json(path: Optional[str], what: str):
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=no_duplicate_keys)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:  # ValueError: a key twice
        raise ValueError(f"cannot parse {what} {path}: {e}") from None



def tokenizer_from_file(path: str) -> Tokenizer:
    if not os.path.isfile(path):
        raise OSError(f"no tokenizer file at {path}")
    try:
        return Tokenizer.from_file(path)
    except Exception as e:  # the Rust error says what is wrong; the message says which file
        raise ValueError(f"cannot parse tokenizer file {path}: {e}") from None


def tokenizer_json_parts(path: str):
    """tokenizer.json -> (parsed json, post_processor, truncation, padding), cheaply (no full vocab build)."""
    data = read_json(path, "tokenizer file")
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"cannot parse tokenizer file {path}: no 'model' section")
    model = dict(data["model"])
    try:
        if model.get("type") in ("BPE", "WordPiece", "WordLevel"):
            model["vocab"] = {}
            if model.get("type") == "BPE":
                model["merges"] = []
            tiny = Tokenizer.from_str(json.dumps({**data, "model": model, "added_tokens": []}))
        else:
            tiny = Tokenizer.from_file(path)
    except Exception as e:
        raise ValueError(f"cannot parse tokenizer file {path}: {e}") from None
    return data, tiny.post_processor, tiny.truncation, tiny.padding


def wordpiece_vocab(vocab) -> dict[str, int]:
    if isinstance(vocab, dict):
        return vocab
    return {(t[0] if isinstance(t, (list, tuple)) else t): i for i, t in enumerate(vocab or [])}


def read_vocab_txt(path: str) -> dict[str, int]:
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(f.readlines()):
            vocab[line.rstrip("\n")] = index
    return vocab


def build_bert(vocab: dict, init: dict) -> Tokenizer:
    backend = Tokenizer(WordPiece(vocab, unk_token=str(init.get("unk_token")), continuing_subword_prefix="##",
                                  max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=init.get("tokenize_chinese_chars", True),
        strip_accents=init.get("strip_accents"), lowercase=init.get("do_lower_case", True))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


def build_byte_level_bpe(vocab: dict, merges: list, init: dict) -> Tokenizer:
    backend = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                            end_of_word_suffix="", fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(init.get("add_prefix_space", False)))
    backend.decoder = decoders.ByteLevel()
    return backend


def build_xlm_roberta(vocab, charsmap: Optional[bytes], init: dict) -> Tokenizer:
    """transformers' XLMRobertaTokenizer pipeline: Unigram (unk id 3), the SentencePiece charsmap normalizer,
    whitespace split + metaspace."""
    backend = Tokenizer(Unigram([tuple(v) for v in vocab], unk_id=3, byte_fallback=False))
    if charsmap is not None:
        backend.normalizer = normalizers.Precompiled(charsmap)
    scheme = "always" if init.get("add_prefix_space", True) else "never"
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme)])
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme)
    return backend


def precompiled_charsmap(normalizer) -> Optional[bytes]:
    """The SentencePiece charsmap of a tokenizer.json normalizer (alone or inside a Sequence), if any."""
    if not normalizer:
        return None
    items = normalizer.get("normalizers", []) if normalizer.get("type") == "Sequence" else [normalizer]
    for item in items:
        if item.get("type") == "Precompiled" and item.get("precompiled_charsmap"):
            import base64

            return base64.b64decode(item["precompiled_charsmap"])
    return None


def merges_from_json(merges) -> list[tuple[str, str]]:
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges or []]
