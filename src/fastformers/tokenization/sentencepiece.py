"""SentencePiece checkpoints without a tokenizer.json: T5 (spiece.model) and Marian (source.spm / target.spm).

`read_model` parses a SentencePiece ``ModelProto`` (the .model / .spm file) with a minimal protobuf wire-format
reader, so neither `sentencepiece` nor `protobuf` is needed. The builders turn it into the `tokenizers.Tokenizer`
transformers 5 uses for the checkpoint, so ids match transformers':

* T5Tokenizer (transformers builds it with `tokenizers`): a Unigram model over the pieces (whatever the .model's
  own algorithm) plus ``<extra_id_N>`` sentinels appended in reverse order, unk id 2 (hard-coded there, kept here),
  the precompiled charsmap, whitespace split + Metaspace, and ``$A </s>`` / ``$A </s> $B </s>``.
* MarianTokenizer (transformers runs the `sentencepiece` library, then maps pieces through vocab.json): we emulate
  SentencePiece's own encoding (charsmap, extra-whitespace removal, dummy prefix; Unigram Viterbi or BPE merges
  by score) with one backend per side, ids in vocab.json order, ``>>lang<<`` codes at the start of a text kept
  whole, ``</s>`` appended; decoding follows SentencePiece's ``DecodePieces`` in Python.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import struct

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE, Unigram

from .batch_encoding import to_py
from .tokenizer import PreTrainedTokenizerFast

SPIECE_UNDERLINE = "\u2581"

# SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# TrainerSpec.ModelType
UNIGRAM, BPE_MODEL, WORD, CHAR = 1, 2, 3, 4


@dataclasses.dataclass
class Piece:
    piece: str = ""
    score: float = 0.0
    type: int = NORMAL


@dataclasses.dataclass
class TrainerSpec:
    model_type: int = UNIGRAM
    vocab_size: int = 8000
    byte_fallback: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    unk_piece: str = "<unk>"
    bos_piece: str = "<s>"
    eos_piece: str = "</s>"
    pad_piece: str = "<pad>"
    unk_surface: str = " \u2047 "
    treat_whitespace_as_suffix: bool = False


@dataclasses.dataclass
class NormalizerSpec:
    name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


@dataclasses.dataclass
class ModelProto:
    pieces: list
    trainer_spec: TrainerSpec
    normalizer_spec: NormalizerSpec
    path: str = ""


# ---------------------------------------------------------------------------------------------------------------
# Protobuf wire format (only what ModelProto needs)
# ---------------------------------------------------------------------------------------------------------------

class _WireError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise _WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _WireError("varint too long")


def _fields(data: bytes):
    """Yield (field number, wire type, value) of a message: ints for varint / fixed, bytes for length-delimited."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _WireError("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            if pos + 8 > len(data):
                raise _WireError("truncated 64-bit field")
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise _WireError(f"length-delimited field {number} runs past the end")
            value, pos = data[pos:pos + size], pos + size
        elif wire == 5:
            if pos + 4 > len(data):
                raise _WireError("truncated 32-bit field")
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise _WireError(f"unsupported wire type {wire} (field {number})")
        yield number, wire, value


