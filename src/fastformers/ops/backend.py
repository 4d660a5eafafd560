"""Backend selection for `fastformers.ops`: decided here, once, for every op.

Backends:
  torch   the plain-PyTorch reference; always available, runs on any device.
  triton  kernels from `fastformers.kernels`; needs the `triton` package (and a CUDA device, or
          TRITON_INTERPRET=1 for the CPU interpreter used in tests).
  cuda    the compiled extension `fastformers._C`; needs a CUDA build of the package.
  cpu     fastformers' fast paths for CPU tensors: torch's own CPU engines (oneDNN's packed GEMM, its int8 matmul
          with VNNI / AMX) and the C++ kernels of `fastformers._C` (quantized linear, RMSNorm, rotary; their
          predicates send calls elsewhere when it is not built); always available.

`FASTFORMERS_BACKEND=auto|torch|triton|cuda|cpu` sets the default; `use_backend(name)` overrides it in a
block. In `auto` mode a CUDA tensor goes to the fastest backend that implements the op (cuda, then
triton), any other tensor to cpu where the op has it, else to torch. A forced backend that is unavailable, or that
does not implement an op, raises `BackendUnavailableError`: there is no silent fallback.

Binding: an op resolves to one callable per (CUDA or not, backend in force), cached on the op. The
functional call `ops.rms_norm(x, ...)` looks the backend up on each call (it honours a changed
`FASTFORMERS_BACKEND` at once); a layer holds an `OpBinding` instead, which re-resolves only when its
input moves to or from CUDA or the backend setting changes (`use_backend`): the per-call cost is two
attribute reads and a compare. `FASTFORMERS_BACKEND` is read when a
binding resolves, so set it before running a model (or use `use_backend` to switch at run time).
Shape-dependent support predicates of a kernel still run per call, where such a kernel is picked
(in auto mode, or on a forced backend).

Determinism: `torch.use_deterministic_algorithms(True)` is the switch. An implementation registered with
`deterministic=False` (one whose bits may vary run to run, e.g. through atomics) is then skipped in auto mode
(the next backend, at the end the torch reference, serves the call) and refused when forced; torch's own ops
follow the switch themselves. Today every Triton and CUDA kernel of fastformers reduces in a fixed order
(attention backward, norm weight gradients, bias gradients, split-K quantized matmul: no atomics, which
tests/ops/test_deterministic.py checks), so none is registered as nondeterministic and results repeat bit for
bit without the switch. Tested on the CPU through the dispatch decision; not yet run on a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import logging
import os
import threading
from typing import Callable, Dict, Iterator

BACKENDS = ("auto", "torch", "triton", "cuda", "cpu")
# auto mode's preference, fastest first, by whether the tensor is on CUDA; torch ends every chain
_AUTO_ORDER = {"cuda": ("cuda", "triton"), "cpu": ("cpu",)}

logger = logging.getLogger("fastformers.ops")


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that cannot run here, or that lacks the requested op."""


def _check_name(name: str, source: str) -> str:
    name = name.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"{source}={name!r} is not a backend; choose one of {', '.join(BACKENDS)}")
    return name


class _State(threading.local):
    def __init__(self) -> None:
        self.forced: str | None = None
        # 0: the process default; every use_backend block gets a number of its own (unique across threads),
        # so a binding made under one setting never serves another
        self.generation = 0


_state = _State()
_generations = itertools.count(1)


@functools.lru_cache(maxsize=None)
def backend_status(name: str) -> str | None:
    """None when the backend can run here, else the reason it cannot."""
    if name in ("torch", "cpu"):
        return None
    if name == "triton":
        if importlib.util.find_spec("triton") is None:
            return "the 'triton' package is not installed"
        import torch

        if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
            return "no CUDA device (set TRITON_INTERPRET=1 to run Triton kernels on the CPU interpreter)"
        return None
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device"
        if importlib.util.find_spec("fastformers._C") is None:
            return "the CUDA extension fastformers._C was not built (install on a machine with nvcc and a CUDA torch)"
        return None
    raise ValueError(name)


_env_cache: tuple = (None, "auto")  # (raw FASTFORMERS_BACKEND value, checked name)


def current_backend() -> str:
    """The backend in force: use_backend(...) if inside one, else FASTFORMERS_BACKEND, else 'auto'."""
    global _env_cache
    if _state.forced is not None:
        return _state.forced
    # os.environ.get costs microseconds per call (str encoding); ops run thousands of times per
    # generated token, so read the process environment's own dict, which os.environ keeps in sync.
    raw = os.environ._data.get(b"FASTFORMERS_BACKEND") if hasattr(os.environ, "_data") else \
        os.environ.get("FASTFORMERS_BACKEND")
    if raw != _env_cache[0]:
        text = raw.decode() if isinstance(raw, bytes) else (raw or "auto")
        _env_cache = (raw, _check_name(text, "FASTFORMERS_BACKEND"))
    return _env_cache[1]


