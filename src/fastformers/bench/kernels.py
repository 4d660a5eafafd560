"""Kernels vs torch on a GPU, in one run: the two ceilings first (copy bandwidth, bf16 matmul), then
every fused op as time, a fraction of its floor, and a ratio to its torch baseline.

Rows (see ../shared/PERFORMANCE.md for the targets):
  copy, matmul           the ceilings: device-to-device copy (read + write bytes), 8192^3 bf16 matmul
  attention              fastformers (Triton) vs F.scaled_dot_product_attention (flash backend):
                         TFLOP/s at seq 1k-8k, head dim 64/128, fp16/bf16, causal and not
  decode_attention       q_len 1 over a 4k-32k KV cache: bandwidth of reading K and V, vs SDPA
  layer_norm, rms_norm   with a residual: bandwidth vs the unfused torch sequence (add, then norm)
  gelu, silu_mul         bias+GELU and SwiGLU: bandwidth vs torch
  quantized_linear       int4 (g128) / int8 (per channel) weight-only GEMV at batch 1 on Llama-8B shapes:
                         bandwidth of the packed weight, vs fp16 F.linear on the float weight; W8A8 and int4
                         at M=2048 (prefill): TFLOP/s vs fp16 F.linear
  bert_unpadding         BERT-base shapes, batch 32, lengths uniform over 16..512: unpadded vs padded
Needs a CUDA device; on a CPU it stops with a message (the interpreter would time Python, not kernels).
Not yet run on a GPU: no result of this suite exists until the device tool lends one.
"""

from __future__ import annotations

import math
from typing import Callable, List

import torch
import torch.nn.functional as F

from .harness import Row