def _int32(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(value, what: str) -> str:
    if not isinstance(value, bytes):
        raise _WireError(f"{what} is not a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise _WireError(f"{what} is not valid UTF-8") from None


def _expect(wire: int, expected: int, what: str):
    if wire != expected:
        raise _WireError(f"{what} has wire type {wire}, expected {expected}")


def _parse_piece(data: bytes) -> Piece:
    piece = Piece()
    for number, wire, value in _fields(data):
        if number == 1:
            _expect(wire, 2, "piece")
            piece.piece = _text(value, "piece")
        elif number == 2:
            _expect(wire, 5, "score")
            piece.score = struct.unpack("<f", value)[0]
        elif number == 3:
            _expect(wire, 0, "type")
            piece.type = value
    if piece.type not in (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE):
        raise _WireError(f"piece {piece.piece!r} has unknown type {piece.type}")
    return piece


_TRAINER_INTS = {3: "model_type", 4: "vocab_size", 40: "unk_id", 41: "bos_id", 42: "eos_id", 43: "pad_id"}
_TRAINER_BOOLS = {35: "byte_fallback", 24: "treat_whitespace_as_suffix"}
_TRAINER_STRINGS = {45: "unk_piece", 46: "bos_piece", 47: "eos_piece", 48: "pad_piece", 44: "unk_surface"}


def _parse_trainer_spec(data: bytes) -> TrainerSpec:
    spec = TrainerSpec()
    for number, wire, value in _fields(data):
        if number in _TRAINER_INTS:
            _expect(wire, 0, _TRAINER_INTS[number])
            setattr(spec, _TRAINER_INTS[number], _int32(value))
        elif number in _TRAINER_BOOLS:
            _expect(wire, 0, _TRAINER_BOOLS[number])
            setattr(spec, _TRAINER_BOOLS[number], bool(value))
        elif number in _TRAINER_STRINGS:
            _expect(wire, 2, _TRAINER_STRINGS[number])
            setattr(spec, _TRAINER_STRINGS[number], _text(value, _TRAINER_STRINGS[number]))
    return spec


def _parse_normalizer_spec(data: bytes) -> NormalizerSpec:
    spec = NormalizerSpec()
    for number, wire, value in _fields(data):
        if number == 1:
            _expect(wire, 2, "name")
            spec.name = _text(value, "normalizer name")
        elif number == 2:
            _expect(wire, 2, "precompiled_charsmap")
            spec.precompiled_charsmap = bytes(value)
        elif number in (3, 4, 5):
            _expect(wire, 0, "normalizer flag")
            name = {3: "add_dummy_prefix", 4: "remove_extra_whitespaces", 5: "escape_whitespaces"}[number]
            setattr(spec, name, bool(value))
    return spec


def parse_model(data: bytes, source: str = "<bytes>") -> ModelProto:
    """A SentencePiece ModelProto from its serialized bytes; ValueError naming `source` if they are not one."""
    pieces, trainer, normalizer = [], TrainerSpec(), NormalizerSpec()
    try:
        for number, wire, value in _fields(data):
            if number == 1:
                _expect(wire, 2, "pieces")
                pieces.append(_parse_piece(value))
            elif number == 2:
                _expect(wire, 2, "trainer_spec")
                trainer = _parse_trainer_spec(value)
            elif number == 3:
                _expect(wire, 2, "normalizer_spec")
                normalizer = _parse_normalizer_spec(value)
    except (_WireError, struct.error) as e:
        raise ValueError(f"cannot parse SentencePiece model {source}: {e}") from None
    if not pieces:
        raise ValueError(f"cannot parse SentencePiece model {source}: it holds no pieces (not a SentencePiece "
                         "model file?)")
    # as the sentencepiece library refuses on load: a piece defined twice (a vocabulary lookup would silently
    # keep one of its ids). trainer_spec's special ids are not checked: nothing here reads them (the piece
    # types say which pieces are special), and the library accepts any value.
    seen = {}
    for i, piece in enumerate(pieces):
        if piece.piece in seen:
            raise ValueError(f"SentencePiece model {source}: piece {piece.piece!r} is defined twice (ids "
                             f"{seen[piece.piece]} and {i})")
        seen[piece.piece] = i
    return ModelProto(pieces, trainer, normalizer, source)


def read_model(path: str) -> ModelProto:
    """Read a SentencePiece .model / .spm file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise OSError(f"no SentencePiece model file at {path}")
    with open(path, "rb") as f:
        return parse_model(f.read(), path)


# ---------------------------------------------------------------------------------------------------------------
# T5
# ---------------------------------------------------------------------------------------------------------------

def _spm_added_tokens(model: ModelProto) -> list[AddedToken]:
    """Control pieces, in id order, as special tokens. User-defined pieces stay ordinary vocabulary entries that the
    Unigram model matches whole, as in transformers 5.25 (earlier releases made them added tokens)."""
    return [AddedToken(p.piece, normalized=False, special=True) for p in model.pieces if p.type == CONTROL]


def build_t5_backend(model: ModelProto, extra_ids: int) -> Tokenizer:
    """transformers' T5Tokenizer pipeline over the pieces of `model` plus `extra_ids` sentinels."""
    vocab = [(p.piece, p.score) for p in model.pieces]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(extra_ids - 1, -1, -1)]
    if len(vocab) < 3:
        raise ValueError(f"SentencePiece model {model.path} has {len(vocab)} pieces: T5 needs at least 3 (unk id 2)")
    backend = Tokenizer(Unigram(vocab, unk_id=2, byte_fallback=False))
    if model.normalizer_spec.precompiled_charsmap:
        backend.normalizer = normalizers.Precompiled(model.normalizer_spec.precompiled_charsmap)
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="always", split=True)])
    backend.decoder = decoders.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="always", split=True)
    return backend


