"""Every Triton kernel compiled for an H100 (CUDA sm_90) down to PTX and cubin, without a GPU.

The other kernel tests run the kernels in Triton's CPU interpreter, which never sees what only the GPU
compiler checks: tl.dot shapes and dtypes, layouts, shared memory, constexpr misuse. This test compiles
each kernel with Triton's own compiler for an explicit target (`triton.compile(ASTSource(...),
target=GPUTarget("cuda", 90, 32))`; ptxas comes with Triton's CUDA backend), in the configurations its
launcher picks for a GPU:

- The launchers themselves run, on meta tensors (shapes and dtypes, no data), with every public kernel of
  the family replaced by a recorder; each recorded launch (arguments, constexprs, num_warps, num_stages) is
  then compiled. Block sizes therefore come from the launchers' own helpers, and a new or changed launch
  is compiled without editing this file.
- Arguments are specialised as Triton specialises them at a launch: tensors become 16-byte aligned
  pointers (as CUDA allocations are), an int equal to 1 a constexpr, an int divisible by 16 gets
  tt.divisibility 16. Two things the launchers decide from the device are given their CUDA values: the
  interpreter-only `UPCAST` flag (bf16 dots in float32 on CPU tensors) is False, and `_target_programs`
  (backward programs per launch) counts an H100's 132 SMs.
- Each compiled kernel must have sm_90 PTX and a non-empty cubin, fit in an H100's shared memory per block
  and its register file (the checks a GPU makes when it loads the kernel); every public kernel of the
  family must have been compiled at least once. Registers and spills (bytes of stack per thread, from
  cuobjdump) are printed, not checked: `pytest -s` shows them.

The compiler needs real `@triton.jit` functions, but conftest sets TRITON_INTERPRET=1 on machines without
CUDA before the kernels are imported (that makes them interpreter objects). So the families compile in
subprocesses of this file (`python test_gpu_compile.py OUT_DIR FAMILY...`) with TRITON_INTERPRET removed
from the environment and a fresh Triton cache (every run compiles from source): one subprocess per core,
all started at once, the families shared out among them by their compile time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

FAMILIES = ("attention", "attention_backward", "norm", "activation", "rotary", "quant_matmul")
ARCH = 90  # H100
H100_SHARED_PER_BLOCK = 232448  # bytes a block may opt in to (cudaDevAttrMaxSharedMemoryPerBlockOptin)
H100_REGISTERS_PER_BLOCK = 65536
H100_SMS = 132
WORKER_TIMEOUT_S = 600


# -- the worker: runs in a subprocess as `python test_gpu_compile.py OUT_DIR FAMILY...` -------------

def _meta(*shape, dtype):
    import torch

    return torch.empty(shape, dtype=dtype, device="meta")


def _dtypes():
    import torch

    return torch.float16, torch.bfloat16, torch.float32


def _attention_launches(mod):
    """Forward launches: tiled (head dims 32 .. 256, padded 80/96, causal, key-padding mask, GQA, short
    sequences), flash-decoding (one split and several, with the reduce kernel) and varlen."""
    import torch

    f16, bf16, f32 = _dtypes()

    def tiled(dtype, d, q_len=2048, kv_len=None, heads=16, kv_heads=16, causal=False, mask=False, batch=2):
        kv_len = q_len if kv_len is None else kv_len
        q = _meta(batch, q_len, heads, d, dtype=dtype).transpose(1, 2)  # the models' transposed projection
        k = _meta(batch, kv_heads, kv_len, d, dtype=dtype)
        v = _meta(batch, kv_heads, kv_len, d, dtype=dtype)
        m = _meta(batch, kv_len, dtype=torch.bool) if mask else None
        mod._attention_launch(q, k, v, m, causal, d ** -0.5)

    tiled(f16, 32)
    tiled(f16, 64, causal=True, kv_heads=4)
    tiled(f16, 128, mask=True)
    tiled(f16, 256, causal=True)
    tiled(f32, 64, causal=True, kv_heads=4)
    tiled(f16, 80, mask=True, kv_heads=2)
    tiled(bf16, 96, causal=True)
    tiled(bf16, 128, q_len=20, causal=True, mask=True)  # short: tiles clamped to the sequence
    # flash-decoding: several splits + reduce (a long cache), one split (many sequences), q_len > 1
    tiled(f16, 128, q_len=1, kv_len=8192, heads=32, kv_heads=8, mask=True)
    tiled(bf16, 64, q_len=1, kv_len=4096, heads=32, kv_heads=8, causal=True, batch=128)
    tiled(f32, 64, q_len=4, kv_len=1000, heads=8, kv_heads=8, causal=True)
    tiled(bf16, 256, q_len=1, kv_len=32768, heads=8, kv_heads=1)

    def varlen(dtype, d, heads=16, kv_heads=16, causal=False, max_len=1024):
        total = 3 * max_len
        q = _meta(total, heads, d, dtype=dtype)
        k = _meta(total, kv_heads, d, dtype=dtype)
        v = _meta(total, kv_heads, d, dtype=dtype)
        cu = _meta(4, dtype=torch.int32)
        mod._varlen_launch(q, k, v, cu, cu, max_len, max_len, causal, d ** -0.5)

    varlen(f16, 128, causal=True, kv_heads=4)
    varlen(bf16, 64)


def _attention_backward_launches(mod):
    """Padded (causal, key-padding mask, GQA) and varlen backward, head dims 64 / 128 / 256 and 80 (short)."""
    import torch

    f16, bf16, f32 = _dtypes()

    def padded(dtype, d, q_len=1024, kv_len=None, heads=16, kv_heads=16, causal=False, mask=False, batch=2):
        kv_len = q_len if kv_len is None else kv_len
        q = _meta(batch, q_len, heads, d, dtype=dtype).transpose(1, 2)
        k = _meta(batch, kv_len, kv_heads, d, dtype=dtype).transpose(1, 2)
        v = _meta(batch, kv_len, kv_heads, d, dtype=dtype).transpose(1, 2)
        out = _meta(batch, q_len, heads, d, dtype=dtype).transpose(1, 2)
        grad = _meta(batch, heads, q_len, d, dtype=dtype)
        lse = _meta(batch, heads, q_len, dtype=torch.float32)
        m = _meta(batch, kv_len, dtype=torch.bool) if mask else None
        mod._attention_bwd(grad, q, k, v, out, lse, m, causal, d ** -0.5)

    for dtype in (f16, bf16):
        padded(dtype, 64, causal=True, kv_heads=4)
    padded(f16, 128, mask=True)
    padded(f16, 256, causal=True)
    padded(f32, 256, causal=True)  # fp32 dots are FMA loops: slow to compile (D=128 takes 25 s), one will do
    padded(f16, 80, q_len=40, kv_len=100, mask=True, causal=True)

    def varlen(dtype, d, heads=16, kv_heads=16, causal=False, max_len=1024):
        total = 3 * max_len
        q, out, grad = (_meta(total, heads, d, dtype=dtype) for _ in range(3))
        k = _meta(total, kv_heads, d, dtype=dtype)
        v = _meta(total, kv_heads, d, dtype=dtype)
        lse = _meta(heads, total, dtype=torch.float32)
        cu = _meta(4, dtype=torch.int32)
        mod._varlen_attention_bwd(grad, q, k, v, out, lse, cu, cu, max_len, max_len, causal, d ** -0.5)

    varlen(f16, 128, causal=True, kv_heads=4)
    varlen(bf16, 64)


def _norm_launches(mod):
    """LayerNorm (residual, dropout, weight/bias and their gradients) and RMSNorm (with a residual), forward and
    backward, hidden sizes 768 / 4096 / 8192 (and 65536, the largest row), short rows, the dropout mask."""
    import torch

    f16, bf16, f32 = _dtypes()
    rows = 4096
    for dtype, n in ((f16, 768), (bf16, 4096), (f32, 8192)):
        x = _meta(rows, n, dtype=dtype)
        w, b = _meta(n, dtype=dtype), _meta(n, dtype=dtype)
        seed = _meta(1, dtype=torch.int64)
        stats = _meta(rows, dtype=torch.float32)
        mod._layer_norm_launch(x, w, b, x, seed, 1e-5, 0.1)  # BERT's embeddings: dropout + residual
        mod._layer_norm_launch(x, w, b, None, None, 1e-5, 0.0)
        mod._layer_norm_bwd_launch(x, x, w, b, x, seed, stats, stats, 0.1, True, True, True)
        mod._layer_norm_bwd_launch(x, x, w, b, None, None, stats, stats, 0.0, False, True, True)
        mod._rms_norm_launch(x, w, None, 1e-6)
        mod._rms_norm_launch(x, w, x, 1e-6)
        mod._rms_norm_bwd_launch(x, x, x, w, stats, True)
        mod._rms_norm_bwd_launch(x, None, x, w, stats, False)
    mod._layer_norm_launch(_meta(3, 10, 384, dtype=f32), None, None, None, None, 1e-5, 0.0)  # short rows, no affine
    mod._layer_norm_bwd_launch(*(_meta(3, 384, dtype=f32),) * 2, None, None, None, None,
                               *(_meta(3, dtype=torch.float32),) * 2, 0.0, False, False, False)
    big = _meta(2, 65536, dtype=bf16)
    mod._rms_norm_launch(big, _meta(65536, dtype=bf16), None, 1e-6)
    mod.dropout_keep_mask(_meta(1, dtype=torch.int64), (rows, 1024), 0.1)


def _activation_launches(mod):
    """GELU (erf and tanh, with and without a bias, bias gradient) and SwiGLU, forward and backward."""
    f16, bf16, f32 = _dtypes()
    for dtype, n in ((f16, 768), (bf16, 11008), (f32, 100)):
        x = _meta(4096, n, dtype=dtype)
        bias = _meta(n, dtype=dtype)
        mod._gelu_launch(x, bias, "none")
        mod._gelu_launch(x, None, "tanh")
        mod._gelu_bwd_launch(x, x, bias, "none", True)
        mod._gelu_bwd_launch(x, x, None, "tanh", False)
        fused = _meta(4096, 2 * n, dtype=dtype)  # the halves of a fused gate/up projection
        gate, up = fused[:, :n], fused[:, n:]
        mod._silu_mul_launch(gate, up)
        mod._silu_mul_bwd_launch(x, gate, up)


def _rotary_launches(mod):
    """Full and partial rotation (pass-through features), GQA, tables in q's dtype or float32."""
    import torch

    f16, bf16, f32 = _dtypes()

    def rope(dtype, d, rot, heads=32, kv_heads=8, table=None, seq=512, backward=False):
        q = _meta(2, seq, heads, d, dtype=dtype).transpose(1, 2)
        k = _meta(2, seq, kv_heads, d, dtype=dtype).transpose(1, 2)
        table = dtype if table is None else table
        cos, sin = _meta(seq, rot, dtype=table), _meta(seq, rot, dtype=table)
        mod._rotary_launch(q, k, cos, sin, torch.promote_types(dtype, table), backward)

    for dtype in (f16, bf16, f32):
        rope(dtype, 128, 128)
        rope(dtype, 128, 128, backward=True)
    rope(bf16, 128, 128, table=f32)
    rope(f16, 80, 32, heads=32, kv_heads=32)  # phi: a partial rotation
    rope(bf16, 64, 32, backward=True)
    rope(f32, 256, 256, heads=8, kv_heads=1)


