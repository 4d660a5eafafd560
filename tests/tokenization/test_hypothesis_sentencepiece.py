"""Property-based tests (hypothesis) of the SentencePiece reader, structured generation complementing the byte
mutator of test_bad_tokenizer_files.py: models built from random pieces (any text, score, kind), trainer fields
(ids anywhere in or out of range) and unknown fields, then a T5 tokenizer built from each model that parses and
run on text. Each parses (and builds, and encodes) or fails with a ValueError naming the source."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fastformers.tokenization import sentencepiece as ff_spm

from test_bad_tokenizer_files import field, model, varint

BOUNDED = settings(deadline=2000, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
IDS = st.one_of(st.integers(-3, 8), st.sampled_from([2**31 - 1, 2**31, 2**63, 2**64 - 1]))


@st.composite
def piece(draw):
    text = draw(st.text(max_size=6)).encode("utf-8", "surrogatepass") if draw(st.integers(0, 9)) \
        else draw(st.binary(max_size=6))  # not UTF-8 now and then
    body = field(1, 2, text)
    if draw(st.booleans()):
        body += field(2, 5, struct.pack("<f", draw(st.floats(width=32))))
    if draw(st.booleans()):
        body += field(3, 0, varint(draw(st.one_of(st.integers(1, 6), st.integers(0, 2**64 - 1)))))
    return field(1, 2, body)


@st.composite
def spm_model(draw):
    pieces = [field(1, 2, field(1, 2, b"<unk>") + field(3, 0, varint(2)))] if draw(st.booleans()) else []
    pieces += draw(st.lists(piece(), max_size=8))
    trainer = {k: draw(IDS) for k in draw(st.sets(st.sampled_from(["unk_id", "bos_id", "eos_id", "pad_id"])))}
    data = model(pieces, **{k: v for k, v in trainer.items() if v >= 0})
    if draw(st.integers(0, 4)) == 0:  # an unknown field, or a known one with the wrong wire type
        data += field(draw(st.integers(1, 60)), draw(st.sampled_from([0, 2, 5])), draw(st.binary(max_size=5)))
    return data


@pytest.mark.malformed
def test_structured_sentencepiece_models(record_property):
    tried = []

    @settings(BOUNDED, max_examples=300)
    @given(spm_model(), st.text(max_size=12))
    def check(data, text):
        tried.append(1)
        try:
            parsed = ff_spm.parse_model(data, "hyp.model")
        except ValueError as e:
            assert "hyp.model" in str(e), str(e)
            return
        try:
            backend = ff_spm.build_t5_backend(parsed, extra_ids=2)
        except ValueError:
            return  # refused as a tokenizer (e.g. no <unk> piece): a clean error
        text = text.encode("utf-8", "replace").decode()
        backend.encode(text)

    check()
    record_property("malformed_inputs_tried", len(tried))