def load_t5(spiece_model: str, init: dict) -> PreTrainedTokenizerFast:
    """T5Tokenizer from spiece.model and the assembled init kwargs (tokenizer_config.json & co)."""
    model = read_model(spiece_model)
    init = dict(init)
    extra_ids = int(init.get("extra_ids", 100) or 0)
    for key, default in (("eos_token", "</s>"), ("unk_token", "<unk>"), ("pad_token", "<pad>")):
        init.setdefault(key, default)
    if not init.get("extra_special_tokens"):
        extra = _spm_added_tokens(model)
        sentinels = [t for t in extra if "<extra_id_" in str(t)]
        if not sentinels:
            extra += [f"<extra_id_{i}>" for i in range(extra_ids)]
        elif extra_ids > 0 and extra_ids != len(sentinels):
            raise ValueError(f"{spiece_model} defines {len(sentinels)} <extra_id_N> pieces but extra_ids is "
                             f"{extra_ids}")
        init["extra_special_tokens"] = extra
    tokenizer = PreTrainedTokenizerFast(_backend=build_t5_backend(model, extra_ids), _tokenizer_class="T5Tokenizer",
                                        **init)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", tokenizer.eos_token_id)])
    return tokenizer


# ---------------------------------------------------------------------------------------------------------------
# SentencePiece's own encoding, emulated with `tokenizers` (Marian)
# ---------------------------------------------------------------------------------------------------------------

_HIDDEN = "\uffff"  # prefix that makes a vocabulary entry unreachable from text (SentencePiece never emits it)
_UNKNOWN_CODE = "\ufffe"  # what a ">>xx<<" code missing from vocab.json becomes (read as <unk>, as transformers)


def _bpe_merges(pieces: list[Piece]) -> list[tuple[str, str]]:
    """Merges of a SentencePiece BPE model: every split of a piece into two pieces, by the piece's score (higher
    first), as transformers' SentencePieceExtractor orders them."""
    scores = {p.piece: p.score for p in pieces if p.type in (NORMAL, USER_DEFINED)}
    found = []
    for piece, score in scores.items():
        for i in range(1, len(piece)):
            left, right = piece[:i], piece[i:]
            if left in scores and right in scores:
                found.append((left, right, score))
    found.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in found]


