"""The physical floor of a benchmark row, from two rates measured in the same run: copy bandwidth (a large tensor
copy, bytes read + written per second) and matmul rate (large square matmuls in the run's compute dtype, laid out
as a linear layer's, FLOP/s).

A row's floor is max(bytes moved / bandwidth, FLOPs / matmul rate): no engine can read its weights faster than
memory copies them, nor multiply faster than the library's best matmul. Bytes: every weight once per forward or
decode step (embedding tables only for the rows they look up; a table that is also the output head in full),
plus the KV cache a decode step reads. FLOPs: 2 per multiply-add of each linear and token, plus attention
(QK^T and PV, causal prefill counted as the lower triangle). Activations are left out: the floor is a lower
bound, and the rows report measured / floor as a fraction.
"""

from __future__ import annotations

import statistics
from typing import Callable, Dict

import torch
from torch import nn


def timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """A function that runs fn once and returns its seconds: CUDA events after a synchronize on a GPU, the
    monotonic clock on a CPU."""
    if device.type == "cuda":
        def cuda_time(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return cuda_time

    import time

    def cpu_time(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return cpu_time


def measure_rates(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> Dict[str, float]:
    """{"copy_bytes_per_s", "matmul_flops_per_s", and the sizes used}. The copy beats the caches (CPU: 64 MiB,
    GPU: 1 GiB). The matmul rate is the best of a few square sizes (CPU 256..1024, GPU 4096, 8192; the median of
    `repeats` calls each): the fastest rate this library reaches is the floor's, and some CPU dtypes (fp16) get
    slower as matrices grow. A size whose one call takes over 0.2 s ends the climb (fp16 on a CPU)."""
    gpu = device.type == "cuda"
    clock = timer(device)
    copy_bytes = 2**30 if gpu else 2**26
    src = torch.empty(copy_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    copy_s = statistics.median(clock(lambda: dst.copy_(src)) for _ in range(repeats))
    del src, dst
    best, best_n = 0.0, 0
    for n in (4096, 8192) if gpu else (256, 512, 1024):
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        first = clock(lambda: torch.nn.functional.linear(a, b))  # x @ w.T, the layout of the models' linears
        rate = 2 * n**3 / statistics.median(clock(lambda: torch.nn.functional.linear(a, b)) for _ in range(repeats))
        if rate > best:
            best, best_n = rate, n
        if first > 0.2:
            break
    return {"copy_bytes_per_s": 2 * copy_bytes / copy_s, "matmul_flops_per_s": best,
            "copy_bytes": copy_bytes, "matmul_size": best_n, "matmul_dtype": str(dtype).removeprefix("torch.")}


class Shape:
    """What the accounting needs of a model: its config's attention shape and the bytes of its weights."""

    def __init__(self, model: nn.Module, kv_dtype: torch.dtype) -> None:
        cfg = model.config
        self.layers = cfg.num_hidden_layers
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.kv_elem = torch.empty((), dtype=kv_dtype).element_size()
        self.full_bytes, self.table_row_bytes, self.table_rows = _weight_bytes(model)

    def weight_bytes(self, tokens: int) -> int:
        """Weights read by one forward over `tokens` tokens: every table row looked up at most once."""
        return self.full_bytes + sum(min(tokens, rows) * row for rows, row in zip(self.table_rows,
                                                                                  self.table_row_bytes))

    def attention_flops(self, batch: int, queries: int, keys: float) -> float:
        return 4.0 * self.layers * batch * self.heads * self.head_dim * queries * keys

    def kv_bytes(self, batch: int, context: int) -> int:
        return 2 * self.layers * batch * self.kv_heads * self.head_dim * context * self.kv_elem


def _weight_bytes(model: nn.Module):
    """(bytes of tensors read in full, [bytes per row of each embedding-only table], [rows of each table]).
    Tensors are met once (tied weights share storage); quantized layers count their packed buffers."""
    users: Dict[int, list] = {}
    tensors: Dict[int, torch.Tensor] = {}
    for module in model.modules():
        persistent = [b for name, b in module.named_buffers(recurse=False)
                      if name not in module._non_persistent_buffers_set]
        for t in [*module.parameters(recurse=False), *persistent]:
            if t is None or t.device.type == "meta":
                continue
            key = t.data_ptr()
            tensors[key] = t
            users.setdefault(key, []).append(isinstance(module, nn.Embedding))
    full, row_bytes, rows = 0, [], []
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if all(users[key]) and t.dim() == 2:  # only looked up: a few rows per token
            row_bytes.append(nbytes // t.shape[0])
            rows.append(t.shape[0])
        else:
            full += nbytes
    return full, row_bytes, rows


def matmul_params(model: nn.Module) -> tuple:
    """(parameters of the linears that every token goes through, parameters of the output head): the FLOPs of a
    float model, the same for every engine. Embedding tables are lookups, not matmuls."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_w = head.weight if head is not None else None
    tables = {m.weight.data_ptr() for m in model.modules() if isinstance(m, nn.Embedding)}
    body = 0
    for module in model.modules():
        if isinstance(module, nn.Embedding) or module is head:
            continue
        for p in module.parameters(recurse=False):
            if p.dim() >= 2 and p.data_ptr() not in tables:
                body += p.numel()
    return body, (head_w.numel() if head_w is not None else 0)


def encoder_cost(shape: Shape, body: int, batch: int, length: int):
    """(bytes, FLOPs) of one encoder forward."""
    tokens = batch * length
    return shape.weight_bytes(tokens), 2.0 * body * tokens + shape.attention_flops(batch, length, length)


def prefill_cost(shape: Shape, body: int, head: int, batch: int, length: int):
    """(bytes, FLOPs) of the prompt's forward: causal attention, the output head on the last position only."""
    tokens = batch * length
    flops = 2.0 * body * tokens + 2.0 * head * batch + shape.attention_flops(batch, length, (length + 1) / 2)
    return shape.weight_bytes(tokens), flops


def decode_floor_s(shape: Shape, body: int, head: int, batch: int, prompt: int, steps: int,
                   rates: Dict[str, float]) -> float:
    """The floor of `steps` decode steps after a prompt (step i feeds one token and reads a cache of prompt + i)."""
    total = 0.0
    for i in range(1, steps + 1):
        context = prompt + i
        nbytes = shape.weight_bytes(batch) + shape.kv_bytes(batch, context)
        flops = 2.0 * (body + head) * batch + shape.attention_flops(batch, 1, context)
        total += floor_s(nbytes, flops, rates)
    return total


def floor_s(nbytes: float, flops: float, rates: Dict[str, float]) -> float:
    return max(nbytes / rates["copy_bytes_per_s"], flops / rates["matmul_flops_per_s"])
