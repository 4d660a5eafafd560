"""Op-layer overhead: the Python time per decode token outside the math.

A tiny Llama (hidden 16, 4 layers, float32, one thread) decodes token by token through the KV cache: its
matmuls cost next to nothing, so the time per token is what the Python around them costs (module calls,
dispatch, cache bookkeeping, the small torch ops themselves). Next to it, the dispatch cost alone: an op
whose implementation returns at once, called the way a model calls an op (`dispatch_functional_ns`: the
functional `ops.<name>(...)`; `dispatch_layer_ns`: through an `OpBinding`, as layers hold ops, when the
tree has them), minus the cost of calling the implementation directly. Each number is the minimum over
repeats (and rounds): the least disturbed measurement on a shared machine.

`--baseline REF` (a git commit) measures that commit's source tree too, in the same run: each tree runs in
its own interpreter (PYTHONPATH=<tree>/src), the two alternating round by round.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List


SHAPE = "llama h16 L4 heads2/1 vocab64, decode 1 token"


def measure(tokens: int, repeats: int) -> Dict[str, float]:
    """Run in the interpreter of the tree being measured: microseconds per token / nanoseconds per call."""
    import torch

    from fastformers.models.llama import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192)
    model = LlamaForCausalLM(config).eval()
    results: Dict[str, List[float]] = {"decode_us_per_token": []}
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first round warms up
            out = model(input_ids=torch.tensor([[1, 2, 3, 4]]), use_cache=True)
            cache, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            t0 = time.perf_counter()
            for _ in range(tokens):
                out = model(input_ids=tok, past_key_values=cache, use_cache=True)
                tok = out.logits[:, -1:].argmax(-1)
            results["decode_us_per_token"].append((time.perf_counter() - t0) / tokens * 1e6)
        results["decode_us_per_token"].pop(0)

        # dispatch alone: an op whose implementation does nothing, called as models call ops
        from fastformers.ops.backend import Op

        def nothing(x, *args, **kwargs):
            return x

        noop, x = Op("noop", nothing), torch.randn(1, 1, 16)
        calls = {"dispatch_functional_ns": lambda: noop(x, x, 1e-6)}
        if hasattr(noop, "binding"):
            bound = noop.binding()
            calls["dispatch_layer_ns"] = lambda: bound(x, x, 1e-6)

        def best(fn, n=2000):  # ns per call, the least disturbed of repeats * 3 tries
            runs = []
            for _ in range(3 * repeats):
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                runs.append((time.perf_counter() - t0) / n * 1e9)
            return min(runs)

        direct = best(lambda: nothing(x, x, 1e-6))
        for name, fn in calls.items():
            results[name] = [best(fn) - direct]
    return {k: min(v) for k, v in results.items()}  # the least disturbed repeat: this machine is shared


_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the checkout


def _baseline_tree(ref: str) -> str:
    """The source tree of git commit `ref`, extracted to a temporary folder."""
    root = _ROOT
    folder = tempfile.mkdtemp(prefix="ff-baseline-")
    archive = subprocess.run(["git", "archive", ref, "src"], cwd=root, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return os.path.join(folder, "src")


def _in_tree(src: str, tokens: int, repeats: int) -> Dict[str, float]:
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1")
    # measure() runs from this file (the tree measured may have no fastformers.bench), with that tree's fastformers
    code = (f"import json, runpy; m = runpy.run_path({os.path.abspath(__file__)!r}, run_name='overhead_probe'); "
            f"print(json.dumps(m['measure']({tokens}, {repeats})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=_ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"bench overhead in {src} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False, baseline: str | None = None) -> List[Row]:
    from .harness import Row  # (here: measure() also runs from this file alone, outside the package)

    trees = {"fastformers": os.path.join(_ROOT, "src")}
    if baseline:
        trees[f"fastformers@{baseline}"] = _baseline_tree(baseline)
    tokens, repeats, rounds = (32, 3, 1) if quick else (64, 7, 3)
    seen: Dict[str, List[Dict[str, float]]] = {name: [] for name in trees}
    for _ in range(rounds):  # alternate the trees, so that drift on a shared machine hits both
        for name, src in trees.items():
            seen[name].append(_in_tree(src, tokens, repeats))
    rows = []
    for name, results in seen.items():
        for metric in results[0]:
            value = min(r[metric] for r in results)
            rows.append(Row("op_overhead", name, SHAPE, "float32", metric, value))
    return rows
