"""Timing, environment capture and result files shared by every benchmark suite.

CPU timings on shared machines are noisy: suites interleave the providers they compare (A, B, A,
B, ...) so drift hits both alike, and report medians and ratios measured in the same run.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Sequence


def progress_enabled() -> bool:
    """Progress bars on a terminal only: not in pipes, nor with FASTFORMERS_NO_PROGRESS=1."""
    return sys.stderr.isatty() and os.environ.get("FASTFORMERS_NO_PROGRESS", "") in ("", "0")


class BenchError(Exception):
    """A user mistake or a machine limit: `fastformers bench` prints it as one line, no traceback."""


@dataclass
class Row:
    name: str
    provider: str
    shape: str
    dtype: str
    metric: str
    value: float


def environment() -> dict:
    import torch

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),  # results written into the tree are not local changes
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})",
    }
    for name in ("transformers", "triton", "tokenizers", "fastformers"):
        try:
            env[name] = __import__(name).__version__
        except ImportError:
            env[name] = None
    return env


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def time_interleaved(fns: Dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> Dict[str, List[float]]:
    """Run each provider's function `repeats` times, alternating providers; seconds per call."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def latency_rows(name: str, shape: str, dtype: str, times: Dict[str, List[float]]) -> List[Row]:
    rows = []
    for provider, ts in times.items():
        rows.append(Row(name, provider, shape, dtype, "median_ms", statistics.median(ts) * 1e3))
        rows.append(Row(name, provider, shape, dtype, "p99_ms", percentile(ts, 99) * 1e3))
    return rows


def write_results(rows: List[Row], env: dict, out_dir: str, tag: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    stamp = env["date"].replace(":", "").replace("-", "")[:15]
    path = os.path.join(out_dir, f"{stamp}-{tag}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"environment": env, "rows": [asdict(r) for r in rows]}, f, indent=2)
    with open(path[:-5] + ".md", "w", encoding="utf-8") as f:
        f.write(render_markdown(rows, env))
    return path


def render_markdown(rows: List[Row], env: dict) -> str:
    head = ", ".join(f"{k}={env[k]}" for k in ("device", "torch", "transformers", "commit", "date") if k in env)
    lines = [f"# fastformers benchmark\n\n{head}\n", "| name | provider | shape | dtype | metric | value |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.name} | {r.provider} | {r.shape} | {r.dtype} | {r.metric} | {r.value:.4g} |" for r in rows]
    return "\n".join(lines) + "\n"
