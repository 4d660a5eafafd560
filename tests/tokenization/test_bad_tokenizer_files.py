"""Untrusted tokenizer files: SentencePiece .model bytes built by hand (protobuf wire format) and JSON files with
a key twice. Every lie is a ValueError naming the file and the field. The sentencepiece library refuses a piece defined
twice too (`RuntimeError: INTERNAL: a is already defined.`); transformers' json readers keep the last of two
duplicate keys.
"""

import random
import struct
import time

import pytest

from fastformers.tokenization import sentencepiece as ff_spm
from fastformers.tokenization.readers import read_json


def varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def field(number: int, wire: int, payload: bytes) -> bytes:
    key = varint(number << 3 | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)


def piece(text: str, score: float = 0.0, kind: int = 1) -> bytes:
    return field(1, 2, field(1, 2, text.encode()) + field(2, 5, struct.pack("<f", score)) + field(3, 0, varint(kind)))


def model(pieces, **trainer) -> bytes:
    numbers = {"unk_id": 40, "bos_id": 41, "eos_id": 42, "pad_id": 43}
    spec = b"".join(field(numbers[k], 0, varint(v & (2**64 - 1))) for k, v in trainer.items())
    return b"".join(pieces) + field(2, 2, spec)


BASE = [piece("<unk>", kind=2), piece("<s>", kind=3), piece("</s>", kind=3), piece("a"), piece("b")]


def test_a_valid_hand_built_model_parses():
    proto = ff_spm.parse_model(model(BASE, pad_id=-1), "ok.model")
    assert [p.piece for p in proto.pieces] == ["<unk>", "<s>", "</s>", "a", "b"]


@pytest.mark.malformed
def test_a_piece_defined_twice_refused():
    with pytest.raises(ValueError, match=r"dup\.model: piece 'a' is defined twice \(ids 3 and 5\)"):
        ff_spm.parse_model(model([*BASE, piece("a")]), "dup.model")


@pytest.mark.parametrize("data, match", [
    (field(1, 2, b"\x0a" + varint(2**62) + b"x"), "runs past the end"),   # a string length far past the end
    (b"\x0a" + varint(2**40), "runs past the end"),                       # a message length past the end
    (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "varint too long"),
    (field(1, 2, field(1, 2, b"\xff\xfe")), "not valid UTF-8"),
    (field(1, 2, field(3, 0, varint(99))), "unknown type 99"),
    (b"\x0f", "unsupported wire type 7"),
    (b"", "holds no pieces"),
])
@pytest.mark.malformed
def test_malformed_protobuf_refused(data, match):
    with pytest.raises(ValueError, match=f"bad\\.model.*{match}"):
        ff_spm.parse_model(data, "bad.model")


@pytest.mark.malformed
def test_json_key_twice_refused(tmp_path):
    path = tmp_path / "tokenizer_config.json"
    path.write_text('{"model_max_length": 512, "model_max_length": 1000000000000}')
    with pytest.raises(ValueError, match=r"tokenizer_config\.json: the key 'model_max_length' appears twice"):
        read_json(str(path), "tokenizer config")


def test_fuzz_sentencepiece(record_property):
    """Seeded random mutations of a valid model (byte flips, truncations, varints set to extremes) for two
    seconds: each parses or raises ValueError, nothing else."""
    rng = random.Random(0)
    base = model(BASE, pad_id=-1)
    deadline, tried = time.monotonic() + 2.0, 0
    while time.monotonic() < deadline:
        data = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data)) if data else 0
            kind = rng.randrange(4)
            if kind == 0 and data:
                data[at] = rng.randrange(256)
            elif kind == 1:
                data[at:at + 1] = varint(rng.choice([0, 2**31, 2**63, 2**64 - 1, 2**69]))
            elif kind == 2:
                del data[rng.randrange(len(data) + 1):]
            else:
                data[at:at] = data[at:at + rng.randint(1, 16)]
        try:
            ff_spm.parse_model(bytes(data), "fuzz.model")
        except ValueError:
            pass
        tried += 1
    record_property("malformed_inputs_tried", tried)
    assert tried > 100
