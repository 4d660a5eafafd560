"""The tokenizer of a GGUF file, rebuilt from its `tokenizer.ggml.*` metadata as transformers' AutoTokenizer
builds it (``from_pretrained(dir, gguf_file=...)``): byte-level BPE ("gpt2") or SentencePiece-style BPE with byte
fallback ("llama"), control tokens added as special tokens, user-defined ones as plain added tokens. The file
itself is read by fastformers.loading.gguf.

    with read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf") as checkpoint:
        tokenizer = tokenizer_from_gguf(checkpoint)   # ids identical to transformers'
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

from fastformers.loading.gguf import GGUFCheckpoint, GGUFError

from .tokenizer import PreTrainedTokenizerFast

_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4

# tokenizer.ggml.pre -> the split regex of the vocabulary's original pre-tokenizer (the patterns transformers
# uses; pre-tokenizers not listed keep GPT-2's byte-level split)
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN35_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
                 r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                 r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT4O_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_PRE_SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                     "jina-v5-nano", "dbrx", "smaug-bpe"), _LLAMA3_SPLIT),
    "tekken": _TEKKEN_SPLIT,
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"), _QWEN2_SPLIT),
    "qwen35": _QWEN35_SPLIT,
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), _GPT4O_SPLIT),
}

# architectures whose "llama" (SentencePiece) vocabulary transformers reads with model-specific rules
_SPM_SPECIAL_CASES = ("gemma", "gemma2", "gemma3", "phi3")


def _byte_alphabet() -> Dict[int, str]:
    """GPT-2's reversible byte -> printable character table (bytes_to_unicode)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def _spm_merges(tokens: List[str], scores: List[float]) -> List[Tuple[str, str]]:
    """BPE merges implied by a scored SentencePiece vocabulary: every split of a token into two vocabulary
    pieces, best score first (then longer left, longer right piece; ties in vocabulary order)."""
    vocab = {token: index for index, token in enumerate(tokens)}
    scored = dict(zip(tokens, scores))
    found = []
    for token, score in scored.items():
        local = [(token[:i], token[i:]) for i in range(1, len(token))
                 if token[:i] in vocab and token[i:] in vocab]
        local.sort(key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
        found.extend((left, right, score) for left, right in local)
    found.sort(key=lambda m: (-m[2], -len(m[0]), -len(m[1])))
    return [(left, right) for left, right, _ in found]


def _file_merges(metadata: dict, path: str, tokens: List[str], what: str) -> List[Tuple[str, str]]:
    """The file's merges, or (without them) merges rebuilt from the SentencePiece scores; `what` names the
    vocabulary in the error when it has neither."""
    merges = metadata.get("tokenizer.ggml.merges")
    if merges is None:
        scores = metadata.get("tokenizer.ggml.scores")
        if scores is None:
            raise GGUFError(f"{path}: {what} without merges or scores")
        return _spm_merges(tokens, scores)
    pairs = [tuple(m.split(" ")) for m in merges]
    for i, pair in enumerate(pairs):
        if len(pair) != 2 or not all(pair):
            raise GGUFError(f"{path}: tokenizer.ggml.merges[{i}] is {merges[i]!r}, not two tokens separated by "
                            "one space")
    return pairs


def _bpe(path: str, **options) -> Tokenizer:
    """The BPE backend; the `tokenizers` error on a vocabulary / merges that disagree names the file."""
    try:
        return Tokenizer(BPE(**options))
    except Exception as e:  # tokenizers raises a bare Exception
        raise GGUFError(f"{path}: cannot build a BPE tokenizer from tokenizer.ggml.tokens / merges: {e}") from None


def tokenizer_from_gguf(ckpt: GGUFCheckpoint, name_or_path: Optional[str] = None,
                        **overrides) -> PreTrainedTokenizerFast:
    """The tokenizer described by tokenizer.ggml.*, as transformers' AutoTokenizer.from_pretrained(dir,
    gguf_file=...) builds it. Keyword overrides (padding_side=, model_max_length=, ...) are applied like
    tokenizer_config.json values, except that, as in transformers, what the file states (special tokens,
    add_bos_token, add_eos_token, chat_template) wins."""
    md = ckpt.metadata
    model = md.get("tokenizer.ggml.model")
    tokens = md.get("tokenizer.ggml.tokens")
    if model is None or tokens is None:
        raise GGUFError(f"{ckpt.path} holds no tokenizer (no tokenizer.ggml.model / tokenizer.ggml.tokens)")
    types = md.get("tokenizer.ggml.token_type") or []
    arch = ckpt.architecture

    if model == "gpt2":
        table = _byte_alphabet()
        alphabet = set(table.values())
        vocab = {}
        for index, token in enumerate(tokens):
            if not set(token) <= alphabet:
                token = "".join(table[b] for b in token.encode("utf-8"))
            vocab[token] = index
        merges = _file_merges(md, ckpt.path, tokens, "byte-level BPE vocabulary")
        backend = _bpe(ckpt.path, vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                       end_of_word_suffix="", fuse_unk=False)
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        class_defaults = ["<|endoftext|>"]  # GPT2Tokenizer's default unk / bos / eos
        specials_ok = alphabet
    elif model == "llama":
        if arch in _SPM_SPECIAL_CASES:
            raise GGUFError(f"{ckpt.path}: the SentencePiece tokenizer of {arch!r} GGUF files is not supported "
                            f"(supported: tokenizer.ggml.model 'gpt2', and 'llama' for other architectures)")
        vocab = {token: index for index, token in enumerate(tokens)}
        merges = _file_merges(md, ckpt.path, tokens, "SentencePiece vocabulary")
        backend = _bpe(ckpt.path, vocab=vocab, merges=merges, fuse_unk=True, byte_fallback=True, dropout=None)
        backend.normalizer = None
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
        backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                             decoders.Fuse(), decoders.Strip(content=" ", left=1)])
        class_defaults = ["<unk>", "<s>", "</s>"]  # LlamaTokenizer's unk / bos / eos
        specials_ok = None
    else:
        raise GGUFError(f"{ckpt.path}: cannot build a tokenizer for tokenizer.ggml.model {model!r}; supported: "
                        f"'gpt2' (byte-level BPE) and 'llama' (SentencePiece BPE)")

    # As transformers builds it: the tokenizer class's default special tokens are registered first (appended to
    # the vocabulary when it lacks them), then the file's control tokens (special) and user-defined ones (not).
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in class_defaults])
    control = [AddedToken(token, normalized=False, special=True)
               for token, kind in zip(tokens, types)
               if kind == _TOKEN_CONTROL and (specials_ok is None or set(token) <= specials_ok)]
    if control:
        backend.add_special_tokens(control)
    present = backend.get_vocab()
    user = [AddedToken(token, normalized=False, special=False)
            for token, kind in zip(tokens, types) if kind == _TOKEN_USER_DEFINED and token in present]
    if user:
        backend.add_tokens(user)

    split = _PRE_SPLITS.get(md.get("tokenizer.ggml.pre")) if model == "gpt2" else None
    if split is not None:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])

    def token_at(key: str) -> Optional[str]:
        index = md.get(f"tokenizer.ggml.{key}")
        if index is None:
            return None
        if not 0 <= index < len(tokens):
            raise GGUFError(f"{ckpt.path}: tokenizer.ggml.{key} = {index} is outside the vocabulary "
                            f"({len(tokens)} tokens)")
        return tokens[index]

    from_file: Dict[str, Any] = {"bos_token": token_at("bos_token_id"), "eos_token": token_at("eos_token_id"),
                                 "unk_token": token_at("unknown_token_id"), "pad_token": token_at("padding_token_id")}
    if "tokenizer.ggml.add_bos_token" in md:
        from_file["add_bos_token"] = bool(md["tokenizer.ggml.add_bos_token"])
    elif model == "llama":  # llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise
        from_file["add_bos_token"] = True
    if "tokenizer.ggml.add_eos_token" in md:
        from_file["add_eos_token"] = bool(md["tokenizer.ggml.add_eos_token"])
    if "tokenizer.chat_template" in md:
        from_file["chat_template"] = md["tokenizer.chat_template"]

    kwargs = dict(overrides)
    kwargs.update(from_file)
    kwargs["name_or_path"] = os.fspath(name_or_path) if name_or_path is not None else ckpt.path
    class_name = "Qwen2Tokenizer" if ckpt.model_type in ("qwen2", "qwen3") else "TokenizersBackend"
    return PreTrainedTokenizerFast(_backend=backend, _tokenizer_class=class_name, **kwargs)