def build_spm_backend(model: ModelProto, vocab: dict[str, int], unk_id: int, keep: set,
                      language_codes: list[str]) -> tuple[Tokenizer, dict[int, int]]:
    """A backend that segments text as SentencePiece does with `model`, with ids taken from `vocab` (Marian's
    vocab.json). Pieces of `model` missing from `vocab` get ids past its end (returned as a map to `unk_id`);
    entries of `vocab` SentencePiece cannot emit are made unreachable, except those in `keep` (added tokens)."""
    spec, norm = model.trainer_spec, model.normalizer_spec
    reachable = {p.piece: p for p in model.pieces if p.type in (NORMAL, USER_DEFINED)
                 or (p.type == BYTE and spec.byte_fallback)}
    # SentencePiece writes an unknown character as itself, which vocab.json may know: keep such single characters
    # reachable, at the score SentencePiece gives an unknown node (Unigram)
    unknown_score = min((p.score for p in model.pieces if p.type == NORMAL), default=0.0) - 10.0
    size = max(vocab.values(), default=-1) + 1
    entries: list[tuple[str, float] | None] = [None] * size
    codes = set(language_codes)
    for token, index in vocab.items():
        if token in codes:
            entries[index] = (_HIDDEN + token, 0.0)
        elif token in reachable:
            entries[index] = (token, reachable[token].score)
        elif token in keep:
            entries[index] = (token, 0.0)
        elif len(token) == 1:
            entries[index] = (token, unknown_score)
        else:
            entries[index] = (_HIDDEN + token, 0.0)
    for index, entry in enumerate(entries):  # holes in vocab.json's ids
        if entry is None:
            entries[index] = (f"{_HIDDEN}<unused {index}>", 0.0)
    extra_ids: dict[int, int] = {}
    for piece in reachable.values():
        if piece.piece not in vocab:
            extra_ids[len(entries)] = unk_id
            entries.append((piece.piece, piece.score))
    extra_ids[len(entries)] = unk_id
    entries.append((_UNKNOWN_CODE, 0.0))

    if spec.model_type == BPE_MODEL:
        index_of = {token: i for i, (token, _) in enumerate(entries)}
        backend = Tokenizer(BPE(index_of, _bpe_merges(model.pieces), unk_token=entries[unk_id][0], fuse_unk=True,
                                byte_fallback=spec.byte_fallback, dropout=None))
    elif spec.model_type == UNIGRAM:
        backend = Tokenizer(Unigram(entries, unk_id=unk_id, byte_fallback=spec.byte_fallback))
    else:
        raise ValueError(f"SentencePiece model {model.path} is of type {spec.model_type} (WORD / CHAR): only "
                         "UNIGRAM and BPE models are supported")

    # ">>fr<<" at the very start of a text is one token (transformers' remove_language_code): mark it, then match
    # the marked form as an added token on the normalized text; a code missing from the vocabulary reads as <unk>
    steps = []
    if codes:
        alternatives = "|".join(_regex_escape(c) for c in sorted(codes, key=len, reverse=True))
        steps.append(normalizers.Replace(Regex(rf"\A(?=(?:{alternatives}))"), _HIDDEN))
    steps.append(normalizers.Replace(Regex(r"\A>>[\s\S]*?<<"), _UNKNOWN_CODE))
    if norm.precompiled_charsmap:
        steps.append(normalizers.Precompiled(norm.precompiled_charsmap))
    if norm.remove_extra_whitespaces:
        steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    backend.normalizer = normalizers.Sequence(steps)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=SPIECE_UNDERLINE, prepend_scheme="always" if norm.add_dummy_prefix else "never", split=False)
    backend.add_tokens([AddedToken(token, normalized=True, special=False)
                        for token in [_HIDDEN + c for c in sorted(codes)] + [_UNKNOWN_CODE]])
    return backend, extra_ids


def _regex_escape(text: str) -> str:
    return "".join("\\" + c if c in r".^$*+?()[]{}|\/-" else c for c in text)