def _quant_matmul_launches(mod):
    """Weight-only int4 (groups 32/128, per channel, a group of 40) and int8 (per channel, grouped with mins)
    at decode (1 and 8 rows: GEMV, split K + reduce) and prefill (2048 rows: GEMM) on Llama-8B shapes, fp16 /
    bf16 / fp32 activations; W8A8 (activation quantization + int8 GEMM) at 1 and 2048 rows."""
    import torch

    f16, bf16, f32 = _dtypes()

    def weight_only(dtype, bits, group, rows, n_in, n_out, mins=True, bias=False):
        x = _meta(rows, n_in, dtype=dtype)
        groups = -(-n_in // (group or n_in))
        q = _meta(n_out, n_in if bits == 8 else (n_in + 1) // 2, dtype=torch.int8 if bits == 8 else torch.uint8)
        scales = _meta(n_out, groups, dtype=dtype)
        bias_t = _meta(n_out, dtype=dtype) if bias else None
        mod._quantized_linear_launch(x, q, scales, scales if mins else None, bias_t, bits, group, n_in)

    for dtype in (f16, bf16):
        for rows in (1, 8, 2048):
            weight_only(dtype, 4, 128, rows, 4096, 14336)
            weight_only(dtype, 4, 32, rows, 14336, 4096, bias=True)
            weight_only(dtype, 8, None, rows, 4096, 4096, mins=False)
    weight_only(f16, 4, None, 1, 4096, 4096)
    weight_only(f16, 4, 40, 2048, 4096, 4096)
    weight_only(f16, 8, 64, 1, 4096, 4096)
    weight_only(bf16, 8, 128, 2048, 4096, 4096, bias=True)
    for rows in (1, 8, 2048):
        weight_only(f32, 4, 128, rows, 4096, 4096)
    for dtype in (f16, bf16, f32):
        for rows in (1, 2048):
            x = _meta(rows, 4096, dtype=dtype)
            mod._w8a8_launch(x, _meta(14336, 4096, dtype=torch.int8), _meta(14336, 1, dtype=dtype),
                             _meta(14336, dtype=dtype) if rows == 1 else None)


_SCENARIOS = {
    "attention": _attention_launches,
    "attention_backward": _attention_backward_launches,
    "norm": _norm_launches,
    "activation": _activation_launches,
    "rotary": _rotary_launches,
    "quant_matmul": _quant_matmul_launches,
}


class _Recorder:
    """Stands in for a kernel in its module: `kernel[grid](*args, **kwargs)` records the launch."""

    def __init__(self, name, launches):
        self.name, self.launches = name, launches

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((self.name, args, kwargs))


def _record(family):
    """{kernel name: JITFunction}, [(kernel name, args, kwargs)] of the family's launches for a GPU."""
    import importlib
    import types

    import torch
    from triton.runtime.jit import JITFunction

    mod = importlib.import_module(f"fastformers.kernels.{family}")
    kernels = {name: fn for name, fn in vars(mod).items() if isinstance(fn, JITFunction) and not name.startswith("_")}
    assert kernels, f"no @triton.jit kernels in fastformers.kernels.{family} (still interpreter objects?)"
    launches = []
    patched = {name: _Recorder(name, launches) for name in kernels}
    if hasattr(mod, "_target_programs"):  # the launcher's own count for an H100 (132 SMs), not for meta
        target = mod._target_programs.__wrapped__  # (functools.cache'd)
        patched["_target_programs"] = lambda device: target(torch.device("cuda", 0))
    saved = {name: getattr(mod, name) for name in patched}
    properties = torch.cuda.get_device_properties
    try:
        torch.cuda.get_device_properties = lambda device=None: types.SimpleNamespace(multi_processor_count=H100_SMS)
        for name, value in patched.items():
            setattr(mod, name, value)
        _SCENARIOS[family](mod)
    finally:
        torch.cuda.get_device_properties = properties
        for name, value in saved.items():
            setattr(mod, name, value)
    return kernels, launches


def _specialise(fn, args, kwargs):
    """(signature, constexprs, attrs, options) as a launch of `fn` with these arguments gives them."""
    import torch

    names = fn.arg_names
    if len(args) > len(names):
        raise TypeError(f"{fn.__name__}: {len(args)} positional arguments for {len(names)} parameters")
    bound = dict(zip(names, args))
    for key, value in kwargs.items():
        if key in names:
            if key in bound:
                raise TypeError(f"{fn.__name__}: {key} given twice")
            bound[key] = value
    options = {key: value for key, value in kwargs.items() if key not in names}
    missing = [name for name, p in zip(names, fn.params) if name not in bound and not p.has_default]
    if missing:
        raise TypeError(f"{fn.__name__}: no value for {', '.join(missing)}")
    signature, constexprs, attrs = {}, {}, {}
    for i, (name, param) in enumerate(zip(names, fn.params)):
        value = bound.get(name, param.default)
        if param.is_constexpr:
            if name == "UPCAST":  # the interpreter-only flag: False on CUDA tensors
                value = False
            signature[name], constexprs[(i,)] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            element = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64",
                       torch.int8: "i8", torch.int16: "i16", torch.int32: "i32", torch.int64: "i64",
                       torch.uint8: "u8", torch.bool: "u1"}.get(value.dtype)
            if element is None:
                raise TypeError(f"{fn.__name__}: argument {name} is a {value.dtype} tensor")
            signature[name] = "*" + element
            attrs[(i,)] = [["tt.divisibility", 16]]  # CUDA allocations are 256-byte aligned
        elif isinstance(value, bool):
            signature[name] = "u1"
        elif isinstance(value, int):
            if value == 1 and not param.do_not_specialize:
                signature[name], constexprs[(i,)] = "constexpr", 1
                continue
            signature[name] = "i32" if -2**31 <= value < 2**31 else "i64" if -2**63 <= value < 2**63 else "u64"
            if value % 16 == 0 and not (param.do_not_specialize or param.do_not_specialize_on_alignment):
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        elif value is None:
            signature[name], constexprs[(i,)] = "constexpr", None
        else:
            raise TypeError(f"{fn.__name__}: argument {name} = {value!r} of type {type(value).__name__}")
    return signature, constexprs, attrs, options


def _describe(fn, signature, constexprs, options):
    pointers = sorted({t[1:] for t in signature.values() if t.startswith("*")})
    consts = ", ".join(f"{fn.arg_names[i[0]]}={v}" for i, v in constexprs.items())
    opts = ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{fn.__name__}[{'/'.join(pointers)}; {consts}; {opts}]"


def _resources(cubin: bytes, name: str) -> dict:
    """Registers and stack bytes (spills) per thread of the kernel, read with Triton's bundled cuobjdump."""
    import re
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas

    cuobjdump = Path(get_ptxas(ARCH).path).with_name("cuobjdump")
    if not cuobjdump.exists():
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([str(cuobjdump), "--dump-resource-usage", f.name], capture_output=True, text=True,
                             check=False).stdout
    match = re.search(rf"Function {re.escape(name)}:\s*REG:(\d+) STACK:(\d+)", out)
    return {"regs": int(match.group(1)), "stack": int(match.group(2))} if match else {}


def _error_text(e: BaseException) -> str:
    """The exception and its causes (a CompilationError's message shows the source line, its cause why)."""
    parts = []
    while e is not None and len(parts) < 4:
        parts.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return "\n  caused by ".join(parts)[-4000:]


def _compile_family(family):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernels, launches = _record(family)
    target = GPUTarget("cuda", ARCH, 32)
    seen, results = set(), []
    for name, args, kwargs in launches:
        fn = kernels[name]
        entry = {"kernel": name, "config": name, "ok": False}
        try:
            signature, constexprs, attrs, options = _specialise(fn, args, kwargs)
            entry["config"] = _describe(fn, signature, constexprs, options)
            key = repr((name, signature, constexprs, attrs, sorted(options.items())))
            if key in seen:
                continue
            seen.add(key)
            start = time.perf_counter()
            compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                                      target=target, options=options)
            entry["seconds"] = round(time.perf_counter() - start, 2)
            ptx, cubin = compiled.asm.get("ptx", ""), compiled.asm.get("cubin", b"")
            entry.update(ptx_target=next((line.split()[1] for line in ptx.splitlines()
                                          if line.startswith(".target")), None),
                         cubin_bytes=len(cubin), shared=compiled.metadata.shared,
                         num_warps=compiled.metadata.num_warps, **_resources(cubin, compiled.metadata.name))
            entry["ok"] = True
        except Exception as e:  # noqa: BLE001 -- reported (kernel, config, error) by the test
            entry["error"] = _error_text(e)
        results.append(entry)
    return {"triton": triton.__version__, "kernels": sorted(kernels), "results": results}


