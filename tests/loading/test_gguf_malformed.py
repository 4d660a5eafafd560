"""GGUF files that lie, built byte by byte: each is refused by read_gguf() with a GGUFError (a ValueError)
naming the file, the field and the value, before anything is allocated from the lying field. Never a
TypeError / RecursionError / numpy error from deep inside, never a silent load.

What gguf-py's `GGUFReader` (gguf 0.x, what transformers 5.25 reads GGUF with) does with the same files
(checked by hand): duplicate tensor names -> ValueError (so do we); duplicate keys -> KeyError; dims whose
product overflows or an offset past the end -> `ValueError: cannot reshape array of size 0 ...`; array
length 2**61 or tensor count 2**63 -> a numpy dtype ValueError; 5000-deep nested arrays -> RecursionError;
`block_count` as a string -> read fine, then a TypeError in transformers' config code. fastformers refuses
all of them with GGUFError, and also checks what gguf-py does not: key types, tokenizer array lengths
and metadata sizes the tensors contradict.
"""

from __future__ import annotations

import resource
import struct

import pytest

from fastformers.loading.gguf import GGUFError, read_gguf

U32, I32, F32, BOOL, STRING, ARRAY, U64 = 4, 5, 6, 7, 8, 9, 10


def s(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def u32(key: str, value: int) -> bytes:
    return kv(key, U32, struct.pack("<I", value))


def string(key: str, value: str) -> bytes:
    return kv(key, STRING, s(value))


def tensor_info(name: str, dims, type_id: int = 0, offset: int = 0) -> bytes:
    return s(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, type_id, offset)


def gguf_bytes(kvs=(), infos=(), data=b"", n_tensors=None, n_kv=None) -> bytes:
    kvs = [string("general.architecture", "llama"), *kvs]
    header = b"GGUF" + struct.pack("<IQQ", 3, len(infos) if n_tensors is None else n_tensors,
                                   len(kvs) if n_kv is None else n_kv)
    header += b"".join(kvs) + b"".join(infos)
    return header + b"\0" * (-len(header) % 32) + data


def unpadded(kvs, n_tensors: int, n_kv: int) -> bytes:
    """A header cut after the key-values, for appending hand-made bytes."""
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + string("general.architecture", "llama") + b"".join(kvs)


def refused(tmp_path, data: bytes, *patterns: str, name: str = "bad.gguf"):
    path = tmp_path / name
    path.write_bytes(data)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(GGUFError) as info:
        read_gguf(path).config_dict()
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grew_mb < 100, f"reading a {len(data)}-byte file grew the process by {grew_mb:.0f} MB"
    message = str(info.value)
    assert name in message
    for pattern in patterns:
        assert pattern in message, message
    return message


F32_4 = struct.pack("<4f", 1, 2, 3, 4)
SIZES = [u32("llama.embedding_length", 4), u32("llama.block_count", 1), u32("llama.attention.head_count", 1)]


def test_a_valid_file_still_reads(tmp_path):
    path = tmp_path / "ok.gguf"
    infos = [tensor_info("blk.0.attn_norm.weight", (4,)), tensor_info("token_embd.weight", (4, 1), offset=32)]
    path.write_bytes(gguf_bytes(SIZES, infos, F32_4 + b"\0" * 16 + F32_4))
    ckpt = read_gguf(path)
    assert ckpt.config_dict()["num_hidden_layers"] == 1
    assert ckpt.tensor("blk.0.attn_norm.weight").tolist() == [1, 2, 3, 4]


@pytest.mark.malformed
def test_duplicate_tensor_names_refused(tmp_path):
    infos = [tensor_info("output_norm.weight", (4,)), tensor_info("output_norm.weight", (4,), offset=32)]
    refused(tmp_path, gguf_bytes(SIZES, infos, F32_4 + b"\0" * 16 + F32_4), "tensor 'output_norm.weight' appears twice")


@pytest.mark.malformed
def test_duplicate_metadata_keys_refused(tmp_path):
    refused(tmp_path, gguf_bytes([*SIZES, u32("llama.block_count", 7)]),
            "metadata key 'llama.block_count' appears twice")


@pytest.mark.parametrize("dims, pattern", [
    ((2**32, 2**32), "more than the whole file"),          # product 2**64: wrapped to 0 in numpy int64
    ((2**63, 2), "more than the whole file"),
    ((2**64 - 1,), "more than the whole file"),
    ((1024, 1024), "more than the whole file"),            # fits in an int, not in the file
    ((1, 1, 1, 1, 1), "claims 5 dimensions"),
])
@pytest.mark.malformed
def test_lying_tensor_shapes_refused(tmp_path, dims, pattern):
    refused(tmp_path, gguf_bytes(SIZES, [tensor_info("output_norm.weight", dims)], F32_4),
            "tensor 'output_norm.weight'", pattern)


@pytest.mark.malformed
def test_unknown_type_with_a_huge_shape_refused(tmp_path):
    refused(tmp_path, gguf_bytes(SIZES, [tensor_info("output_norm.weight", (2**40,), type_id=99)], F32_4),
            "tensor 'output_norm.weight'", "more than the whole file")


@pytest.mark.malformed
@pytest.mark.parametrize("offset", [2**63, 10**6, 2**64 - 1])
def test_offsets_past_the_end_refused(tmp_path, offset):
    message = refused(tmp_path, gguf_bytes(SIZES, [tensor_info("output_norm.weight", (4,), offset=offset)], F32_4),
                      "tensor 'output_norm.weight'")
    assert "past the end of the file" in message


@pytest.mark.parametrize("entry, pattern", [
    (string("llama.block_count", "32"), "'llama.block_count' must be a positive integer, got str '32'"),
    (u32("llama.block_count", 0), "'llama.block_count' must be a positive integer, got int 0"),
    (kv("llama.embedding_length", F32, struct.pack("<f", 4.0)), "'llama.embedding_length' must be a positive integer"),
    (kv("llama.context_length", BOOL, b"\1"), "'llama.context_length' must be a positive integer, got bool"),
    (kv("llama.attention.layer_norm_rms_epsilon", F32, struct.pack("<f", float("nan"))),
     "'llama.attention.layer_norm_rms_epsilon' must be a positive number"),
    (string("llama.rope.freq_base", "1e4"), "'llama.rope.freq_base' must be a positive number"),
    (u32("general.architecture", 3), "'general.architecture' must be a string"),
    (u32("general.alignment", 0), "'general.alignment' must be a positive integer"),
    (string("tokenizer.ggml.bos_token_id", "<s>"), "'tokenizer.ggml.bos_token_id' must be an integer"),
    (kv("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", U32, 2) + struct.pack("<2I", 1, 2)),
     "'tokenizer.ggml.tokens' must be a list of strings"),
])
@pytest.mark.malformed
def test_known_keys_of_the_wrong_type_refused(tmp_path, entry, pattern):
    key = s(pattern.split("'")[1])
    if entry.startswith(s("general.architecture")):  # replaces the first key
        data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1 + len(SIZES)) + entry + b"".join(SIZES)
    else:
        data = gguf_bytes([e for e in SIZES if not e.startswith(key)] + [entry])
    refused(tmp_path, data, pattern)