def _require(name: str) -> None:
    reason = backend_status(name)
    if reason is not None:
        raise BackendUnavailableError(f"fastformers backend {name!r} is not available: {reason}")


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force every op inside the block onto one backend (``'auto'`` restores automatic choice)."""
    name = _check_name(name, "use_backend")
    if name != "auto":
        _require(name)
    previous = _state.forced, _state.generation
    _state.forced, _state.generation = name, next(_generations)
    try:
        yield
    finally:
        _state.forced, _state.generation = previous


class Op:
    """One op: its reference implementation plus the fast implementations registered for it.

    A fast implementation may come with a predicate `unsupported(*args, **kwargs) -> str | None`
    (why this call cannot run on it). In `auto` mode such a call goes to the next backend; with a
    forced backend it raises `BackendUnavailableError` with the reason.
    """

    def __init__(self, name: str, reference: Callable, *, same_on_every_backend: bool = False) -> None:
        self.name = name
        # an op whose torch implementation is the kernel on every backend (dense linear: cuBLAS), except a cpu
        # implementation of its own for CPU tensors
        self.same_on_every_backend = same_on_every_backend
        self.impls: Dict[str, Callable] = {"torch": reference}
        self.unsupported: Dict[str, Callable] = {}
        self._lazy: Dict[str, tuple] = {}
        self._logged: set = set()
        self._resolved: Dict[tuple, Callable] = {}  # (device type, backend) -> the callable that serves it
        self.nondeterministic: set = set()  # backends whose results may vary run to run (see register)
        functools.update_wrapper(self, reference)

    def register(self, backend: str, unsupported: Callable | None = None, *,
                 deterministic: bool = True) -> Callable[[Callable], Callable]:
        """`deterministic=False`: the implementation may give different bits run to run (e.g. atomics);
        while torch.use_deterministic_algorithms(True) is on it is skipped (auto) or refused (forced)."""
        def deco(fn: Callable) -> Callable:
            self.impls[backend] = fn
            if unsupported is not None:
                self.unsupported[backend] = unsupported
            if not deterministic:
                self.nondeterministic.add(backend)
            self._resolved.clear()
            return fn
        return deco

    def register_lazy(self, backend: str, module: str, attr: str | None = None, *, deterministic: bool = True) -> None:
        """Register `module.attr` (default: the op's name), imported the first time it is picked;
        `module.<attr>_unsupported`, if present, is its predicate. `deterministic`: as in register."""
        self._lazy[backend] = (module, attr or self.name)
        if not deterministic:
            self.nondeterministic.add(backend)
        self._resolved.clear()

    def _predicate(self, backend: str) -> Callable | None:
        """The support predicate of `backend` for this op, with the determinism switch folded in for an
        implementation registered as nondeterministic (checked per call: the switch can change any time)."""
        check = self.unsupported.get(backend)
        if backend not in self.nondeterministic:
            return check

        def deterministic_or(*args, **kwargs):
            import torch

            if torch.are_deterministic_algorithms_enabled():
                return "it is not deterministic and torch.use_deterministic_algorithms(True) is on"
            return check(*args, **kwargs) if check is not None else None
        return deterministic_or

    def has(self, backend: str) -> bool:
        return backend in self.impls or backend in self._lazy

    def _load(self, backend: str) -> Callable | None:
        fn = self.impls.get(backend)
        if fn is None and backend in self._lazy:
            module_name, attr = self._lazy.pop(backend)
            module = importlib.import_module(module_name)
            fn = self.impls[backend] = getattr(module, attr)
            check = getattr(module, attr + "_unsupported", None)
            if check is not None:
                self.unsupported[backend] = check
        return fn

    def _note(self, backend: str) -> None:
        import torch

        if backend not in self._logged and not torch.compiler.is_compiling():  # Dynamo cannot trace logging
            self._logged.add(backend)
            logger.info("fastformers op %s runs on the %s backend", self.name, backend)

    def _check_forced(self, backend: str) -> None:
        """Raise unless this op can run on the forced `backend` here."""
        if not self.has(backend):
            raise BackendUnavailableError(
                f"fastformers op {self.name!r} has no {backend!r} implementation "
                f"(it has: {', '.join(sorted(set(self.impls) | set(self._lazy)))}); "
                f"use FASTFORMERS_BACKEND=auto or torch"
            )
        _require(backend)

    def _own_cpu_path(self, device_type: str, backend: str) -> bool:
        """An op that is torch's on every backend may still have a cpu path of its own (prepacked linear)."""
        return device_type == "cpu" and backend in ("auto", "cpu") and self.has("cpu")

    def choose(self, device_type: str, args: tuple = (), kwargs: dict | None = None) -> str:
        """The backend that runs this call (raises for a forced backend that cannot)."""
        backend = current_backend()
        if self.same_on_every_backend:
            if backend not in ("auto", "torch"):
                _require(backend)  # a forced backend that cannot run here is still an error
            if not self._own_cpu_path(device_type, backend):
                return "torch"
            backend = "auto"  # its cpu path where the call suits it, else torch
        if backend == "auto":
            for name in _AUTO_ORDER.get(device_type, ()):
                if self.has(name) and backend_status(name) is None:
                    self._load(name)
                    check = self._predicate(name)
                    if check is None or check(*args, **(kwargs or {})) is None:
                        return name
            return "torch"
        self._check_forced(backend)
        self._load(backend)
        check = self._predicate(backend)
        reason = check(*args, **(kwargs or {})) if check is not None else None
        if reason is not None:
            raise BackendUnavailableError(f"fastformers op {self.name!r} cannot run this call on the {backend!r} "
                                          f"backend: {reason}; use FASTFORMERS_BACKEND=auto or torch")
        return backend

    def pick(self, device_type: str, args: tuple = (), kwargs: dict | None = None) -> Callable:
        backend = self.choose(device_type, args, kwargs)
        if backend != "torch":
            self._note(backend)
        return self.impls[backend]

    def resolve(self, device_type: str, backend: str | None = None) -> Callable:
        """The callable that serves this op's calls on `device_type` tensors under `backend` (default: the
        one in force), resolved once and cached. It runs the kernel's support predicate per call only where
        the kernel has one; raises BackendUnavailableError for a forced backend that cannot run here."""
        backend = current_backend() if backend is None else backend
        fn = self._resolved.get((device_type, backend))
        if fn is None:
            fn = self._resolved[(device_type, backend)] = self._build(device_type, backend)
        return fn

    def _build(self, device_type: str, backend: str) -> Callable:
        if self.same_on_every_backend:
            if backend not in ("auto", "torch"):
                _require(backend)  # a forced backend that cannot run here is still an error
            if not self._own_cpu_path(device_type, backend):
                return self.impls["torch"]
            backend = "auto"  # its cpu path where the call suits it, else torch
        if backend == "torch":
            return self.impls["torch"]
        if backend == "auto":
            chain = []  # (name, fn, predicate), fastest first, ending with the first one without a predicate
            for name in _AUTO_ORDER.get(device_type, ()):
                if self.has(name) and backend_status(name) is None:
                    fn = self._load(name)
                    chain.append((name, fn, self._predicate(name)))
                    if chain[-1][2] is None:
                        break
            if not chain or chain[-1][2] is not None:
                chain.append(("torch", self.impls["torch"], None))
            if chain[0][0] != "torch":
                self._note(chain[0][0])
            if len(chain) == 1:
                return chain[0][1]

            def first_supported(*args, **kwargs):
                for _, fn, check in chain:
                    if check is None or check(*args, **kwargs) is None:
                        return fn(*args, **kwargs)
            return first_supported
        self._check_forced(backend)
        fn = self._load(backend)
        check = self._predicate(backend)
        self._note(backend)
        if check is None:
            return fn
        name = self.name

        def checked(*args, **kwargs):
            reason = check(*args, **kwargs)
            if reason is not None:
                raise BackendUnavailableError(f"fastformers op {name!r} cannot run this call on the {backend!r} "
                                              f"backend: {reason}; use FASTFORMERS_BACKEND=auto or torch")
            return fn(*args, **kwargs)
        return checked

    def binding(self) -> "OpBinding":
        """A per-layer handle that resolves this op once per (device type, dtype, backend setting)."""
        return OpBinding(self)

    def __call__(self, x, *args, **kwargs):
        # only CUDA or not matters to the choice (_build); x.is_cuda costs a sixth of x.device.type
        return self.resolve("cuda" if x.is_cuda else "cpu")(x, *args, **kwargs)

    def __reduce__(self) -> str:
        return self.name  # ops are module globals: pickle and deepcopy keep the one instance




class OpBinding:
    """An op as a layer holds it: the resolved callable is kept with the key it was resolved for and
    resolved again only when that key changes. The key is what the choice depends on: whether the first
    argument is a CUDA tensor (a `.to()` between devices) and the backend-setting generation (entering or
    leaving `use_backend`). A dtype change needs no new choice: kernels check dtypes per call where they
    have a support predicate. Per call: two attribute reads and a compare (~0.15 us)."""

    __slots__ = ("op", "_bound")

    def __init__(self, op: Op) -> None:
        self.op = op
        self._bound: tuple = (None, None, None)  # (is_cuda, generation, fn): one attribute, never torn

    def __call__(self, x, *args, **kwargs):
        bound = self._bound
        if bound[0] is not x.is_cuda or bound[1] != _state.generation:
            is_cuda = x.is_cuda
            bound = self._bound = (is_cuda, _state.generation, self.op.resolve("cuda" if is_cuda else "cpu"))
        return bound[2](x, *args, **kwargs)

    def __reduce__(self):
        return OpBinding, (self.op,)  # a copy starts unbound

    def __repr__(self) -> str:
        return f"OpBinding({self.op.name}, cuda={self._bound[0]}, generation={self._bound[1]})"


def op(reference: Callable) -> Op:
    """Decorator: turn a reference implementation into a dispatching op."""
    return Op(reference.__name__.removesuffix("_reference"), reference)
