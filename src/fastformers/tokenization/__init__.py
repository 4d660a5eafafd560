"""Tokenizers with transformers' API and outputs, on top of the `tokenizers` library.

    tokenizer = AutoTokenizer.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    batch = tokenizer(["a text", "another"], padding=True, return_tensors="pt")

The modules, each one thing (arrows point from a module to those it uses):

    auto.py            AutoTokenizer.from_pretrained: which files, which class, the tokenizer transformers builds
      -> readers.py        tokenizer.json, vocab.txt (WordPiece), vocab.json + merges.txt (byte-level BPE), XLM-R
      -> sentencepiece.py  spiece.model / source.spm (T5, Marian), with a protobuf reader of our own
      -> gguf.py           a GGUF file's tokenizer.ggml.* vocabulary (the file read by fastformers.loading.gguf)
      -> tokenizer.py      PreTrainedTokenizerFast: the call signature, padding, truncation, decoding, saving
           -> special_tokens.py  bos_token / bos_token_id ... attributes, add_special_tokens, post-processor
           -> chat_template.py   apply_chat_template in jinja2's immutable sandbox
           -> batch_encoding.py  BatchEncoding, what a call returns
"""

from .auto import AutoTokenizer
from .batch_encoding import BatchEncoding, CharSpan, TokenSpan
from .tokenizer import VERY_LARGE_INTEGER, PreTrainedTokenizerFast

__all__ = [
    "AutoTokenizer",
    "BatchEncoding",
    "CharSpan",
    "PreTrainedTokenizerFast",
    "TokenSpan",
    "VERY_LARGE_INTEGER",
]
