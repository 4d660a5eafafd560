"""`AutoTokenizer.from_pretrained`: which files a checkpoint has, which tokenizer class it declares, and the
tokenizer transformers 5 builds from them.

It reads the same files as transformers (tokenizer.json, tokenizer_config.json, special_tokens_map.json,
chat_template.jinja, vocab.txt, vocab.json + merges.txt, spiece.model, source.spm, config.json, a GGUF file) and
builds the same backend `tokenizers.Tokenizer` transformers 5 builds for them, so ids, tokens, offsets and decoded
text are identical. Two transformers 5 behaviours worth knowing, both reproduced here:

* For the BERT, RoBERTa and GPT-2 tokenizer classes transformers does *not* use the pipeline stored in
  tokenizer.json as is: it keeps the vocabulary (and merges), then rebuilds normalizer, pre-tokenizer and decoder
  from tokenizer_config.json (`do_lower_case`, `strip_accents`, `add_prefix_space`, ...) and, for BERT and
  RoBERTa, the post-processor from the special tokens. Any other class (or no class) uses tokenizer.json as is.
* `model_input_names` (whether `token_type_ids` is returned) depends on the tokenizer class, not on the file.

The loader builds every tokenizer class (the generic one, T5 and Marian from SentencePiece files, GGUF's), so it
sits above them all; `PreTrainedTokenizerFast.from_pretrained` reaches it through the hand-over at the end.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from tokenizers import AddedToken, processors
from tokenizers.models import BPE

from fastformers.loading.gguf import read_gguf
from fastformers.loading.hub import refuse_remote_code, resolve_file

from . import sentencepiece
from .chat_template import CHAT_TEMPLATE_DIR, CHAT_TEMPLATE_FILE
from .gguf import tokenizer_from_gguf
from .readers import (
    build_bert,
    build_byte_level_bpe,
    build_xlm_roberta,
    merges_from_json,
    precompiled_charsmap,
    read_json,
    read_vocab_txt,
    tokenizer_from_file,
    tokenizer_json_parts,
    wordpiece_vocab,
)
from .special_tokens import SPECIAL_TOKENS_ATTRIBUTES, as_added_token, convert_typed_dicts
from .tokenizer import (
    DEFAULT_MODEL_INPUT_NAMES,
    SPECIAL_TOKENS_MAP_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
    PreTrainedTokenizerFast,
)

# ---------------------------------------------------------------------------------------------------------------
# What transformers does for each tokenizer class
# ---------------------------------------------------------------------------------------------------------------

# Classes transformers implements as (aliases of) BertTokenizer / RobertaTokenizer / GPT2Tokenizer: name -> the
# class transformers really instantiates (the name it writes back on save_pretrained).
_CANONICAL_CLASS = {
    "BertTokenizer": "BertTokenizer",
    "ElectraTokenizer": "BertTokenizer",
    "LayoutLMTokenizer": "BertTokenizer",
    "SqueezeBertTokenizer": "BertTokenizer",
    "MobileBertTokenizer": "BertTokenizer",
    "LxmertTokenizer": "BertTokenizer",
    "DistilBertTokenizer": "DistilBertTokenizer",
    "RobertaTokenizer": "RobertaTokenizer",
    "BartTokenizer": "RobertaTokenizer",
    "LongformerTokenizer": "RobertaTokenizer",
    "LEDTokenizer": "RobertaTokenizer",
    "MvpTokenizer": "RobertaTokenizer",
    "GPT2Tokenizer": "GPT2Tokenizer",
}
_FAMILY = {"BertTokenizer": "bert", "DistilBertTokenizer": "bert", "RobertaTokenizer": "roberta",
           "GPT2Tokenizer": "gpt2", "XLMRobertaTokenizer": "xlmr"}

# Classes whose inputs include token_type_ids (transformers' `model_input_names`); every other class, and a plain
# PreTrainedTokenizerFast, returns input_ids and attention_mask only.
_WITH_TYPE_IDS = ["input_ids", "token_type_ids", "attention_mask"]
_MODEL_INPUT_NAMES = {
    "BertTokenizer": _WITH_TYPE_IDS,
    "ConvBertTokenizer": _WITH_TYPE_IDS,
    "DPRQuestionEncoderTokenizer": _WITH_TYPE_IDS,
    "DPRContextEncoderTokenizer": _WITH_TYPE_IDS,
    "MarkupLMTokenizer": _WITH_TYPE_IDS,
    "CanineTokenizer": ["input_ids", "attention_mask", "token_type_ids"],
    "DebertaTokenizer": ["input_ids", "attention_mask", "token_type_ids"],
    "DebertaV2Tokenizer": ["input_ids", "attention_mask", "token_type_ids"],
    "LayoutLMv2Tokenizer": ["input_ids", "attention_mask", "token_type_ids"],
    "TapasTokenizer": ["input_ids", "attention_mask", "token_type_ids"],
    "FNetTokenizer": ["input_ids", "token_type_ids"],
}

# config.json model_type -> tokenizer class, used when tokenizer_config.json names no class (transformers'
# TOKENIZER_MAPPING; note distilbert maps to BertTokenizer there, so it returns token_type_ids).
_MODEL_TYPE_TO_CLASS = {
    "bert": "BertTokenizer",
    "distilbert": "BertTokenizer",
    "electra": "BertTokenizer",
    "roberta": "RobertaTokenizer",
    "bart": "RobertaTokenizer",
    "longformer": "RobertaTokenizer",
    "xlm-roberta": "XLMRobertaTokenizer",
    "camembert": "CamembertTokenizer",
    "gpt2": "GPT2Tokenizer",
    "mpnet": "MPNetTokenizer",
    "deberta": "DebertaTokenizer",
    "deberta-v2": "DebertaV2Tokenizer",
    "t5": "T5Tokenizer",
    "mt5": "T5Tokenizer",
    "marian": "MarianTokenizer",
}
# Classes without a vocab.json + merges.txt layout of their own that we still read as RoBERTa-style BPE from it.
_ROBERTA_LIKE_SLOW = {"XLMRobertaTokenizer", "CamembertTokenizer"}

_FAMILY_DEFAULTS = {
    "bert": {
        "do_lower_case": True, "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
        "cls_token": "[CLS]", "mask_token": "[MASK]", "tokenize_chinese_chars": True, "strip_accents": None,
    },
    "roberta": {
        "errors": "replace", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>", "add_prefix_space": False,
        "trim_offsets": True,
    },
    "gpt2": {
        "errors": "replace", "unk_token": "<|endoftext|>", "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>", "pad_token": None, "add_prefix_space": False,
    },
    "xlmr": {
        "add_prefix_space": True, "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
    },
}

def _resolve_class(cfg: dict, model_cfg: Optional[dict]) -> Optional[str]:
    name = cfg.get("tokenizer_class") or (model_cfg or {}).get("tokenizer_class")
    if not name and model_cfg:
        name = _MODEL_TYPE_TO_CLASS.get(model_cfg.get("model_type"))
    if name and name != "PreTrainedTokenizerFast" and name.endswith("Fast"):
        name = name[:-4]
    return name or None


def _load(name_or_path, *, revision=None, cache_dir=None, local_files_only=False, token=None, overrides=None,
          use_declared_class=True) -> PreTrainedTokenizerFast:
    overrides = dict(overrides or {})
    for ignored in ("use_fast", "_from_auto", "force_download", "proxies", "resume_download", "config",
                    "_commit_hash", "trust_remote_code"):
        overrides.pop(ignored, None)
    gguf_file = overrides.pop("gguf_file", None)
    subfolder = overrides.pop("subfolder", None) or ""
    name = os.fspath(name_or_path)
    hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    if gguf_file is not None:
        return _load_gguf(name, os.fspath(gguf_file), subfolder, hub, overrides)

    def find(filename: str) -> Optional[str]:
        return resolve_file(name, f"{subfolder}/{filename}" if subfolder else filename, required=False, **hub)

    single_file = os.path.isfile(name)
    if single_file:  # a tokenizer.json (or vocab.txt) given directly
        cfg, special_map, model_cfg = {}, None, None
        tokenizer_json = name if name.endswith(".json") else None
        vocab_txt = name if name.endswith(".txt") else None
        vocab_json = merges_txt = None
        looked_for = [name]
    else:
        cfg = read_json(find(TOKENIZER_CONFIG_FILE), "tokenizer config") or {}
        if not isinstance(cfg, dict):
            raise ValueError(f"{TOKENIZER_CONFIG_FILE} of {name!r} is not a JSON object")
        special_map = read_json(find(SPECIAL_TOKENS_MAP_FILE), "special tokens map")
        tokenizer_json = find(TOKENIZER_FILE)
        model_cfg = None
        if use_declared_class and not cfg.get("tokenizer_class"):
            model_cfg = read_json(find("config.json"), "model config")
        vocab_txt = vocab_json = merges_txt = None
        looked_for = [TOKENIZER_FILE, "vocab.txt", "vocab.json + merges.txt", "spiece.model", "source.spm"]

    class_name = _resolve_class(cfg, model_cfg) if use_declared_class else None
    canonical = _CANONICAL_CLASS.get(class_name, class_name) if class_name else None
    family = _FAMILY.get(canonical)

    spm_kind = None  # "t5" / "marian": a SentencePiece checkpoint without tokenizer.json (sentencepiece.py)
    if tokenizer_json is None and not single_file:
        # the slow-tokenizer files, those of the declared class first
        if canonical in ("T5Tokenizer", "MarianTokenizer"):
            spm_kind = "t5" if canonical == "T5Tokenizer" else "marian"
        elif family in ("roberta", "gpt2") or class_name in _ROBERTA_LIKE_SLOW:
            vocab_json = find("vocab.json")
            merges_txt = find("merges.txt") if vocab_json is not None else None
            if merges_txt is None:
                vocab_txt = find("vocab.txt")
        else:
            vocab_txt = find("vocab.txt")
            if vocab_txt is None:
                vocab_json = find("vocab.json")
                merges_txt = find("merges.txt") if vocab_json is not None else None
        if canonical is None and vocab_txt is None and merges_txt is None:
            if find("spiece.model") is not None:
                spm_kind, canonical = "t5", "T5Tokenizer"
            elif find("source.spm") is not None:
                spm_kind, canonical = "marian", "MarianTokenizer"

    if tokenizer_json is None and spm_kind is None:
        if family == "xlmr":
            family = None
        if vocab_json is not None and merges_txt is not None:
            if family not in ("roberta", "gpt2"):
                family = "roberta" if class_name in _ROBERTA_LIKE_SLOW else "gpt2"
                if canonical not in _ROBERTA_LIKE_SLOW:
                    canonical = "RobertaTokenizer" if family == "roberta" else "GPT2Tokenizer"
        elif vocab_txt is not None:
            family = "bert"
            if _FAMILY.get(canonical) != "bert":
                canonical = "BertTokenizer"
        else:
            raise OSError(
                f"cannot load a tokenizer from {name!r}: it has none of the tokenizer files fastformers reads "
                f"(looked for {', '.join(looked_for)})"
            )

    # -- init kwargs, as transformers assembles them ---------------------------------------------------------------
    init = dict(cfg)
    init.pop("tokenizer_class", None)
    init.pop("init_inputs", None)
    init.pop("auto_map", None)
    if tokenizer_json is not None:
        init.pop("add_bos_token", None)
        init.pop("add_eos_token", None)
    if not single_file:
        templates = {}
        default_template = find(CHAT_TEMPLATE_FILE)
        if default_template is not None:
            with open(default_template, encoding="utf-8") as f:
                templates["default"] = f.read()
        extra_dir = os.path.join(name, subfolder, CHAT_TEMPLATE_DIR)
        if os.path.isdir(extra_dir):
            for entry in sorted(os.listdir(extra_dir)):
                if entry.endswith(".jinja"):
                    with open(os.path.join(extra_dir, entry), encoding="utf-8") as f:
                        templates[entry[: -len(".jinja")]] = f.read()
        if len(templates) == 1 and "default" in templates:
            init["chat_template"] = templates["default"]
        elif templates:
            init["chat_template"] = templates
    init.update(overrides)
    if "additional_special_tokens" in init and not init.get("extra_special_tokens"):
        init["extra_special_tokens"] = init.pop("additional_special_tokens")

    tokenizer_data = post_processor = truncation = padding = None
    if tokenizer_json is not None and family is not None:
        tokenizer_data, post_processor, truncation, padding = tokenizer_json_parts(tokenizer_json)
        if family == "xlmr" and tokenizer_data["model"].get("type") != "Unigram":
            family = None  # not the SentencePiece layout XLMRobertaTokenizer rebuilds: use the file as is

    added_tokens_decoder: dict[int, AddedToken] = {}
    added_by_content: dict[str, AddedToken] = {}
    if "added_tokens_decoder" in init:
        for index, tok in (init["added_tokens_decoder"] or {}).items():
            tok = as_added_token(tok)
            if not isinstance(tok, AddedToken):
                raise TypeError(f"Found a {type(tok)} in the saved `added_tokens_decoder`, should be a dictionary "
                                "or an AddedToken instance")
            added_tokens_decoder[int(index)] = tok
            added_by_content[str(tok)] = tok
    else:
        if isinstance(special_map, dict):
            for key, value in special_map.items():
                if key in overrides and overrides[key]:
                    continue
                if isinstance(value, dict) and key not in ("extra_special_tokens", "additional_special_tokens"):
                    value = as_added_token({k: v for k, v in value.items() if k != "special"}, special=True)
                elif key in ("extra_special_tokens", "additional_special_tokens") and isinstance(value, list):
                    existing = list(init.get("extra_special_tokens") or [])
                    seen = {str(t) for t in existing}
                    for tok in value:
                        tok = as_added_token(tok, special=True) if isinstance(tok, dict) else tok
                        if str(tok) not in seen:
                            existing.append(tok)
                            seen.add(str(tok))
                    key, value = "extra_special_tokens", existing
                init[key] = value
        if tokenizer_data is not None:
            for entry in tokenizer_data.get("added_tokens", []):
                entry = dict(entry)
                index = entry.pop("id")
                tok = AddedToken(**entry)
                added_tokens_decoder[index] = tok
                added_by_content[str(tok)] = tok
    init["added_tokens_decoder"] = added_tokens_decoder
    init = convert_typed_dicts(init)
    added_tokens_decoder = init["added_tokens_decoder"]
    for key in SPECIAL_TOKENS_ATTRIBUTES:
        if key in init and init[key] is not None:
            init[key] = as_added_token(init[key])
            if added_by_content:
                init[key] = added_by_content.get(str(init[key]), init[key])
    init["name_or_path"] = name
    if spm_kind is not None:
        if spm_kind == "t5":
            spiece = find("spiece.model")
            if spiece is None:
                raise OSError(f"cannot load the T5Tokenizer of {name!r}: it has neither tokenizer.json nor "
                              "spiece.model")
            return sentencepiece.load_t5(spiece, init)
        files = {"source_spm": find("source.spm"), "target_spm": find("target.spm"), "vocab": find("vocab.json"),
                 "target_vocab": find("target_vocab.json")}
        return sentencepiece.load_marian(files, init)

    # -- backend ------------------------------------------------------------------------------------------------
    if family is not None:
        for key, value in _FAMILY_DEFAULTS[family].items():
            init.setdefault(key, value)
    if family == "bert":
        if tokenizer_data is not None:
            vocab = wordpiece_vocab(tokenizer_data["model"].get("vocab"))
        else:
            vocab = read_vocab_txt(vocab_txt)
        backend = build_bert(vocab, init)
    elif family in ("roberta", "gpt2"):
        if tokenizer_data is not None:
            vocab = wordpiece_vocab(tokenizer_data["model"].get("vocab"))
            merges = merges_from_json(tokenizer_data["model"].get("merges"))
        else:
            try:
                vocab, merges = BPE.read_file(vocab_json, merges_txt)
            except Exception as e:
                raise ValueError(f"cannot read BPE vocabulary {vocab_json} / {merges_txt}: {e}") from None
        backend = build_byte_level_bpe(vocab, merges, init)
        if family == "gpt2" and post_processor is not None:
            backend.post_processor = post_processor
    elif family == "xlmr":
        backend = build_xlm_roberta(tokenizer_data["model"]["vocab"],
                                     precompiled_charsmap(tokenizer_data.get("normalizer")), init)
    else:
        backend = tokenizer_from_file(tokenizer_json)
    if truncation is not None:
        backend.enable_truncation(**truncation)
    if padding is not None:
        backend.enable_padding(**padding)

    input_names = _MODEL_INPUT_NAMES.get(canonical, DEFAULT_MODEL_INPUT_NAMES)
    tokenizer = PreTrainedTokenizerFast(_backend=backend, _tokenizer_class=canonical,
                                        _default_model_input_names=input_names, **init)
    for key in ("do_lower_case", "tokenize_chinese_chars", "strip_accents", "trim_offsets", "errors"):
        if family is not None and key in init:
            object.__setattr__(tokenizer, key, init[key])

    # -- class-specific post-processors (set after the special tokens exist, as transformers does) ---------------
    if family == "bert":
        cls_tok, sep_tok = str(tokenizer.cls_token), str(tokenizer.sep_token)
        cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else 2
        sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else 3
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls_tok}:0 $A:0 {sep_tok}:0",
            pair=f"{cls_tok}:0 $A:0 {sep_tok}:0 $B:1 {sep_tok}:1",
            special_tokens=[(cls_tok, cls_id), (sep_tok, sep_id)],
        )
    elif family == "roberta":
        backend.post_processor = processors.RobertaProcessing(
            (str(tokenizer.sep_token), tokenizer.sep_token_id), (str(tokenizer.cls_token), tokenizer.cls_token_id),
            trim_offsets=bool(init.get("trim_offsets", True)),
            add_prefix_space=bool(init.get("add_prefix_space", False)),
        )
    elif family == "xlmr":
        bos, eos = str(init["bos_token"]), str(init["eos_token"])
        backend.post_processor = processors.TemplateProcessing(
            single=[bos, "$A", eos], pair=[bos, "$A", eos, eos, "$B", eos],
            special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos)), (eos, tokenizer.convert_tokens_to_ids(eos))],
        )
    return tokenizer


def _load_gguf(name: str, gguf_file: str, subfolder: str, hub: dict, overrides: dict) -> PreTrainedTokenizerFast:
    """The tokenizer of a GGUF file of a folder or hub repository (or a GGUF path given directly), built from the
    file's metadata as transformers builds it (see gguf.py)."""

    def in_checkpoint(filename: str, required: bool) -> Optional[str]:
        return resolve_file(name, f"{subfolder}/{filename}" if subfolder else filename, required=required, **hub)

    direct = os.path.isfile(gguf_file) and not os.path.isdir(name)
    path = gguf_file if direct else in_checkpoint(gguf_file, True)
    tokenizer_json = None if direct else in_checkpoint(TOKENIZER_FILE, False)
    if tokenizer_json is not None:
        # transformers: a tokenizer.json beside the GGUF wins; the GGUF's tokenizer metadata (special tokens, chat
        # template) and the folder's tokenizer_config.json are then both ignored
        return PreTrainedTokenizerFast(tokenizer_file=tokenizer_json, name_or_path=name, **overrides)
    with read_gguf(path) as checkpoint:
        return tokenizer_from_gguf(checkpoint, name, **overrides)


