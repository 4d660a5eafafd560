"""Progress bars while a large checkpoint loads: per byte for safetensors / .bin files, per tensor for GGUF files.

Shown only when stderr is a terminal and the load is expected to take over about a second (MIN_BYTES of files of
that kind); never in pipes, logs or tests, nor with FASTFORMERS_NO_PROGRESS=1 or HF_HUB_DISABLE_PROGRESS_BARS=1.
The bar (tqdm, which huggingface_hub brings) is cleared when the load ends.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TextIO

# files smaller than this load in about a second or less (measured on one CPU core: safetensors read at ~1 GB/s;
# GGUF tensors are dequantized one by one, SmolLM2-135M's 98 MB Q4_1 file in ~1-2 s): no bar for them
MIN_BYTES = {"weights": 512 * 2**20, "gguf": 32 * 2**20}
DISABLE_VARIABLES = ("FASTFORMERS_NO_PROGRESS", "HF_HUB_DISABLE_PROGRESS_BARS")


def _truthy(value: Optional[str]) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no", "off")


def progress_enabled(total_bytes: int, kind: str = "weights", stream: Optional[TextIO] = None) -> bool:
    """Whether loading `total_bytes` of `kind` ("weights" or "gguf") files shows a bar on `stream` (stderr)."""
    return total_bytes >= MIN_BYTES[kind] and bars_allowed(stream)


def bars_allowed(stream: Optional[TextIO] = None) -> bool:
    """Whether any progress bar may show on `stream` (stderr): a terminal, and no opt-out variable set. For other
    long steps (benchmarks) that decide for themselves what is long."""
    if any(_truthy(os.environ.get(name)) for name in DISABLE_VARIABLES):
        return False
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


class LoadProgress:
    """One bar over the files of a load: `wrap` each file's (name, tensor) iterator, `close` at the end (or use it
    as a context manager). Without a bar, `wrap` hands the iterator back unchanged."""

    def __init__(self, paths: Sequence[str], kind: str = "weights", total: Optional[int] = None,
                 stream: Optional[TextIO] = None) -> None:
        size = sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
        self.bar = None
        if progress_enabled(size, kind, stream):
            try:
                from tqdm import tqdm
            except ImportError:  # tqdm comes with huggingface_hub; without it, no bar
                return
            name = os.path.basename(paths[0]) + (f" (+{len(paths) - 1} files)" if len(paths) > 1 else "")
            unit = {"unit": "tensor"} if kind == "gguf" else {"unit": "B", "unit_scale": True, "unit_divisor": 1024}
            self.bar = tqdm(total=total if kind == "gguf" else size, desc=f"loading {name}", leave=False,
                            file=sys.stderr if stream is None else stream, dynamic_ncols=True, **unit)

    def wrap(self, pieces: Iterable[Any], size: Optional[Callable[[Any], int]] = None) -> Iterable[Any]:
        """`pieces` ((name, tensor) pairs), advancing the bar by `size(piece)` (default: the tensor's bytes)."""
        if self.bar is None:
            return pieces
        return self._advance(pieces, size or _tensor_bytes)

    def _advance(self, pieces: Iterable[Any], size: Callable[[Any], int]) -> Iterator[Any]:
        for piece in pieces:
            yield piece
            self.bar.update(size(piece))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "LoadProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _tensor_bytes(piece: Any) -> int:
    tensor = piece[1]
    return tensor.numel() * tensor.element_size() if hasattr(tensor, "element_size") else 0
