"""The linear op. A quantized weight (ops/quant.py's QuantizedWeight) in place of the float weight sends
the call to `quantized_linear`, so models never branch on quantization.

CPU tensors at inference (the cpu backend): a float32 / bfloat16 weight runs from a copy that oneDNN packed once
into its blocked layout -- the prepacking inference engines do at load. Measured on this project's 2-core AVX-512
CPU (2 threads): 1.3-1.6x F.linear's speed at 16 tokens for all-MiniLM-L6-v2's shapes, and its batch-1 forward
8.4 ms -> 4.8 ms; results within ~1e-6 relative of F.linear (another summation order).

The packed copy is made on a weight's first call and lives while the weight does, next to it: up to a budget
(a quarter of the memory available at the first pack, `FASTFORMERS_CPU_PREPACK_MB` to set it; 0 turns prepacking
off); weights past it run on F.linear. A changed weight packs again, seen per call from
  - autograd's version counter and the address (in-place ops, optimizer steps, load_state_dict, `param.data = t`);
  - a sample of 16 of its elements (edits through `.data`, which bypass the version counter: peft's merge does
    `weight.data += delta`, a dense change). An edit through `.data` of a few elements only may escape the
    sample: call `fastformers.weights_changed()` after one (it drops every packed copy).
Autograd (training), torch.compile (Inductor packs frozen weights itself), views made per call (GPT-2's
transposed Conv1D weight) and other dtypes stay on F.linear.

On CPUs with AVX2 but no AVX-512 a float32 weight is packed for csrc/cpu/gemm_f32.cpp's GEMM instead (plain
panels, the GELU in its epilogue): on an AVX2-only EPYC it ran 1.1-2.7x oneDNN's speed from 1 to 16 tokens
(MiniLM's and SmolLM2's shapes, its 49k-row output head included).

`linear_gelu(x, weight, bias, approximate=...)` is gelu(linear(x)) (a BERT feed-forward's first half): on the cpu
backend with a packed weight the GELU runs as oneDNN's post-op on the GEMM's output tile, saving a pass over the
(tokens, intermediate) activations; elsewhere it is ops.linear then ops.gelu, each dispatching as usual.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from .activation import gelu
from .backend import Op
from .quant import QuantizedWeight, dequantize_weight, quantized_linear, with_half_scales


def linear_reference(x, weight, bias=None):
    return F.linear(x, weight, bias)


class _Linear(Op):
    def __call__(self, x, weight, bias=None):
        if isinstance(weight, QuantizedWeight):
            return quantized_linear(x, weight, bias)
        return super().__call__(x, weight, bias)


# Dense matmul has no Triton or CUDA kernel of ours: cuBLAS (through torch) is the kernel on every
# backend, so forcing a backend leaves it alone. CPU tensors get the prepacked oneDNN path below.
linear = _Linear("linear", linear_reference, same_on_every_backend=True)

_PACKABLE = (torch.float32, torch.bfloat16)
SAMPLE = 16  # elements compared per call to notice edits that bypass the version counter


class _Packs:
    """id(weight) (or (id(weight), layout)) -> (weakref to it, version, address, sample positions, sample, packed copy,
    bytes).

    A weight's weakref callback drops its entry, and the cyclic garbage collector can run such a callback at any
    allocation, inside a locked region of this same thread included: so the lock is reentrant, a callback drops
    only the entry of its own weakref, and the byte count moves by deltas computed beforehand (a plain Lock here
    once deadlocked a test run for good)."""

    def __init__(self) -> None:
        self.entries: Dict[object, tuple] = {}
        self.lock = threading.RLock()
        self.bytes = 0
        self.budget: Optional[int] = None

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.bytes = 0

    def put(self, key, weight: torch.Tensor, state: tuple, packed, size: int) -> None:
        """entries[key] = (weakref to weight, *state, packed, size); state is (version, address, positions, sample)."""
        with self.lock:
            ref = weakref.ref(weight, lambda dead, key=key: self.drop(key, dead))
            old = self.entries.get(key)
            delta = size - (old[6] if old is not None else 0)
            self.entries[key] = (ref, *state, packed, size)
            self.bytes += delta

    def drop(self, key, ref: Optional[weakref.ref] = None) -> None:
        """Forget entries[key] (only if it is still `ref`'s, when given)."""
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None and (ref is None or entry[0] is ref):
                del self.entries[key]
                self.bytes -= entry[6]


_packs = _Packs()


def forget_packed_weights() -> None:
    """Drop every packed copy (weights_changed() calls it): the next calls pack from the weights as they are."""
    _packs.clear()


def _budget() -> int:
    if _packs.budget is None:
        mb = os.environ.get("FASTFORMERS_CPU_PREPACK_MB")
        if mb is not None:
            _packs.budget = int(float(mb) * 2**20)
        else:
            available = 8 * 2**30
            try:
                with open("/proc/meminfo", encoding="ascii") as f:
                    for line in f:
                        if line.startswith("MemAvailable:"):
                            available = int(line.split()[1]) * 1024
            except (OSError, ValueError, IndexError):
                pass
            _packs.budget = available // 4
        if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
            _packs.budget = 0
    return _packs.budget


@functools.lru_cache(maxsize=None)
def _bf16_packable() -> bool:
    """Whether oneDNN packs bfloat16 weights here: it refuses on CPUs without AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT
    ("bf16 path needs the cpu support ..."), where F.linear still runs bfloat16."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return check is not None and bool(check())


@functools.lru_cache(maxsize=None)
def gemm_f32_preferred() -> bool:
    """Whether float32 weights run on gemm_f32.cpp's GEMM (layout "gemm_f32") rather than oneDNN's: on CPUs with AVX2
    and FMA but no AVX-512. Measured on an AVX2-only EPYC (2 threads): the same ~70 GFLOP/s as oneDNN at 1024 tokens,
    1.1-2.7x its speed from 1 to 16, and nothing built per shape. On AVX-512 CPUs oneDNN's GEMM ran at ~91% of the
    FMA peak, so it stays there."""
    from . import native  # noqa: PLC0415

    return (native.available() and bool(torch.ops.fastformers_ext.gemm_f32_usable())
            and torch.backends.cpu.get_cpu_capability() != "AVX512")


def _layout(x, weight) -> str:
    """The packed layout a call runs: gemm_f32's for float32 where preferred, unless a quantized twin is attached
    (kept under oneDNN's key), else oneDNN's."""
    if x.dtype != torch.float32 or not gemm_f32_preferred():
        return "onednn"
    entry = _packs.entries.get(id(weight))
    twin = entry is not None and entry[0]() is weight and isinstance(entry[5], QuantizedWeight)
    return "onednn" if twin else "gemm_f32"


def _linear_cpu_unsupported(x, weight, bias=None) -> Optional[str]:
    if torch.compiler.is_compiling():
        return "under torch.compile (Inductor packs the weights of a frozen graph itself)"
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.numel() == 0:
        return "not a 2-D float weight"
    if x.dtype not in _PACKABLE or weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        return f"dtype {x.dtype} (prepacked: float32, bfloat16)"
    if x.dtype == torch.bfloat16 and not _bf16_packable():
        return "bfloat16 on a CPU where oneDNN packs no bfloat16 weights (it needs AVX-512 or AVX-NE-CONVERT)"
    if x.device.type != "cpu" or weight.device.type != "cpu":
        return "not on the CPU"
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or
                                    (bias is not None and bias.requires_grad)):
        return "autograd needs F.linear's backward"
    if weight._base is not None and not isinstance(weight, torch.nn.Parameter):
        return "a view made for this call (it would pack on every call)"
    if _budget() <= 0:
        return "prepacking is off (FASTFORMERS_CPU_PREPACK_MB=0, or a torch without oneDNN)"
    return None


def _sample_positions(weight: torch.Tensor) -> torch.Tensor:
    """SAMPLE (row, column) pairs spread over the whole matrix (rows evenly, columns by a large stride), as the
    row-major flat positions torch.take reads."""
    rows, cols = weight.shape
    i = torch.arange(SAMPLE)
    return (i * max(rows - 1, 0)) // max(SAMPLE - 1, 1) * cols + (i * 7919 + i * i) % max(cols, 1)


def _state(weight: torch.Tensor, positions: torch.Tensor):
    version = -1 if weight.is_inference() else weight._version  # inference tensors keep no version counter
    # torch.take gathers the 16 elements in place, whatever the weight's layout (no copy of the matrix); ~1 us
    # against ~8 us for indexing with a (rows, columns) pair, paid on every call
    return version, weight.data_ptr(), torch.take(weight.detach(), positions)


def _pack(weight: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "gemm_f32":
        return torch.ops.fastformers_ext.pack_f32(weight)
    return torch.ops.mkldnn._reorder_linear_weight(weight, None)


def packed_weight(weight: torch.Tensor, layout: str = "onednn") -> Optional[torch.Tensor]:
    """A packed copy of `weight` (made now if it has none or it changed), or None past the budget. layout "onednn":
    oneDNN's (ops.linear's CPU GEMM); "gemm_f32": fastformers_ext.pack_f32's, a plain float32 tensor (the one-call
    encoder's format F32_PACKED on AVX2 CPUs, ops/encoder.py). Each layout is kept apart."""
    key = id(weight) if layout == "onednn" else (id(weight), layout)
    entry = _packs.entries.get(key)
    if entry is not None and entry[0]() is weight:
        version, address, sample = _state(weight, entry[3])
        if version == entry[1] and address == entry[2] and torch.equal(sample, entry[4]):
            return entry[5]
        _packs.drop(key)
    size = weight.numel() * weight.element_size()
    if _packs.bytes + size > _budget():
        return None
    positions = _sample_positions(weight)
    version, address, sample = _state(weight, positions)
    with torch.no_grad():
        packed = _pack(weight.detach().contiguous(), layout)
    _packs.put(key, weight, (version, address, positions, sample), packed, size)
    return packed


class PackCheck:
    """Whether the packed copies a one-call op was given (ops.encoder_layers) still match their float weights: the
    rule of packed_weight (version counter, address, a sample of SAMPLE elements) for all of them in one pass, ~20 us
    for 24 weights against ~8 us per weight through packed_weight."""

    def __init__(self) -> None:
        self.weights: list = []
        self._inference: list = []
        self._state: tuple = ()
        self._views: list = []
        self._sample: Optional[torch.Tensor] = None

    def add(self, weight: torch.Tensor) -> None:
        w = weight.detach()  # shares the storage and the version counter
        span = 1 + sum((size - 1) * stride for size, stride in zip(w.shape, w.stride()))
        step = max(span // SAMPLE, 1)
        self.weights.append(weight)
        self._inference.append(weight.is_inference())
        self._views.append(w.as_strided((min(SAMPLE, span),), (step,)))  # elements spread over its memory

    def finish(self) -> "PackCheck":
        self._state = self._now()
        self._sample = torch.cat(self._views) if self._views else None
        return self

    def _now(self) -> tuple:
        return ([-1 if inference else w._version for w, inference in zip(self.weights, self._inference)],
                [w.data_ptr() for w in self.weights])

    def current(self) -> bool:
        return self._now() == self._state and (self._sample is None or torch.equal(torch.cat(self._views), self._sample))


def attach_quantized_twin(weight: torch.Tensor, qw: QuantizedWeight) -> bool:
    """Run `weight` from `qw`, a packed weight that dequantizes to exactly its values (a GGUF model's tied output
    head, whose float weight the embedding lookup needs, from the file's Q8_0 bytes: a quarter of the bytes to
    read per token; its scales as float16 where exact, ops.quant.with_half_scales). Kept like a oneDNN pack: a
    changed weight drops it (the float weight serves from then on). Checked on a sample of rows; returns False
    (nothing attached) when they differ or the cpu kernel cannot run it."""
    from . import native  # noqa: PLC0415

    if (native.load_error() is not None or not isinstance(weight, torch.Tensor) or weight.dim() != 2
            or tuple(qw.shape) != tuple(weight.shape) or weight.dtype != torch.float32
            or quantized_linear.unsupported["cpu"](weight[:1], qw) is not None):
        return False
    qw = with_half_scales(qw)
    rows = torch.linspace(0, weight.shape[0] - 1, 64).long().unique()
    sample = QuantizedWeight(qw.qweight[rows], qw.scales[rows], None if qw.mins is None else qw.mins[rows], qw.bits,
                             qw.group_size, qw.in_features, qw.method)
    if not torch.equal(dequantize_weight(sample, weight.dtype), weight.detach()[rows]):
        return False
    key, positions = id(weight), _sample_positions(weight)
    version, address, state = _state(weight, positions)
    _packs.put(key, weight, (version, address, positions, state), qw, qw.nbytes())
    return True


def _twin_serves(x) -> bool:
    """Whether a quantized twin runs this call: GEMVs read its bytes; many tokens run the float GEMM."""
    return x.numel() <= 16 * x.shape[-1]


@linear.register("cpu", unsupported=_linear_cpu_unsupported)
def linear_cpu(x, weight, bias=None):
    layout = _layout(x, weight)
    packed = packed_weight(weight, layout)
    if packed is None:
        return F.linear(x, weight, bias)
    if layout == "gemm_f32":
        return torch.ops.fastformers_ext.linear_f32(x, packed, weight.shape[0], bias, None, 0)
    if isinstance(packed, QuantizedWeight):
        return quantized_linear(x, packed, bias) if _twin_serves(x) else F.linear(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def cpu_quantized_weight(x, weight, bias=None) -> Optional[QuantizedWeight]:
    """The packed weight that `linear(x, weight, bias)` runs on the cpu quantized kernel for an x of this shape and
    dtype -- a quantized weight, or a float weight's quantized twin at a few tokens -- or None when the call would
    run anything else (a float GEMM, a forced backend, the reference). For code that runs the same kernel itself
    (the compiled greedy loop of models/llama.py)."""
    qw = weight
    if not isinstance(weight, QuantizedWeight):
        if linear.choose(x.device.type, (x, weight, bias)) != "cpu" or not _twin_serves(x):
            return None
        qw = packed_weight(weight)
        if not isinstance(qw, QuantizedWeight):
            return None
    return qw if quantized_linear.choose(x.device.type, (x, qw, bias)) == "cpu" else None


def linear_gelu_reference(x, weight, bias=None, *, approximate: str = "none"):
    """gelu(linear(x, weight, bias)) through the two ops (on a forced backend, its own GELU kernel runs)."""
    return gelu(linear(x, weight, bias), approximate=approximate)


# like linear: no Triton or CUDA implementation of its own (the reference runs the backend's gelu), a cpu one
linear_gelu = Op("linear_gelu", linear_gelu_reference, same_on_every_backend=True)


def _linear_gelu_cpu_unsupported(x, weight, bias=None, *, approximate: str = "none") -> Optional[str]:
    if approximate not in ("none", "tanh"):
        return f"approximate={approximate!r}"  # the reference raises the clear error
    return _linear_cpu_unsupported(x, weight, bias)


@linear_gelu.register("cpu", unsupported=_linear_gelu_cpu_unsupported)
def linear_gelu_cpu(x, weight, bias=None, *, approximate: str = "none"):
    """The packed weight's GEMM with the GELU fused (erf for "none", tanh for "tanh"; oneDNN's post-op, or gemm_f32's
    epilogue): within ~1e-6 relative of F.gelu(F.linear(...)) in float32 (another summation order, another erf)."""
    layout = _layout(x, weight)
    packed = packed_weight(weight, layout)
    if packed is None or isinstance(packed, QuantizedWeight):  # no pack, or a quantized twin: linear, then gelu
        return F.gelu(linear_cpu(x, weight, bias), approximate=approximate)
    if layout == "gemm_f32":
        return torch.ops.fastformers_ext.linear_f32(x, packed, weight.shape[0], bias, None,
                                                    1 if approximate == "none" else 2)
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "gelu", [], approximate)