def decode_pieces(model: ModelProto, pieces: list[str]) -> str:
    """SentencePiece's DecodePieces: control pieces vanish, the unknown piece reads as its surface, unknown strings
    are kept, byte pieces are joined into UTF-8, the leading dummy-prefix space is dropped."""
    index = {p.piece: p for p in model.pieces}
    strip_first = model.normalizer_spec.add_dummy_prefix or model.normalizer_spec.remove_extra_whitespaces
    out: list[str] = []
    pending = bytearray()
    at_start = True

    def flush():
        if pending:
            out.append(pending.decode("utf-8", errors="replace"))
            pending.clear()

    for token in pieces:
        piece = index.get(token)
        if piece is not None and piece.type == BYTE:
            pending.append(int(token[3:-1], 16))
            at_start = False
            continue
        flush()
        if piece is None:  # not a piece of this model: SentencePiece keeps the string as is
            surface = token
        elif piece.type == CONTROL:
            surface = ""
        elif piece.type == UNKNOWN:
            surface = model.trainer_spec.unk_surface
        else:
            surface = token
            if at_start and strip_first and surface.startswith(SPIECE_UNDERLINE):
                surface = surface[1:]
            surface = surface.replace(SPIECE_UNDERLINE, " ")
        if surface:
            at_start = False
        out.append(surface)
    flush()
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------------
# Marian
# ---------------------------------------------------------------------------------------------------------------

def _read_vocab_json(path: str) -> dict[str, int]:
    try:
        with open(path, encoding="utf-8") as f:
            vocab = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot parse Marian vocabulary {path}: {e}") from None
    if isinstance(vocab, list):
        vocab = {token: i for i, token in enumerate(vocab)}
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise ValueError(f"Marian vocabulary {path} is not a JSON object of token -> id")
    return vocab


