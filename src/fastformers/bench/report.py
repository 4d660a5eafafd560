"""What `fastformers bench` shows and writes: a table (terminal and markdown), the JSON of every number, and a PNG
plot of latency against length or batch (matplotlib, the `plot` extra: without it the plot is skipped, with one
line saying so).

A result is a dict: {"environment", "settings", "rates" (the floor's measured rates), "rows"}; a row is one engine
at one (batch, length): {"engine", "dtype", "batch", "length", then "latency_ms" (encoders) or "prefill_ms" and
"decode_tokens_per_s" (decoders), each with its "*_floor_fraction" and "*_speedup", and "agreement" on the rows of
engines compared with the reference}.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Tuple


PLURAL = {"batch": "batches", "length": "lengths"}
STYLES = ("-", "--", ":", "-.")


def _columns(result: dict) -> List[Tuple[str, str, str]]:
    """(header, row key, format) of the table."""
    cols = [("engine", "engine", "s"), ("dtype", "dtype", "s"), ("batch", "batch", "d"), ("length", "length", "d")]
    if result["settings"]["decoder"]:
        cols += [("prefill ms", "prefill_ms", ".3g"), ("x", "prefill_speedup", ".2f"),
                 ("floor", "prefill_floor_fraction", "%"),
                 ("decode tok/s", "decode_tokens_per_s", ".4g"), ("x", "decode_speedup", ".2f"),
                 ("floor", "decode_floor_fraction", "%")]
    else:
        cols += [("latency ms", "latency_ms", ".3g"), ("x", "latency_speedup", ".2f"),
                 ("floor", "latency_floor_fraction", "%")]
    return cols + [("agree", "agreement", "agree")]


def _cell(value, fmt: str) -> str:
    if value is None:
        return ""
    if fmt == "%":
        return f"{100 * value:.3g}%"
    if fmt == "agree":
        text = "yes" if value["ok"] else "NO"
        text += f" ({value['max_rel_diff']:.1e}"
        if "tokens_identical" in value:
            text += f", tokens {value['tokens_identical']}/{value['tokens']}"
        return text + ")"
    return format(value, fmt)


def _grid(result: dict) -> Tuple[List[str], List[List[str]]]:
    cols = _columns(result)
    return [c[0] for c in cols], [[_cell(row.get(key), fmt) for _, key, fmt in cols] for row in result["rows"]]


def _heading(result: dict) -> List[str]:
    s, env, rates = result["settings"], result["environment"], result["rates"]
    lines = [f"{s['model']} ({s['what']}), {s['kind']}, {s['dtype']}"
             + (f", {s['new_tokens']} new tokens" if s["decoder"] else ""),
             f"{env['device']}, torch {env['torch']} ({env['torch_threads']} threads), transformers "
             f"{env['transformers']}, fastformers {env['fastformers']}, commit {_commit(env)}, {env['date']}",
             f"floor: copy {rates['copy_bytes_per_s'] / 1e9:.3g} GB/s, matmul "
             f"{rates['matmul_flops_per_s'] / 1e9:.3g} GFLOP/s ({rates['matmul_dtype']}); "
             "x = speedup over transformers, floor = floor time / measured time"]
    return lines + [f"note: {n}" for n in s.get("notes", [])]


def _commit(env: dict) -> str:
    if not env.get("commit"):
        return "none (not a git checkout)"
    return env["commit"][:12] + (" with local changes" if env.get("dirty") else "")


def render_table(result: dict) -> str:
    header, body = _grid(result)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([*_heading(result), "", line(header), line(["-" * w for w in widths]),
                      *(line(r) for r in body)]) + "\n"


def render_markdown(result: dict) -> str:
    header, body = _grid(result)
    head = _heading(result)
    lines = [f"# fastformers bench: {head[0]}", "", *(f"{h}  " for h in head[1:]), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def write(result: dict, out_dir: str) -> Tuple[List[str], Optional[str]]:
    """Write <stamp>-<model>-<dtype>.json / .md / .png under out_dir: (the paths written, why the plot is missing)."""
    os.makedirs(out_dir, exist_ok=True)
    s = result["settings"]
    stamp = result["environment"]["date"].replace(":", "").replace("-", "")[:15]
    model = os.path.basename(os.path.normpath(s["model"])).replace(os.sep, "-") or "model"
    base = os.path.join(out_dir, f"{stamp}-{model}-{s['dtype']}")
    with open(base + ".json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    with open(base + ".md", "w", encoding="utf-8") as f:
        f.write(render_markdown(result))
    paths = [base + ".json", base + ".md"]
    why = plot(result, base + ".png")
    if why is None:
        paths.append(base + ".png")
    return paths, why


def plot(result: dict, path: str) -> Optional[str]:
    """Latency against length (or batch, when one length), one line per engine (and batch, when both vary);
    decoders get a second panel of decode tokens/s. Returns why no plot was written, or None."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed (pip install 'fastformers[plot]')"
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    s, rows = result["settings"], result["rows"]
    x_key = "length" if len(s["lengths"]) > 1 or len(s["batches"]) == 1 else "batch"
    other = "batch" if x_key == "length" else "length"
    panels = [("prefill_ms", "prefill latency (ms)"), ("decode_tokens_per_s", "decode tokens/s")] \
        if s["decoder"] else [("latency_ms", "forward latency (ms)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    engines = list(dict.fromkeys(row["engine"] for row in rows))
    fixed_values = sorted({row[other] for row in rows})
    for ax, (key, label) in zip(axes[0], panels):
        lines: Dict[tuple, List[tuple]] = {}
        for row in rows:
            lines.setdefault((row["engine"], row["dtype"], row[other]), []).append((row[x_key], row[key]))
        for (engine, dtype, fixed), points in lines.items():  # a colour per engine, a line style per batch/length
            points.sort()
            name = f"{engine} ({dtype})" + (f", {other} {fixed}" if len(fixed_values) > 1 else "")
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name, color=f"C{engines.index(engine)}",
                    linestyle=STYLES[fixed_values.index(fixed) % len(STYLES)], marker="o")
        ax.set_xlabel("prompt length" if x_key == "length" and s["decoder"] else x_key)
        ax.set_ylabel(label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted({row[x_key] for row in rows}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    env = result["environment"]
    fig.suptitle(f"{s['model']} {s['dtype']} on {env['device']} ({env['date'][:10]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