@pytest.mark.malformed
def test_tokenizer_arrays_that_disagree_refused(tmp_path):
    tokens = kv("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 2) + s("a") + s("b"))
    scores = kv("tokenizer.ggml.scores", ARRAY, struct.pack("<IQ", F32, 3) + struct.pack("<3f", 0, 0, 0))
    refused(tmp_path, gguf_bytes([*SIZES, tokens, scores]), "'tokenizer.ggml.scores' has 3 entries",
            "tokenizer.ggml.tokens has 2")


@pytest.mark.malformed
def test_special_token_id_outside_the_vocabulary_refused_by_the_tokenizer(tmp_path):
    from fastformers.tokenization.gguf import tokenizer_from_gguf

    tokens = kv("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 2) + s("a") + s("b"))
    path = tmp_path / "eos.gguf"
    path.write_bytes(gguf_bytes([*SIZES, string("tokenizer.ggml.model", "gpt2"), tokens,
                                 kv("tokenizer.ggml.merges", ARRAY, struct.pack("<IQ", STRING, 0)),
                                 u32("tokenizer.ggml.eos_token_id", 5)]))
    ckpt = read_gguf(path)  # the weights do not need it
    with pytest.raises(GGUFError, match=r"eos\.gguf: tokenizer\.ggml\.eos_token_id = 5 is outside the vocabulary"):
        tokenizer_from_gguf(ckpt)


@pytest.mark.malformed
def test_metadata_sizes_the_tensors_contradict_refused(tmp_path):
    layers = [u32("llama.embedding_length", 4), u32("llama.block_count", 10**6), u32("llama.attention.head_count", 1)]
    refused(tmp_path, gguf_bytes(layers, [tensor_info("blk.0.attn_norm.weight", (4,))], F32_4),
            "'llama.block_count' is 1000000, but the file holds tensors for 1 blocks")
    wide = [u32("llama.embedding_length", 4096), u32("llama.block_count", 1), u32("llama.attention.head_count", 1)]
    refused(tmp_path, gguf_bytes(wide, [tensor_info("token_embd.weight", (4, 1))], F32_4),
            "'llama.embedding_length' is 4096, but token_embd.weight has shape [1, 4]")


@pytest.mark.malformed
def test_deeply_nested_arrays_refused_without_recursion_error(tmp_path):
    depth = 5000  # past Python's recursion limit
    payload = struct.pack("<IQ", ARRAY, 1) * depth + struct.pack("<IQ", U32, 0)
    refused(tmp_path, gguf_bytes([*SIZES, kv("general.nested", ARRAY, payload)]),
            "metadata key 'general.nested'", "nested more than 8 deep")
    # a shallow nesting is fine
    path = tmp_path / "shallow.gguf"
    path.write_bytes(gguf_bytes([*SIZES, kv("general.nested", ARRAY, struct.pack("<IQ", ARRAY, 1)
                                            + struct.pack("<IQ", U32, 2) + struct.pack("<2I", 7, 8))]))
    assert read_gguf(path).metadata["general.nested"] == [[7, 8]]


@pytest.mark.parametrize("what, data, pattern", [
    ("tensor count", lambda: gguf_bytes(SIZES, n_tensors=2**63), "tensor count is 9223372036854775808"),
    ("kv count", lambda: gguf_bytes(SIZES, n_kv=2**40), "key-value count is 1099511627776"),
    ("array length", lambda: gguf_bytes([*SIZES, kv("general.big", ARRAY, struct.pack("<IQ", U64, 2**61))]),
     "metadata key 'general.big': array length 2305843009213693952"),
    ("string array length", lambda: gguf_bytes([*SIZES, kv("general.big", ARRAY, struct.pack("<IQ", STRING, 2**40))]),
     "metadata key 'general.big': array length 1099511627776"),
    ("nested array length", lambda: gguf_bytes([*SIZES, kv("general.big", ARRAY, struct.pack("<IQ", ARRAY, 2**40))]),
     "metadata key 'general.big': array length 1099511627776"),
    ("string length", lambda: gguf_bytes([*SIZES, kv("general.name", STRING, struct.pack("<Q", 2**62))]),
     "metadata key 'general.name': string length 4611686018427387904"),
    ("key length", lambda: unpadded(SIZES, n_tensors=0, n_kv=len(SIZES) + 2) + struct.pack("<Q", 2**50) + b"\0" * 40,
     "metadata key #4: string length 1125899906842624"),
    ("tensor name length", lambda: unpadded(SIZES, n_tensors=1, n_kv=len(SIZES) + 1) + struct.pack("<Q", 2**50)
     + b"\0" * 24, "tensor #0: string length 1125899906842624"),
])
@pytest.mark.malformed
def test_absurd_counts_refused_before_allocating(tmp_path, what, data, pattern):
    refused(tmp_path, data(), pattern)


@pytest.mark.malformed
def test_truncation_names_the_field(tmp_path):
    whole = gguf_bytes([*SIZES, string("general.name", "tiny")])
    message = refused(tmp_path, whole[:len(whole) - 40], "is truncated")
    assert "metadata key" in message