def _ms(fn: Callable[[], object], quick: bool) -> float:
    """Median milliseconds per call (triton.testing.do_bench: CUDA events, cache flushed between runs)."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=10 if quick else 25, rep=30 if quick else 100, return_mode="median")


def _with_backend(name: str, fn: Callable[[], object]) -> Callable[[], object]:
    from fastformers import ops

    def run():
        with ops.use_backend(name):
            return fn()
    return run


def _ceilings(quick: bool) -> tuple:
    n = 1 << 28  # 512 MiB of bf16, read once and written once
    src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    copy_ms = _ms(lambda: dst.copy_(src), quick)
    copy_bw = 2 * src.numel() * src.element_size() / copy_ms / 1e9  # TB/s
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_ms = _ms(lambda: a @ a, quick)
    tflops = 2 * 8192 ** 3 / mm_ms / 1e9
    return copy_bw, tflops


def _attention(rows: List[Row], quick: bool) -> None:
    from fastformers import ops

    seqs = (1024, 4096) if quick else (1024, 2048, 4096, 8192)
    for dtype in (torch.float16, torch.bfloat16):
        for d in (64, 128):
            for seq in seqs:
                heads = 2048 // d
                batch = max(1, 16384 // seq)
                q, k, v = (torch.randn(batch, heads, seq, d, device="cuda", dtype=dtype) for _ in range(3))
                for causal in (False, True):
                    flops = 4 * batch * heads * seq * seq * d / (2 if causal else 1)
                    shape = f"b{batch} h{heads} s{seq} d{d}{' causal' if causal else ''}"
                    ours = _ms(_with_backend("triton", lambda: ops.attention(q, k, v, causal=causal)), quick)
                    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
                        theirs = _ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), quick)
                    dt = str(dtype).removeprefix("torch.")
                    rows.append(Row("attention", "fastformers", shape, dt, "tflops", flops / ours / 1e9))
                    rows.append(Row("attention", "torch-sdpa-flash", shape, dt, "tflops", flops / theirs / 1e9))
                    rows.append(Row("attention", "fastformers", shape, dt, "speedup_vs_torch", theirs / ours))


def _decode_attention(rows: List[Row], quick: bool, copy_bw: float) -> None:
    from fastformers import ops

    for kv in ((4096, 16384) if quick else (4096, 8192, 16384, 32768)):
        q = torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(1, 8, kv, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        nbytes = 2 * k.numel() * k.element_size()
        ours = _ms(_with_backend("triton", lambda: ops.attention(q, k, v, causal=True)), quick)
        theirs = _ms(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), quick)
        shape = f"b1 h32 kv_h8 kv{kv} d128"
        rows.append(Row("decode_attention", "fastformers", shape, "bfloat16", "tb_per_s", nbytes / ours / 1e9))
        rows.append(Row("decode_attention", "fastformers", shape, "bfloat16", "fraction_of_copy_bw",
                        nbytes / ours / 1e9 / copy_bw))
        rows.append(Row("decode_attention", "torch-sdpa", shape, "bfloat16", "tb_per_s", nbytes / theirs / 1e9))
        rows.append(Row("decode_attention", "fastformers", shape, "bfloat16", "speedup_vs_torch", theirs / ours))


def _bandwidth_rows(rows, name, shape, dtype, nbytes, ours_ms, torch_ms, copy_bw):
    dt = str(dtype).removeprefix("torch.")
    rows.append(Row(name, "fastformers", shape, dt, "tb_per_s", nbytes / ours_ms / 1e9))
    rows.append(Row(name, "fastformers", shape, dt, "fraction_of_copy_bw", nbytes / ours_ms / 1e9 / copy_bw))
    rows.append(Row(name, "torch", shape, dt, "tb_per_s", nbytes / torch_ms / 1e9))
    rows.append(Row(name, "fastformers", shape, dt, "speedup_vs_torch", torch_ms / ours_ms))


def _elementwise(rows: List[Row], quick: bool, copy_bw: float) -> None:
    from fastformers import ops

    for dtype in (torch.float16, torch.bfloat16):
        for tokens, hidden in (((8192, 4096),) if quick else ((4096, 768), (8192, 4096), (16384, 8192))):
            x, r = (torch.randn(tokens, hidden, device="cuda", dtype=dtype) for _ in range(2))
            w, b = torch.randn(hidden, device="cuda", dtype=dtype), torch.randn(hidden, device="cuda", dtype=dtype)
            e = x.element_size() * x.numel()
            shape = f"{tokens}x{hidden}"
            ours = _ms(_with_backend("triton", lambda: ops.layer_norm(x, w, b, 1e-5, residual=r)), quick)
            theirs = _ms(lambda: F.layer_norm(x + r, (hidden,), w, b, 1e-5), quick)
            _bandwidth_rows(rows, "layer_norm", shape + " +residual", dtype, 3 * e, ours, theirs, copy_bw)
            ours = _ms(_with_backend("triton", lambda: ops.rms_norm(x, w, 1e-6, residual=r)), quick)

            def rms_torch():
                h = x + r
                return F.rms_norm(h.float(), (hidden,), None, 1e-6).to(dtype) * w, h
            theirs = _ms(rms_torch, quick)
            _bandwidth_rows(rows, "rms_norm", shape + " +residual", dtype, 4 * e, ours, theirs, copy_bw)
            ours = _ms(_with_backend("triton", lambda: ops.gelu(x, bias=b)), quick)
            theirs = _ms(lambda: F.gelu(x + b), quick)
            _bandwidth_rows(rows, "gelu", shape + " +bias", dtype, 2 * e, ours, theirs, copy_bw)
            ours = _ms(_with_backend("triton", lambda: ops.silu_mul(x, r)), quick)
            theirs = _ms(lambda: F.silu(x) * r, quick)
            _bandwidth_rows(rows, "silu_mul", shape, dtype, 3 * e, ours, theirs, copy_bw)


def _quantized_linear(rows: List[Row], quick: bool, copy_bw: float) -> None:
    from fastformers import ops

    shapes = ((4096, 4096), (14336, 4096)) if quick else ((4096, 4096), (14336, 4096), (4096, 14336))
    providers = (("int4_g128", 4, 128, "weight_only", 1), ("int8", 8, None, "weight_only", 1),
                 ("int4_g128", 4, 128, "weight_only", 2048), ("w8a8", 8, None, "w8a8", 2048))
    for out, n in shapes:  # (out_features, in_features)
        w = torch.randn(out, n, device="cuda", dtype=torch.float16) * 0.02
        xs = {m: torch.randn(m, n, device="cuda", dtype=torch.float16) for m in (1, 2048)}
        for m, x in xs.items():  # the baseline: fp16 F.linear (cuBLAS) on the float weight
            theirs = _ms(lambda x=x, w=w: F.linear(x, w), quick)
            shape = f"M{m} {out}x{n}"
            rows.append(Row("quantized_linear", "torch-fp16", shape, "float16", "median_ms", theirs))
            metric, value = ("tb_per_s", 2 * (out * n + n + out) / theirs / 1e9) if m == 1 else \
                ("tflops", 2 * m * n * out / theirs / 1e9)
            rows.append(Row("quantized_linear", "torch-fp16", shape, "float16", metric, value))
            xs[m] = (x, theirs)
        for name, bits, group, method, m in providers:
            qw = ops.quantize_weight(w, bits=bits, group_size=group, method=method)
            x, theirs = xs[m]
            ours = _ms(_with_backend("triton", lambda x=x, qw=qw: ops.quantized_linear(x, qw)), quick)
            shape, provider = f"M{m} {out}x{n}", f"fastformers-{name}"
            rows.append(Row("quantized_linear", provider, shape, "float16", "median_ms", ours))
            rows.append(Row("quantized_linear", provider, shape, "float16", "speedup_vs_torch", theirs / ours))
            if m == 1:  # decode is bandwidth-bound: the packed weight is what moves
                nbytes = qw.nbytes() + 2 * (n + out)
                rows.append(Row("quantized_linear", provider, shape, "float16", "tb_per_s", nbytes / ours / 1e9))
                rows.append(Row("quantized_linear", provider, shape, "float16", "fraction_of_copy_bw",
                                nbytes / ours / 1e9 / copy_bw))
            else:
                rows.append(Row("quantized_linear", provider, shape, "float16", "tflops", 2 * m * n * out / ours / 1e9))
        del w, xs


def _bert_unpadding(rows: List[Row], quick: bool) -> None:
    import fastformers
    import fastformers.ops
    from fastformers.models.bert import BertConfig, BertModel

    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512)
    model = BertModel.from_config(config).to("cuda", torch.float16).eval()
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(16, 513, (32,), generator=g)
    ids = torch.randint(1000, 30000, (32, 512), generator=g).cuda()
    mask = (torch.arange(512)[None] < lengths[:, None]).long().cuda()
    pays = fastformers.ops.unpadding_pays
    with torch.inference_mode():
        unpadded = _ms(lambda: model(input_ids=ids, attention_mask=mask), quick)
        fastformers.ops.unpadding_pays = lambda x, m: False
        try:
            padded = _ms(lambda: model(input_ids=ids, attention_mask=mask), quick)
        finally:
            fastformers.ops.unpadding_pays = pays
    shape = f"b32 lengths 16..512 (mean {lengths.float().mean():.0f})"
    rows.append(Row("bert_unpadding", "fastformers-unpadded", shape, "float16", "median_ms", unpadded))
    rows.append(Row("bert_unpadding", "fastformers-padded", shape, "float16", "median_ms", padded))
    rows.append(Row("bert_unpadding", "fastformers-unpadded", shape, "float16", "speedup_vs_padded", padded / unpadded))


def run(quick: bool = False) -> List[Row]:
    if not torch.cuda.is_available():
        raise SystemExit("bench kernels needs a CUDA device: Triton on the CPU interpreter times Python, not kernels")
    copy_bw, tflops = _ceilings(quick)
    rows = [Row("copy", "torch", "512 MiB d2d", "bfloat16", "tb_per_s", copy_bw),
            Row("matmul", "torch", "8192^3", "bfloat16", "tflops", tflops)]
    _attention(rows, quick)
    _decode_attention(rows, quick, copy_bw)
    _elementwise(rows, quick, copy_bw)
    _quantized_linear(rows, quick, copy_bw)
    _bert_unpadding(rows, quick)
    assert all(math.isfinite(r.value) for r in rows)
    return rows