class MarianTokenizer(PreTrainedTokenizerFast):
    """transformers' MarianTokenizer: source text through source.spm, targets (``text_target=``, or inside
    ``as_target_tokenizer()``) through target.spm, pieces mapped to ids by vocab.json (target_vocab.json for the
    targets with ``separate_vocabs``), ``</s>`` appended."""

    def __init__(self, *, _source: tuple, _target: tuple, _vocabs: tuple, _models: tuple, **kwargs):
        object.__setattr__(self, "_sides", {"source": _source, "target": _target})
        object.__setattr__(self, "_encoder", _vocabs[0])
        object.__setattr__(self, "_target_encoder", _vocabs[1])
        object.__setattr__(self, "_decoders", ({v: k for k, v in _vocabs[0].items()},
                                               {v: k for k, v in _vocabs[1].items()}))
        object.__setattr__(self, "_spm_models", _models)
        object.__setattr__(self, "_side", "source")
        object.__setattr__(self, "separate_vocabs", bool(kwargs.get("separate_vocabs", False)))
        _source[0].post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1")  # set in _install
        super().__init__(_backend=_source[0], _tokenizer_class="MarianTokenizer", **kwargs)
        self.source_lang = kwargs.get("source_lang")
        self.target_lang = kwargs.get("target_lang")
        self.supported_language_codes = ([] if self.separate_vocabs else
                                          [k for k in self._encoder if k.startswith(">>") and k.endswith("<<")])
        # the target backend gets the same added tokens (special tokens, added_tokens_decoder), at the same ids
        # (transformers' added tokens are global: with separate vocabularies a target-side match keeps the id
        # the source side gives it)
        added = self.added_tokens_decoder
        _target[0].add_tokens([added[i] for i in sorted(added)])
        for index, token in added.items():
            target_index = _target[0].token_to_id(token.content)
            if target_index is not None and target_index != index:
                _target[1][target_index] = index
        self._install("source")

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False, **kwargs):
        encoding = self._encode(text, pair, add_special_tokens=add_special_tokens, **kwargs).encodings[0]
        texts = (text, pair)
        tokens = []
        unk, normalizer = str(self.unk_token), self._tokenizer.normalizer
        for token, (start, end), sequence in zip(encoding.tokens, encoding.offsets, encoding.sequence_ids):
            if sequence is not None and token.startswith((_HIDDEN, _UNKNOWN_CODE)):
                written = texts[sequence]  # a language code, as written
                token = written[max(written.rfind(">>", 0, end - 1), 0):end]
            elif sequence is not None and token == unk and texts[sequence][start:end] != unk:
                # SentencePiece gives an unknown run as its (normalized) text
                token = texts[sequence][start:end]
                token = normalizer.normalize_str(token) if normalizer is not None else token
            tokens.append(token)
        return tokens

    @property
    def added_tokens_decoder(self) -> dict:
        return {i: t for i, t in self._tokenizer.get_added_tokens_decoder().items()
                if not t.content.startswith((_HIDDEN, _UNKNOWN_CODE))}

    def _install(self, side: str):
        backend, extra_ids = self._sides[side]
        eos = str(self.eos_token)
        backend.post_processor = processors.TemplateProcessing(
            single=["$A", eos], pair=["$A", "$B:1", eos], special_tokens=[(eos, self.eos_token_id)])
        object.__setattr__(self, "_tokenizer", backend)
        object.__setattr__(self, "_id_map", extra_ids or None)
        object.__setattr__(self, "_side", side)

    @contextlib.contextmanager
    def as_target_tokenizer(self):
        """Encode with the target-side SentencePiece model (and vocabulary) inside the block (transformers 4 API;
        transformers 5 offers ``text_target=``, which also works here)."""
        previous = self._side
        self._install("target")
        try:
            yield
        finally:
            self._install(previous)

    def __call__(self, text=None, text_pair=None, text_target=None, text_pair_target=None, **kwargs):
        if text_target is None:
            return super().__call__(text, text_pair, **kwargs)
        max_target_length = kwargs.pop("max_target_length", None)
        inputs = super().__call__(text, text_pair, **kwargs) if text is not None else None
        if max_target_length is not None:
            kwargs["max_length"] = max_target_length
        with self.as_target_tokenizer():
            targets = super().__call__(text_target, text_pair_target, **kwargs)
        if inputs is None:
            return targets
        inputs["labels"] = targets["input_ids"]
        return inputs

    # -- vocabulary: vocab.json, not the backend's (which holds unreachable placeholders) -------------------------
    @property
    def _current_encoder(self) -> dict[str, int]:
        return self._target_encoder if self._side == "target" and self.separate_vocabs else self._encoder

    @property
    def vocab_size(self) -> int:
        return len(self._encoder)

    def __len__(self) -> int:
        return len(self.get_vocab())

    def get_vocab(self) -> dict[str, int]:
        return dict(self._encoder, **self.added_tokens_encoder)

    def get_src_vocab(self) -> dict[str, int]:
        return self.get_vocab()

    def get_tgt_vocab(self) -> dict[str, int]:
        return dict(self._target_encoder, **self.added_tokens_encoder)

    def _token_to_id(self, token: str) -> int | None:
        if token in self.added_tokens_encoder:
            return self.added_tokens_encoder[token]
        encoder = self._current_encoder
        return encoder.get(token, encoder.get(str(self.unk_token)))

    def _id_to_token(self, index: int, source: bool) -> str | None:
        added = self.added_tokens_decoder
        if index in added:
            return added[index].content
        decoder = self._decoders[1] if self.separate_vocabs else self._decoders[0]
        if index in decoder:
            return decoder[index]
        model = self._spm_models[0 if source else 1]
        if 0 <= index < len(model.pieces):
            return model.pieces[index].piece
        return str(self.unk_token)

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        ids = to_py(ids)
        if isinstance(ids, int):
            return self._id_to_token(ids, False)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._id_to_token(int(i), False) for i in ids if int(i) not in skip]

    # -- decoding: SentencePiece DecodePieces between special tokens, as transformers' MarianTokenizer -------------
    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None,
               use_source_tokenizer: bool | None = None, **kwargs):
        token_ids = to_py(token_ids)
        if isinstance(token_ids, (list, tuple)) and token_ids and isinstance(token_ids[0], (list, tuple)):
            return [self._decode_one(seq, skip_special_tokens, clean_up_tokenization_spaces, use_source_tokenizer)
                    for seq in token_ids]
        return self._decode_one(token_ids, skip_special_tokens, clean_up_tokenization_spaces, use_source_tokenizer)

    def batch_decode(self, sequences, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None,
                     **kwargs) -> list[str]:
        result = self.decode(sequences, skip_special_tokens=skip_special_tokens,
                             clean_up_tokenization_spaces=clean_up_tokenization_spaces, **kwargs)
        return [result] if isinstance(result, str) else result

    def _decode_one(self, token_ids, skip_special_tokens, clean_up_tokenization_spaces, use_source_tokenizer):
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        source = (not self.separate_vocabs) if use_source_tokenizer is None else bool(use_source_tokenizer)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        tokens = [self._id_to_token(int(i), source) for i in token_ids if int(i) not in skip]
        text = self._tokens_to_string(tokens, source)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces:
            text = self.clean_up_tokenization(text)
        return text

    def _tokens_to_string(self, tokens: list[str], source: bool) -> str:
        model = self._spm_models[0 if source else 1]
        special = set(self.all_special_tokens)
        out, pending = "", []
        for token in tokens:
            if token in special:
                out += decode_pieces(model, pending) + token + " "
                pending = []
            else:
                pending.append(token)
        out += decode_pieces(model, pending)
        return out.replace(SPIECE_UNDERLINE, " ").strip()

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self._tokens_to_string(tokens, not self.separate_vocabs)

    def save_pretrained(self, save_directory, **kwargs):
        raise NotImplementedError("saving a MarianTokenizer is not supported by fastformers yet; copy the checkpoint "
                                  "files (source.spm, target.spm, vocab.json, tokenizer_config.json) instead")


