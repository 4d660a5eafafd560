"""Property-based tests (hypothesis) of the loaders, structured generation complementing the byte mutator of
test_fuzz_headers.py: config.json with any known key set to arbitrary JSON; GGUF headers built from random
key-values (right and wrong value types) and tensor infos (random dims, types, offsets); safetensors headers
with random dtypes, shapes and offsets. Each loads or fails with the loader's own clean error; a crash, another
exception type, a slow example (deadline) or memory growth the file does not justify fails.

Bounded: a fixed number of examples each, derandomized (the same examples every run), no example database.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import fastformers
from conftest import build_reference
from fastformers.loading.gguf import GGUFError, read_gguf
from fastformers.loading.weights import read_tensors

from test_gguf_malformed import ARRAY, STRING, gguf_bytes, kv, s, tensor_info

BOUNDED = settings(deadline=3000, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.sampled_from([0, -1, 2**31, 2**63, 10**12])
    | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)


class Memory:
    """Peak RSS growth over a block (ru_maxrss: never shrinks, so it sees every transient allocation)."""

    def __enter__(self):
        self.before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        self.grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.before) / 1024


# -- config.json -----------------------------------------------------------------------------------------------
FAMILIES = {
    "llama": ("AutoModelForCausalLM", dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=37, vocab_size=99, max_position_embeddings=16)),
    "bert": ("AutoModel", dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                               vocab_size=99, max_position_embeddings=16)),
    "gpt2": ("AutoModelForCausalLM", dict(n_embd=32, n_layer=1, n_head=2, vocab_size=99, n_positions=16)),
    "t5": ("AutoModelForSeq2SeqLM", dict(d_model=32, num_layers=1, num_heads=2, d_ff=37, vocab_size=99, d_kv=16)),
}
# a clear error names the key; these are clear without it: the weights' shapes against the config (the file and
# the shapes named), an activation function by its role
CLEAR_WITHOUT_THE_KEY = ("do not match the config of", "hidden_act=")


@pytest.mark.malformed
@pytest.mark.parametrize("family", FAMILIES)
def test_config_json_with_any_known_key_set_to_arbitrary_json(family, tmp_path, record_property):
    task, sizes = FAMILIES[family]
    path, _ = build_reference(family, task, tmp_path, **sizes)
    base = json.loads((path / "config.json").read_text())
    keys = sorted(k for k in base if k != "model_type")
    load = getattr(fastformers, task).from_pretrained
    tried = []

    @settings(BOUNDED, max_examples=60)
    @given(st.sampled_from(keys), JSON)
    def check(key, value):
        tried.append(1)
        (path / "config.json").write_text(json.dumps({**base, key: value}))  # NaN / Infinity: JSON extensions
        logging.disable(logging.WARNING)
        try:
            with Memory() as memory:
                load(path)
        except (ValueError, TypeError, OSError, KeyError, NotImplementedError) as e:
            message = str(e)
            assert key in message or any(m in message for m in CLEAR_WITHOUT_THE_KEY), \
                f"{key}={value!r}: {type(e).__name__}: {message}"
        finally:
            logging.disable(logging.NOTSET)
        assert memory.grew_mb < 100, f"{key}={value!r} grew the process by {memory.grew_mb:.0f} MB"

    check()
    record_property("malformed_inputs_tried", len(tried))


# -- GGUF headers ----------------------------------------------------------------------------------------------
KNOWN_KEYS = ["llama.embedding_length", "llama.block_count", "llama.attention.head_count",
              "llama.attention.head_count_kv", "llama.context_length", "llama.feed_forward_length",
              "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "llama.vocab_size",
              "tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
              "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
              "tokenizer.ggml.padding_token_id", "general.alignment", "general.name"]
SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
EXTREME = st.sampled_from([0, 1, 2, 3, 4, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1])


@st.composite
def gguf_value(draw, depth=0):
    """(type id, payload bytes): a scalar, a string or an array (nested up to 3 deep), or a lying type id."""
    kind = draw(st.sampled_from(["scalar", "string", "array", "badtype"] if depth < 3 else ["scalar", "string"]))
    if kind == "scalar":
        vtype = draw(st.sampled_from(sorted(SCALAR_FORMATS)))
        fmt = SCALAR_FORMATS[vtype]
        if fmt[-1] in "fd":
            value = draw(st.floats(width=32 if fmt[-1] == "f" else 64))
        elif fmt[-1] == "?":
            value = draw(st.booleans())
        else:
            bits = struct.calcsize(fmt) * 8
            lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if fmt[-1].islower() else (0, 2**bits - 1)
            value = draw(st.integers(lo, hi))
        return vtype, struct.pack(fmt, value)
    if kind == "string":
        text = draw(st.text(max_size=8)).encode("utf-8", "surrogatepass")
        length = draw(st.one_of(st.just(len(text)), EXTREME))
        return STRING, struct.pack("<Q", length) + text
    if kind == "array":
        items = draw(st.lists(gguf_value(depth + 1), max_size=3))
        etype = items[0][0] if items else draw(st.sampled_from(sorted(SCALAR_FORMATS)))
        count = draw(st.one_of(st.just(len(items)), EXTREME))
        return ARRAY, struct.pack("<IQ", etype, count) + b"".join(p for _, p in items)
    return draw(st.integers(13, 2**32 - 1)), draw(st.binary(max_size=8))


@st.composite
def gguf_file(draw):
    kvs = [kv(draw(st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=10))), *draw(gguf_value()))
           for _ in range(draw(st.sampled_from([0, 0, 1, 2, 6])))]
    if draw(st.booleans()):  # honest sizes (so that files get past the header), each tensor F32 and in bounds
        kvs += [kv(key, 4, struct.pack("<I", draw(st.integers(1, 4)))) for key in KNOWN_KEYS[:3]]
    infos, data = [], b""
    for i in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["token_embd.weight", "output.weight", f"blk.{i}.attn_norm.weight", "x"]))
        if draw(st.integers(0, 3)):  # honest: an F32 tensor whose bytes are in the data section
            dims = draw(st.lists(st.integers(1, 4), min_size=1, max_size=2))
            infos.append(tensor_info(name, dims, 0, len(data)))
            data += draw(st.binary(min_size=4 * math.prod(dims), max_size=4 * math.prod(dims)))
            data += b"\0" * (-len(data) % 32)
            continue
        dims = draw(st.lists(st.one_of(st.integers(0, 40), EXTREME), min_size=0, max_size=5))
        type_id = draw(st.one_of(st.sampled_from([0, 1, 2, 3, 8, 12, 14, 30]), st.integers(0, 2**32 - 1)))
        offset = draw(st.one_of(st.sampled_from([0, 32, 64, 96]), EXTREME))
        infos.append(tensor_info(name, dims, type_id, offset))
    data += draw(st.binary(max_size=64))
    counts = {} if draw(st.integers(0, 3)) else draw(st.one_of(st.fixed_dictionaries({"n_tensors": EXTREME}),
                                                                st.fixed_dictionaries({"n_kv": EXTREME})))
    return gguf_bytes(kvs, infos, data, **counts)


@pytest.mark.malformed
def test_structured_gguf_headers(tmp_path, record_property):
    path = tmp_path / "structured.gguf"
    tried = []

    @settings(BOUNDED, max_examples=300)
    @given(gguf_file())
    def check(data):
        tried.append(1)
        path.write_bytes(data)
        with Memory() as memory:
            try:
                with read_gguf(path) as ckpt:
                    ckpt.config_dict()
                    for _ in ckpt.iter_state_dict():
                        pass
            except GGUFError as e:
                assert "structured.gguf" in str(e), str(e)
        assert memory.grew_mb < 100, f"a {len(data)}-byte file grew the process by {memory.grew_mb:.0f} MB"

    check()
    record_property("malformed_inputs_tried", len(tried))


# -- safetensors headers ---------------------------------------------------------------------------------------
DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "X"]


@st.composite
def safetensors_file(draw):
    header = {}
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.one_of(st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
                                                JSON))
    end = 0
    for i in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 2)):  # honest: a valid entry, its bytes right after the previous one's
            dtype, width = draw(st.sampled_from([("F32", 4), ("F16", 2), ("I64", 8), ("U8", 1)]))
            shape = draw(st.lists(st.integers(0, 4), max_size=3))
            header[f"t{i}"] = {"dtype": dtype, "shape": shape,
                               "data_offsets": [end, end + width * math.prod(shape)]}
            end += width * math.prod(shape)
            continue
        entry = {"dtype": draw(st.one_of(st.sampled_from(DTYPES), JSON)),
                 "shape": draw(st.one_of(st.lists(st.one_of(st.integers(0, 8), EXTREME, st.integers(-5, -1)),
                                                  max_size=4), JSON)),
                 "data_offsets": draw(st.one_of(st.lists(st.one_of(st.integers(0, 64), EXTREME), min_size=2,
                                                         max_size=2), JSON))}
        header[draw(st.sampled_from(["a", "b", f"t{i}"]))] = entry
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    length = draw(st.one_of(st.just(len(raw)), EXTREME))
    return struct.pack("<Q", length) + raw + draw(st.binary(min_size=end, max_size=end + 8))


@pytest.mark.malformed
def test_structured_safetensors_headers(tmp_path, record_property):
    path = tmp_path / "structured.safetensors"
    tried = []

    @settings(BOUNDED, max_examples=300)
    @given(safetensors_file())
    def check(data):
        tried.append(1)
        path.write_bytes(data)
        with Memory() as memory:
            try:
                for _, tensor in read_tensors(str(path)):
                    assert isinstance(tensor, torch.Tensor)
            except OSError as e:
                assert "structured.safetensors" in str(e), str(e)
        assert memory.grew_mb < 100, f"a {len(data)}-byte file grew the process by {memory.grew_mb:.0f} MB"

    check()
    record_property("malformed_inputs_tried", len(tried))