class AutoTokenizer:
    """`AutoTokenizer.from_pretrained(name_or_path)`: the tokenizer of a local folder or hub repository."""

    def __init__(self):
        raise EnvironmentError("AutoTokenizer is designed to be instantiated using "
                               "`AutoTokenizer.from_pretrained(name_or_path)`.")

    @classmethod
    def from_pretrained(cls, name_or_path, *, revision: Optional[str] = None, cache_dir=None,
                        local_files_only: bool = False, token=None, trust_remote_code: bool = False,
                        use_fast: bool = True, **overrides: Any) -> PreTrainedTokenizerFast:
        """Load the tokenizer of `name_or_path` as transformers' AutoTokenizer would.

        Reads tokenizer_config.json and special_tokens_map.json when present, then tokenizer.json, or else
        vocab.txt (BERT WordPiece), vocab.json + merges.txt (byte-level BPE, GPT-2 or RoBERTa style), or a
        SentencePiece checkpoint (spiece.model: T5; source.spm + target.spm + vocab.json: Marian; see
        fastformers.tokenization.sentencepiece). Keyword
        overrides (``model_max_length=``, ``padding_side=``, special tokens, ``do_lower_case=``...) replace the
        values of tokenizer_config.json. ``use_fast`` is accepted and ignored: the tokenizer is always the
        `tokenizers`-backed one, as in transformers 5. ``gguf_file="model.gguf"`` reads the tokenizer stored in
        that GGUF file of the folder / repository instead (unless a tokenizer.json sits beside it, which
        transformers then uses).
        """
        refuse_remote_code(trust_remote_code)
        return _load(name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                     token=token, overrides=overrides, use_declared_class=True)


# PreTrainedTokenizerFast.from_pretrained reads checkpoints with this loader; tokenizer.py cannot import it (this
# module builds that class and its subclasses), so it is handed over here, once, when the package is imported.
PreTrainedTokenizerFast._load_checkpoint = staticmethod(_load)