def _language_codes(vocab: dict) -> list[str]:
    return [token for token in vocab if token.startswith(">>") and token.endswith("<<")]


def load_marian(files: dict, init: dict) -> MarianTokenizer:
    """MarianTokenizer from source.spm, target.spm, vocab.json (and target_vocab.json) and the init kwargs."""
    init = dict(init)
    for key, default in (("unk_token", "<unk>"), ("eos_token", "</s>"), ("pad_token", "<pad>"),
                         ("model_max_length", 512)):
        init.setdefault(key, default)
    for key in ("source_spm", "target_spm", "vocab"):
        if files.get(key) is None:
            raise OSError(f"MarianTokenizer checkpoint {init.get('name_or_path', '')!r} has no "
                          f"{ {'source_spm': 'source.spm', 'target_spm': 'target.spm', 'vocab': 'vocab.json'}[key]}")
    separate = bool(init.get("separate_vocabs", False))
    vocab = _read_vocab_json(files["vocab"])
    unk = str(init["unk_token"])
    if unk not in vocab:
        raise ValueError(f"Marian vocabulary {files['vocab']} has no entry for the unknown token {unk!r}")
    if separate:
        if files.get("target_vocab") is None:
            raise OSError("MarianTokenizer with separate_vocabs=True needs target_vocab.json, which the checkpoint "
                          f"{init.get('name_or_path', '')!r} lacks")
        target_vocab = _read_vocab_json(files["target_vocab"])
        if unk not in target_vocab:
            raise ValueError(f"Marian vocabulary {files['target_vocab']} has no entry for the unknown token {unk!r}")
    else:
        target_vocab = vocab
    source_model, target_model = read_model(files["source_spm"]), read_model(files["target_spm"])
    keep = {str(init[k]) for k in ("unk_token", "eos_token", "pad_token") if init.get(k) is not None}
    keep |= {str(t) for t in (init.get("added_tokens_decoder") or {}).values()}
    # transformers keeps a leading ">>xx<<" whole on both sides, looked up in that side's vocabulary
    source = build_spm_backend(source_model, vocab, vocab[unk], keep, _language_codes(vocab))
    target = build_spm_backend(target_model, target_vocab, target_vocab[unk], keep, _language_codes(target_vocab))
    for key in ("source_spm", "target_spm", "vocab", "target_vocab_file", "sp_model_kwargs"):
        init.pop(key, None)
    return MarianTokenizer(_source=source, _target=target, _vocabs=(vocab, target_vocab),
                           _models=(source_model, target_model), **init)