def _worker_main(out_dir: str, *families: str) -> None:
    """Compile the families one after another, writing OUT_DIR/FAMILY.json after each."""
    import triton

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("TRITON_INTERPRET is set: the kernels would be interpreter objects")
    if "nvidia" not in triton.backends.backends:
        raise SystemExit(f"triton {triton.__version__} has no CUDA backend (triton.backends: "
                         f"{sorted(triton.backends.backends)}); install triton from PyPI")
    for family in families:
        Path(out_dir, f"{family}.json").write_text(json.dumps(_compile_family(family), indent=1))


# -- the tests ------------------------------------------------------------------------------------

# rough compile seconds of each family (one core), to share the families out among the workers
_COST = {"attention_backward": 45, "attention": 34, "norm": 9, "activation": 7, "rotary": 4, "quant_matmul": 30}


def _share_out(families, workers):
    """Families in `workers` groups of about equal cost (the costliest first, each to the lightest group)."""
    groups = [[] for _ in range(max(1, min(workers, len(families))))]
    for family in sorted(families, key=lambda f: -_COST[f]):
        min(groups, key=lambda g: sum(_COST[f] for f in g)).append(family)
    return groups


class _Worker:
    def __init__(self, families, out_dir: Path, env):
        self.out_dir = out_dir
        self.log = open(out_dir / "worker.log", "w+")  # noqa: SIM115 -- open while the worker runs; see close()
        self.proc = subprocess.Popen([sys.executable, __file__, str(out_dir), *families], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=str(Path(__file__).parent))

    def report(self, family) -> dict:
        """The family's results, once the worker has finished; fails with the worker's output if it broke."""
        try:
            self.proc.wait(timeout=WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        out = self.out_dir / f"{family}.json"
        if self.proc.returncode != 0 or not out.exists():
            self.log.seek(0)
            pytest.fail(f"compile worker for {family} failed (exit {self.proc.returncode}):\n{self.log.read()[-6000:]}")
        return json.loads(out.read_text())

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def compile_workers(request, tmp_path_factory):
    """{family: _Worker}: the families this session tests, shared out among one subprocess per core, all
    started at once."""
    selected = {item.callspec.params.get("family") for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")}
    families = sorted(selected & set(FAMILIES)) or list(FAMILIES)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton-cache"))  # compile from source every run
    workers = {}
    for group in _share_out(families, cores):
        worker = _Worker(group, tmp_path_factory.mktemp("compile"), env)
        workers.update((family, worker) for family in group)
    yield workers
    for worker in set(workers.values()):
        worker.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_kernels_compile_for_sm90(family, compile_workers):
    report = compile_workers[family].report(family)
    results = report["results"]
    lines = [f"triton {report['triton']}, {family}: {len(results)} compiles for sm_{ARCH}"]
    for r in results:
        if r["ok"]:
            lines.append(f"  {r['seconds']:6.2f}s regs={r.get('regs', '?'):>3} spill={r.get('stack', '?'):>4}B "
                         f"smem={r['shared']:>6}B  {r['config']}")
    print("\n".join(lines))

    failed = [r for r in results if not r["ok"]]
    assert not failed, f"{len(failed)} of {len(results)} {family} kernels failed to compile for sm_{ARCH}:\n" + \
        "\n".join(f"- {r['config']}:\n  {r['error']}" for r in failed)
    compiled = {r["kernel"] for r in results}
    assert compiled == set(report["kernels"]), \
        f"kernels never launched by the {family} scenarios: {sorted(set(report['kernels']) - compiled)}"
    for r in results:
        assert r["ptx_target"] in (f"sm_{ARCH}", f"sm_{ARCH}a"), f"{r['config']}: PTX target {r['ptx_target']}"
        assert r["cubin_bytes"] > 0, f"{r['config']}: empty cubin"
        assert r["shared"] <= H100_SHARED_PER_BLOCK, \
            f"{r['config']}: {r['shared']} bytes of shared memory > {H100_SHARED_PER_BLOCK} on an H100"
        if "regs" in r:
            assert r["regs"] * r["num_warps"] * 32 <= H100_REGISTERS_PER_BLOCK, \
                f"{r['config']}: {r['regs']} registers x {r['num_warps'] * 32} threads > {H100_REGISTERS_PER_BLOCK}"


if __name__ == "__main__":
    _worker_main(*sys.argv[1:])
