"""GGUF Q8_0 / Q4_0 / Q4_1 / Q4_K blocks kept packed (fastformers/quantization/gguf.py): dequantizing the packed weight
gives exactly what loading/gguf.py's dequantization (bit-identical to gguf.quants) gives."""

from __future__ import annotations

import pytest
import torch

from fastformers import ops
from fastformers.loading.gguf import dequantize, unpermute_qk
from fastformers.quantization.gguf import gguf_quantized_weight, map_rows

TYPES = {"Q8_0": (8, 34), "Q4_0": (2, 18), "Q4_1": (3, 20), "Q4_K": (12, 144), "Q6_K": (14, 210)}
SUPER = ("Q4_K", "Q6_K")  # 256 values a block


def random_blocks(type_name: str, rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Raw bytes of a (rows, cols) tensor of random blocks with finite float16 scales (and mins)."""
    g = torch.Generator().manual_seed(seed)
    _, size = TYPES[type_name]
    n = rows * cols // (256 if type_name in SUPER else 32)
    raw = torch.randint(0, 256, (n, size), generator=g, dtype=torch.uint8)  # K types: random sub-block scales
    halves = 2 if type_name in ("Q4_1", "Q4_K") else 1
    scales = (torch.randn(n, halves, generator=g) * 0.01).to(torch.float16)
    at = 208 if type_name == "Q6_K" else 0  # Q6_K keeps its d last
    raw[:, at:at + 2 * halves] = scales.view(torch.uint8).view(n, 2 * halves)
    return raw.reshape(-1)


@pytest.mark.parametrize("type_name", list(TYPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kept_weight_dequantizes_exactly_like_gguf(type_name, dtype):
    ggml_type, _ = TYPES[type_name]
    rows, cols = 48, 512 if type_name in SUPER else 96
    raw = random_blocks(type_name, rows, cols)
    qw = gguf_quantized_weight(raw, ggml_type, (rows, cols), dtype)
    assert qw.group_size == (16 if type_name == "Q6_K" else 32) and qw.scales.dtype == dtype
    assert qw.bits == (8 if type_name in ("Q8_0", "Q6_K") else 4)
    assert (qw.mins is None) == (type_name in ("Q8_0", "Q6_K"))
    want = dequantize(raw, ggml_type, (rows, cols), torch.float32).to(dtype)
    if type_name in SUPER and dtype != torch.float32:
        # the K types' scales are products d * sc (float16 x six or eight bits): exact in float32, rounded in a
        # half-precision model
        assert float((ops.dequantize_weight(qw).float() - want.float()).abs().max()) <= 2e-3 * float(want.abs().max())
        return
    assert torch.equal(ops.dequantize_weight(qw), want)
    # the rotary row permutation llama files need, applied to the packed weight
    heads = 4
    permuted = map_rows(qw, lambda t: unpermute_qk(t, heads).contiguous())
    assert torch.equal(ops.dequantize_weight(permuted), unpermute_qk(want, heads))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="blk.0.attn_q.weight: ggml type 13 is not kept quantized"):  # Q5_K
        gguf_quantized_weight(torch.zeros(176, dtype=torch.uint8), 13, (1, 256), name="blk.0.attn_q.weight")
    with pytest.raises(ValueError, match="rows of whole 256-value blocks"):
        gguf_quantized_weight(torch.zeros(144, dtype=torch.uint8), 12, (2, 128), name="w")
    with pytest.raises(ValueError, match="w: 68 bytes of Q8_0 blocks do not hold shape"):
        gguf_quantized_weight(torch.zeros(68, dtype=torch.uint8), 8, (2, 64), name="w")
    with pytest.raises(ValueError, match="rows of whole 32-value blocks"):
        gguf_quantized_weight(torch.zeros(68, dtype=torch.uint8), 8, (2, 48), name="w")


def test_gguf_kept_packed_by_default_on_gpu_and_on_cpu_with_the_extension(monkeypatch):
    """from_pretrained(gguf_file=...) keeps Q8_0 / Q4_0 / Q4_1 / Q4_K packed when it loads onto a GPU, or onto a CPU
    where fastformers._C runs them (decided before any weight is read; checked here without a GPU);
    quantization_config=False turns that off."""
    from fastformers.modeling import _quantization_request
    from fastformers.models.llama import LlamaConfig
    from fastformers.ops import native

    gguf, cuda, cpu = object(), torch.device("cuda"), torch.device("cpu")
    qconfig, packed = _quantization_request(LlamaConfig(), None, False, False, "x", {}, gguf, cuda)
    assert qconfig.source == "gguf" and not packed
    on_cpu = _quantization_request(LlamaConfig(), None, False, False, "x", {}, gguf, cpu)
    assert (on_cpu is not None and on_cpu[0].source == "gguf") == native.available()
    monkeypatch.setattr(native, "_LOAD_ERROR", "not built")  # without the extension a CPU dequantizes
    assert _quantization_request(LlamaConfig(), None, False, False, "x", {}, gguf, cpu) is None
    assert _quantization_request(LlamaConfig(), False, False, False, "x", {}, gguf, cuda) is None
    assert _quantization_request(LlamaConfig(), False, False, False, "x", {}, gguf, cpu) is None
    qconfig, _ = _quantization_request(LlamaConfig(), None, True, False, "x", {}, gguf, cuda)  # load_in_8bit wins
    assert (qconfig.bits, qconfig.source) == (8, None)
