"""A seeded mutation fuzzer over valid GGUF and safetensors files (SentencePiece: tests/tokenization/
test_bad_tokenizer_files.py): random byte flips, 8-byte fields
set to extreme values, truncations, duplicated and deleted slices. Each mutant must either load or fail with the
loader's own clean error (GGUFError / ValueError / OSError); a crash, another exception type, a hang (each
test is bounded to a few seconds) or memory growth the file does not justify fails the test.

(hypothesis is not a dependency yet; this is a small deterministic stand-in: same seed, same mutants.)
"""

from __future__ import annotations

import random
import resource
import struct
import time

import pytest
import torch
from safetensors.torch import save

from fastformers.loading.gguf import GGUFError, read_gguf
from fastformers.loading.weights import checkpoint_dtype, read_tensors
from fastformers.tokenization.gguf import tokenizer_from_gguf

from test_gguf_malformed import ARRAY, F32, SIZES, STRING, gguf_bytes, kv, s, string, tensor_info, u32

SECONDS = 3.0  # per format
EXTREMES = [0, 1, 2**31 - 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]


def mutate(data: bytes, rng: random.Random, hot: int) -> bytes:
    """One to three mutations, mostly within the first `hot` bytes (the header)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(min(hot, len(out))) if out else 0
        kind = rng.randrange(6)
        if kind == 0 and out:
            out[at] = rng.randrange(256)
        elif kind == 1 and len(out) >= at + 8:
            out[at:at + 8] = struct.pack("<Q", rng.choice(EXTREMES))
        elif kind == 2 and len(out) >= at + 4:
            out[at:at + 4] = struct.pack("<I", rng.choice(EXTREMES) & 0xFFFFFFFF)
        elif kind == 3:
            del out[rng.randrange(len(out) + 1):]
        elif kind == 4:
            n = rng.randint(1, 64)
            out[at:at] = out[at:at + n]
        else:
            del out[at:at + rng.randint(1, 64)]
    return bytes(out)


def fuzz(base: bytes, hot: int, seed: int, attempt, allowed) -> int:
    """Run `attempt(mutant)` on mutants for SECONDS; returns how many were tried."""
    rng = random.Random(seed)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    deadline, tried = time.monotonic() + SECONDS, 0
    while time.monotonic() < deadline:
        mutant = mutate(base, rng, hot)
        start = time.monotonic()
        try:
            attempt(mutant)
        except allowed:
            pass
        except Exception as e:  # noqa: BLE001 - the point: name the mutant that escaped
            pytest.fail(f"mutant #{tried} (seed {seed}) raised {type(e).__name__}: {e}\nbytes: {mutant[:200]!r}")
        assert time.monotonic() - start < 2, f"mutant #{tried} (seed {seed}) took {time.monotonic() - start:.1f} s"
        tried += 1
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grew_mb < 200, f"fuzzing files of {len(base)} bytes grew the process by {grew_mb:.0f} MB"
    return tried


def valid_gguf() -> bytes:
    tokens = kv("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 3) + s("a") + s("b") + s("ab"))
    scores = kv("tokenizer.ggml.scores", ARRAY, struct.pack("<IQ", F32, 3) + struct.pack("<3f", 0, -1, -2))
    infos = [tensor_info("token_embd.weight", (4, 3)), tensor_info("blk.0.attn_norm.weight", (4,), offset=64),
             tensor_info("output.weight", (32, 1), type_id=8, offset=96)]  # Q8_0: one 34-byte block
    data = struct.pack("<12f", *range(12)) + b"\0" * 16 + struct.pack("<4f", 1, 2, 3, 4) + b"\0" * 16
    data += struct.pack("<e", 0.5) + bytes(range(32))
    merges = kv("tokenizer.ggml.merges", ARRAY, struct.pack("<IQ", STRING, 1) + s("a b"))
    return gguf_bytes([*SIZES, u32("llama.vocab_size", 3), string("general.name", "fuzz"),
                       string("tokenizer.ggml.model", "gpt2"), tokens, scores, merges,
                       u32("tokenizer.ggml.eos_token_id", 2)], infos, data)


@pytest.mark.parametrize("seed", [0, 1])
def test_fuzz_gguf(tmp_path, seed, record_property):
    path = tmp_path / "fuzz.gguf"
    base = valid_gguf()

    def attempt(mutant):
        path.write_bytes(mutant)
        with read_gguf(path) as ckpt:
            ckpt.config_dict()
            for name in ckpt.tensors:
                ckpt.tensor(name)
            dict(ckpt.iter_state_dict())
            tokenizer_from_gguf(ckpt)

    read_gguf(path.write_bytes(base) and path).close()  # the base itself is valid
    tried = fuzz(base, len(base) - 100, seed, attempt, (GGUFError,))
    record_property("malformed_inputs_tried", tried)
    print(f"gguf seed {seed}: {tried} mutants")
    assert tried > 50


@pytest.mark.parametrize("seed", [0, 1])
def test_fuzz_safetensors(tmp_path, seed, record_property):
    path = tmp_path / "fuzz.safetensors"
    base = save({"a": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(5, dtype=torch.float16),
                 "c": torch.zeros(2, 2, dtype=torch.int64)})
    hot = 8 + struct.unpack("<Q", base[:8])[0]

    def attempt(mutant):
        path.write_bytes(mutant)
        checkpoint_dtype(str(path))
        dict(read_tensors(str(path)))

    tried = fuzz(base, hot, seed, attempt, (OSError,))
    record_property("malformed_inputs_tried", tried)
    print(f"safetensors seed {seed}: {tried} mutants")
    assert tried > 50
