"""fastformers.tokenization.sentencepiece: T5 (spiece.model) and Marian (source.spm / target.spm / vocab.json)
checkpoints without tokenizer.json, against transformers' tokenizers loaded from the same folders.

No real checkpoint at hand ships spiece.model, so every model here is a tiny one trained in the test with the
`sentencepiece` package (a test dependency; fastformers reads the .model files with its own protobuf reader).
transformers 5's T5Tokenizer does not write spiece.model on save_pretrained, so the T5 folders are
spiece.model + the tokenizer_config.json transformers writes (or a minimal one), without tokenizer.json.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import warnings

import pytest

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

# the shared comparisons, imported by their path from tests/ so that tests elsewhere can import this module too
from tokenization.test_tokenization import load_both, same_call  # noqa: E402

from fastformers.tokenization import sentencepiece as ff_spm  # noqa: E402
from fastformers.tokenization import AutoTokenizer  # noqa: E402


def make_corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    syllables = ["ka", "to", "ri", "me", "lo", "sa", "ne", "vu", "qui", "zé", "ñu", "ør", "ch", "th", "st", "ing",
                 "ion", "er", "an", "ü", "ß", "ça"]
    vocabulary = ("the quick brown fox jumps over lazy dog hello world café naïve résumé Zürich São Paulo crème brûlée "
             "北京 東京 ひらがな Ελληνικά русский עברית 😀 3.14 1,000 42 don't isn't we're (ok) [x] a-b e-mail "
             "translation model encoder decoder token piece unigram byte pair")
    words = vocabulary.split()
    words += ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(300)]
    lines = []
    for i in range(400):
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 14)))
        if i % 7 == 0:
            line = line.replace(" ", "  ", 2)
        if i % 11 == 0:
            line += "!?"
        if i % 13 == 0:
            line = line.upper()
        if i % 17 == 0:
            line = f"{rng.randint(0, 99999)} {line}."
        lines.append(line)
    return lines


def train(model_type: str, vocab_size: int, seed: int = 0, **options) -> bytes:
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(make_corpus(seed)), model_writer=out,
                                   vocab_size=vocab_size, model_type=model_type, minloglevel=2, **options)
    return out.getvalue()


T5_LAYOUT = {"pad_id": 0, "eos_id": 1, "unk_id": 2, "bos_id": -1}

TEXTS = [
    "Hello, world!",
    "Crème brûlée à São Paulo",
    "北京欢迎你。東京は日本の首都です。ひらがな カタカナ",
    "emoji 😀🎉👍🏽 test ❤️",
    "mixed Ελληνικά русский עברית العربية हिन्दी 한국어",
    "",
    "   \t\n  ",
    "  leading and   inner   spaces  ",
    "tabs\tand\nnew\r\nlines",
    "control\x00chars\x07 here\u200b zero\ufeffwidth end",
    "don't stop, isn't it? he's here; we're 've 'm n't .",
    "UPPER lower MiXeD ﬁ ligature Ⅻ ＦＵＬＬＷＩＤＴＨ İstanbul",
    "numbers 3.14159 1,000,000 $5 #tag @user https://example.com/path?q=1&x=y",
    "specials </s> and <unk> and <pad> and <s> inline</s>",
    "sentinels <extra_id_0> mask <extra_id_7>. <extra_id_99>",
    "a literal \u2581 underline\u2581here",
    "katorime lo sané vuqui zéñu ørch thst inger ionan",
    "a" * 150 + " supercalifragilisticexpialidocious",
]


# ------------------------------------------------------------------------------------------------------------------
# comparison helpers
# ------------------------------------------------------------------------------------------------------------------

def same_texts(ours, theirs, texts, **kwargs):
    for text in texts:
        got = same_call(ours, theirs, "__call__", text, **kwargs)
        ids = got["input_ids"]
        same_call(ours, theirs, "convert_ids_to_tokens", ids)
        for skip in (False, True):
            same_call(ours, theirs, "decode", ids, skip_special_tokens=skip)
        same_call(ours, theirs, "__call__", text, add_special_tokens=False)
    same_call(ours, theirs, "__call__", list(texts), padding=True)
    same_call(ours, theirs, "__call__", list(texts[:4]), padding="max_length", max_length=12, truncation=True,
              return_tensors="pt")
    batch = theirs(list(texts), padding=True)["input_ids"]
    for skip in (False, True):
        same_call(ours, theirs, "batch_decode", batch, skip_special_tokens=skip)


def same_attributes(ours, theirs):
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        assert getattr(ours, name) == getattr(theirs, name), name
        assert getattr(ours, name + "_id") == getattr(theirs, name + "_id"), name + "_id"
    assert ours.special_tokens_map == theirs.special_tokens_map
    assert ours.all_special_tokens == theirs.all_special_tokens
    assert ours.all_special_ids == theirs.all_special_ids
    assert ours.vocab_size == theirs.vocab_size and len(ours) == len(theirs)
    assert ours.get_vocab() == theirs.get_vocab()
    assert ours.model_max_length == theirs.model_max_length
    assert ours.model_input_names == theirs.model_input_names
    assert ours.clean_up_tokenization_spaces == theirs.clean_up_tokenization_spaces
    assert ours.num_special_tokens_to_add() == theirs.num_special_tokens_to_add()


# ------------------------------------------------------------------------------------------------------------------
# the ModelProto reader
# ------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models():
    return {
        "t5-unigram": train("unigram", 300, **T5_LAYOUT, user_defined_symbols=["<sep>"]),
        "t5-bpe": train("bpe", 300, **T5_LAYOUT),
        "default-layout": train("unigram", 250),
        "source": train("unigram", 250, seed=1),
        "target-bpe": train("bpe", 280, seed=2),
        "byte-fallback": train("unigram", 420, seed=3, byte_fallback=True, character_coverage=0.98),
    }


@pytest.mark.parametrize("name", ["t5-unigram", "t5-bpe", "default-layout", "byte-fallback"])
def test_read_model_matches_protobuf(models, name):
    from sentencepiece import sentencepiece_model_pb2

    reference = sentencepiece_model_pb2.ModelProto()
    reference.ParseFromString(models[name])
    ours = ff_spm.parse_model(models[name], name)
    assert [(p.piece, p.score, p.type) for p in ours.pieces] == [
        (p.piece, p.score, p.type) for p in reference.pieces]
    spec = reference.trainer_spec
    for field in ("model_type", "vocab_size", "byte_fallback", "unk_id", "bos_id", "eos_id", "pad_id", "unk_piece",
                  "bos_piece", "eos_piece", "pad_piece", "unk_surface", "treat_whitespace_as_suffix"):
        assert getattr(ours.trainer_spec, field) == getattr(spec, field), field
    norm = reference.normalizer_spec
    for field in ("name", "precompiled_charsmap", "add_dummy_prefix", "remove_extra_whitespaces",
                  "escape_whitespaces"):
        assert getattr(ours.normalizer_spec, field) == getattr(norm, field), field


def test_corrupt_model_file(tmp_path, models):
    bad = tmp_path / "spiece.model"
    for data in (b"", b"this is not a protobuf", models["t5-unigram"][:1000], b"\x0a\xff\xff\xff\xff\x0f"):
        bad.write_bytes(data)
        with pytest.raises(ValueError, match="spiece.model"):
            ff_spm.read_model(str(bad))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))
    bad.write_bytes(b"garbage bytes \x00\x01")
    with pytest.raises(ValueError, match="spiece.model"):
        AutoTokenizer.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------------------------------
# T5
# ------------------------------------------------------------------------------------------------------------------

def t5_folder(root, data: bytes, config: dict | None):
    root.mkdir()
    (root / "spiece.model").write_bytes(data)
    if config is not None:
        (root / "tokenizer_config.json").write_text(json.dumps(config))
    return root


def t5_saved_folder(root, data: bytes):
    """The tokenizer_config.json transformers writes for a T5 tokenizer, beside spiece.model, no tokenizer.json."""
    source = t5_folder(root.with_name(root.name + "-src"), data, {"tokenizer_class": "T5Tokenizer"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(root))
    (root / "tokenizer.json").unlink()
    shutil.copy(source / "spiece.model", root / "spiece.model")
    return root


@pytest.mark.parametrize("name", ["t5-unigram", "t5-bpe", "default-layout", "byte-fallback"])
@pytest.mark.parametrize("layout", ["minimal-config", "saved-config"])
def test_t5(models, tmp_path, name, layout):
    if layout == "saved-config":
        folder = t5_saved_folder(tmp_path / "t5", models[name])
    else:
        folder = t5_folder(tmp_path / "t5", models[name], {"tokenizer_class": "T5Tokenizer"})
    ours, theirs = load_both(folder)
    assert type(theirs).__name__ == "T5Tokenizer"
    same_attributes(ours, theirs)
    assert {k: repr(v) for k, v in ours.added_tokens_decoder.items()} == {
        k: repr(v) for k, v in theirs.added_tokens_decoder.items()}
    same_texts(ours, theirs, TEXTS)
    for a, b in (("Hello world", "the pair"), ("Crème", "brûlée <extra_id_3> à São Paulo")):
        same_call(ours, theirs, "__call__", a, b)
    same_call(ours, theirs, "__call__", ["translate: hello", "x"], text_target=["salut <extra_id_0>", "y y"],
              padding=True)
    same_call(ours, theirs, "__call__", text_target="only a target")


def test_t5_options(models, tmp_path):
    folder = t5_folder(tmp_path / "t5", models["t5-unigram"],
                       {"tokenizer_class": "T5Tokenizer", "extra_ids": 5, "model_max_length": 16})
    ours, theirs = load_both(folder)
    same_attributes(ours, theirs)
    same_texts(ours, theirs, TEXTS[:4] + ["<extra_id_4> <extra_id_5>"])
    same_call(ours, theirs, "__call__", TEXTS[-1], truncation=True)
    # no tokenizer_config.json: the spiece.model alone makes it a T5 tokenizer (transformers needs the class)
    bare = t5_folder(tmp_path / "bare", models["t5-unigram"], None)
    ours_bare = AutoTokenizer.from_pretrained(bare)
    ours_full = AutoTokenizer.from_pretrained(t5_folder(tmp_path / "full", models["t5-unigram"],
                                                        {"tokenizer_class": "T5Tokenizer"}))
    for text in TEXTS:
        assert ours_bare(text)["input_ids"] == ours_full(text)["input_ids"]
    # the model_type of config.json names the class too
    hinted = t5_folder(tmp_path / "hinted", models["default-layout"], {})
    (hinted / "config.json").write_text(json.dumps({"model_type": "t5"}))
    ours, theirs = load_both(hinted)
    same_attributes(ours, theirs)
    same_texts(ours, theirs, TEXTS[:5])


# ------------------------------------------------------------------------------------------------------------------
# Marian
# ------------------------------------------------------------------------------------------------------------------

def marian_vocab(source: bytes, target: bytes, drop=(), codes=()) -> dict[str, int]:
    """vocab.json as Marian checkpoints have it: </s>, <unk>, language codes, the pieces of both models, <pad>."""
    tokens = ["</s>", "<unk>", *codes]
    for data in (source, target):
        processor = spm.SentencePieceProcessor(model_proto=data)
        for i in range(processor.get_piece_size()):
            piece = processor.id_to_piece(i)
            if piece not in tokens and piece not in drop:
                tokens.append(piece)
    tokens.append("<pad>")
    return {token: i for i, token in enumerate(tokens)}


def marian_folder(root, source: bytes, target: bytes, vocab: dict, target_vocab: dict | None = None, **kwargs):
    build = root.with_name(root.name + "-build")
    build.mkdir()
    (build / "source.spm").write_bytes(source)
    (build / "target.spm").write_bytes(target)
    (build / "vocab.json").write_text(json.dumps(vocab))
    if target_vocab is not None:
        (build / "target_vocab.json").write_text(json.dumps(target_vocab))
        kwargs.update(separate_vocabs=True, target_vocab_file=str(build / "target_vocab.json"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = transformers.MarianTokenizer(str(build / "source.spm"), str(build / "target.spm"),
                                                 str(build / "vocab.json"), **kwargs)
        tokenizer.save_pretrained(str(root))
    return root


MARIAN_TEXTS = TEXTS + [">>fr<< Bonjour le monde", ">>de<<Hallo", "text with >>fr<< inside", ">>xx<< unknown code",
                        "  >>fr<< after spaces", ">>fr<<"]


@pytest.mark.parametrize("case", ["shared", "dropped-pieces", "bpe-source"])
def test_marian(models, tmp_path, case):
    source, target = models["source"], models["target-bpe"]
    drop = ()
    if case == "dropped-pieces":  # pieces SentencePiece emits but vocab.json lacks read as <unk>
        processor = spm.SentencePieceProcessor(model_proto=source)
        drop = {processor.id_to_piece(i) for i in range(3, processor.get_piece_size(), 7)}
    if case == "bpe-source":
        source, target = target, source
    vocab = marian_vocab(source, target, drop=drop, codes=(">>fr<<", ">>de<<"))
    folder = marian_folder(tmp_path / "marian", source, target, vocab)
    ours, theirs = load_both(folder)
    assert type(theirs).__name__ == "MarianTokenizer" and type(ours).__name__ == "MarianTokenizer"
    same_attributes(ours, theirs)
    same_texts(ours, theirs, MARIAN_TEXTS)
    for text in MARIAN_TEXTS:
        if "Ⅻ" not in text:  # known difference: an unknown character the charsmap expands ("Ⅻ" -> "XII") shows as
            same_call(ours, theirs, "tokenize", text)  # its whole expansion in tokenize() (ids are the same)
        same_call(ours, theirs, "__call__", text_target=text)
        ids = theirs(text_target=text)["input_ids"]
        for skip in (False, True):
            same_call(ours, theirs, "decode", ids, skip_special_tokens=skip)
    same_call(ours, theirs, "__call__", MARIAN_TEXTS[:6], text_target=MARIAN_TEXTS[6:12], padding=True,
              return_tensors="pt")
    same_call(ours, theirs, "__call__", "hello", "a pair")
    with ours.as_target_tokenizer():
        assert ours("Crème brûlée")["input_ids"] == theirs(text_target="Crème brûlée")["input_ids"]
    assert ours("Crème brûlée")["input_ids"] == theirs("Crème brûlée")["input_ids"]


def test_marian_separate_vocabs(models, tmp_path):
    source, target = models["source"], models["target-bpe"]
    vocab = marian_vocab(source, source)
    target_vocab = marian_vocab(target, target)
    folder = marian_folder(tmp_path / "marian", source, target, vocab, target_vocab)
    ours, theirs = load_both(folder)
    same_attributes(ours, theirs)
    for text in TEXTS:
        same_call(ours, theirs, "__call__", text)
        same_call(ours, theirs, "__call__", text_target=text)
        ids = theirs(text_target=text)["input_ids"]
        for skip in (False, True):
            same_call(ours, theirs, "decode", ids, skip_special_tokens=skip)
            same_call(ours, theirs, "decode", theirs(text)["input_ids"], skip_special_tokens=skip,
                      use_source_tokenizer=True)


def test_marian_missing_files(models, tmp_path):
    vocab = marian_vocab(models["source"], models["target-bpe"])
    folder = marian_folder(tmp_path / "marian", models["source"], models["target-bpe"], vocab)
    (folder / "vocab.json").unlink()
    with pytest.raises(OSError, match="vocab.json"):
        AutoTokenizer.from_pretrained(folder)
    (folder / "vocab.json").write_text("{not json")
    with pytest.raises(ValueError, match="vocab.json"):
        AutoTokenizer.from_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps({"a": 0}))
    with pytest.raises(ValueError, match="vocab.json"):
        AutoTokenizer.from_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "target.spm").write_bytes(b"\x0a\x05broken")
    with pytest.raises(ValueError, match="target.spm"):
        AutoTokenizer.from_pretrained(folder)


# ------------------------------------------------------------------------------------------------------------------
# BART: vocab.json + merges.txt, no tokenizer.json (RoBERTa-style byte-level BPE)
# ------------------------------------------------------------------------------------------------------------------

def test_bart_slow_files(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(make_corpus(4), trainer=trainer)
    tok.model.save(str(tmp_path))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BartTokenizer",
                                                               "model_max_length": 1024}))
    ours, theirs = load_both(tmp_path)
    same_attributes(ours, theirs)
    same_texts(ours, theirs, TEXTS + ["<mask> filled <mask>", "a <s> b </s>"])
    same_call(ours, theirs, "__call__", "Hello world", "the pair", return_offsets_mapping=True)
    same_call(ours, theirs, "__call__", ["x"], text_target=["Crème brûlée"], padding=True)
