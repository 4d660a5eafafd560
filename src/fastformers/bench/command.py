"""`fastformers bench`: one model, transformers and fastformers side by side in one process.

  fastformers bench --preset bert-tiny                     random weights in BERT-tiny's shapes
  fastformers bench --model FOLDER_OR_HUB_ID [--gguf-file F] --dtype fp16 --batch 1,8 --length 16,128

Both engines load the same checkpoint folder (a preset is built once, with seeded random weights, into a temporary
folder or --cache-dir). For every (batch, length) the outputs are checked to agree first (encoder hidden states or
last-position logits within a tolerance per dtype; greedy tokens for decoders), then the engines are timed
alternately, call by call, and each row reports medians after warm-up, the speedup over transformers and the
fraction of the physical floor (floor.py) measured in the same run. Also reachable as
`python -m fastformers.bench --preset NAME` / `--model M`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from typing import Dict, List, Optional

import torch

from . import floor, harness, presets, report
from .engines import ENGINES, QUANTIZED, REFERENCE
from .harness import BenchError, environment, progress_enabled

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Largest |a - b| / max |reference| accepted. fp32: kernel reordering only (measured ~1e-6). fp16 / bf16: a few
# ulps of the half type (2^-11, 2^-8) grown through the layers. int8 / int4: fastformers' weights are quantized,
# transformers' stay float, so the difference is the quantization error itself (measured on the presets; int4 with
# groups of 128 errs ~10x more than int8 per channel).
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2, "int8": 5e-2, "int4": 2.5e-1}
ENCODER_TYPES = {"bert", "distilbert", "roberta", "xlm-roberta", "electra", "albert", "deberta", "deberta-v2",
                 "mpnet", "camembert", "modernbert"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Benchmark one model in transformers and fastformers side by side: output agreement, "
                          "latency (decoders: prefill and decode tokens/s), speedup and fraction of the physical "
                          "floor.")
    parser.epilog = "e.g. --preset bert-tiny; --model sentence-transformers/all-MiniLM-L6-v2 --dtype fp16 --out DIR"
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--model", metavar="M", help="checkpoint folder or hub id")
    what.add_argument("--preset", metavar="NAME",
                      help=f"random weights in a known model's shapes: {presets.preset_names()}")
    parser.add_argument("--gguf-file", metavar="FILE", help="GGUF file inside --model")
    parser.add_argument("--dtype", choices=[*DTYPES, *QUANTIZED],
                        help="fp16 on a GPU, fp32 on a CPU by default; int8 / int4 quantize fastformers' linears "
                             "(transformers then runs the float dtype)")
    parser.add_argument("--batch", default="1,8", metavar="B[,B...]",
                        help="comma-separated batch sizes (default 1,8)")
    parser.add_argument("--length", default="16,128", metavar="L[,L...]",
                        help="comma-separated (prompt) lengths (default 16,128)")
    parser.add_argument("--new-tokens", type=int, default=32, metavar="N",
                        help="decoders: greedy tokens per generate (default 32)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--repeats", type=int, default=10, metavar="N",
                        help="timed calls per engine and row (default 10)")
    parser.add_argument("--warmup", type=int, default=2, metavar="N",
                        help="untimed calls per engine and row first (default 2)")
    parser.add_argument("--out", metavar="DIR", help="also write JSON, markdown and a PNG plot into this folder")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="keep built presets here (default: a temporary folder, removed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the preset's weights and the input ids")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except BenchError as e:
        print(f"fastformers bench: {e}", file=sys.stderr)
        return 2


def _positive_list(text: str, flag: str) -> List[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise BenchError(f"{flag} takes comma-separated positive integers, got {text!r}")
    return sorted(set(values))


def _device(name: Optional[str]) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BenchError(f"--device {name!r} is not a device name; use cpu or cuda[:N]") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            have = "cpu" + "".join(f", cuda:{i}" for i in range(count))
            raise BenchError(f"--device {name}: not available here; available: {have}")
    elif device.type != "cpu":
        raise BenchError(f"--device {name}: fastformers bench runs on cpu or cuda")
    return device


def _check_args(args) -> None:
    if not args.model and not args.preset:
        raise BenchError("name a model: --preset NAME (" + presets.preset_names() + ") or --model FOLDER_OR_HUB_ID")
    if args.gguf_file and not args.model:
        raise BenchError("--gguf-file names a file inside --model; pass --model too")
    for flag, value, low in (("--new-tokens", args.new_tokens, 2), ("--repeats", args.repeats, 1),
                             ("--warmup", args.warmup, 0)):
        if value < low:
            raise BenchError(f"{flag} must be at least {low}, got {value}")


def _is_decoder(config, gguf_file: Optional[str]) -> bool:
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return True
    return gguf_file is not None or config.model_type not in ENCODER_TYPES


def _environment() -> dict:
    env = environment()
    # a commit only where this source file is tracked: a package installed into a checkout's .venv is not it
    tracked = harness._git("ls-files", os.path.basename(harness.__file__)) not in ("", "unknown")
    env["commit"] = env["commit"] if tracked and env["commit"] not in ("", "unknown") else None
    env["dirty"] = env["dirty"] if env["commit"] else None
    env["cpu"] = _cpu_model()
    if env["device"].startswith("cpu"):
        env["device"] = f"cpu ({env['cpu']}, {env['cpu_count']} cores)"
    return env


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _progress(total: int):
    """A tqdm bar on a terminal (stderr); none in pipes or with FASTFORMERS_NO_PROGRESS=1."""
    from tqdm.auto import tqdm  # tqdm comes with huggingface_hub, a dependency

    return tqdm(total=total, disable=not progress_enabled(), file=sys.stderr, leave=False, unit="step", desc="fastformers bench")


def _run(args) -> int:
    _check_args(args)
    batches = _positive_list(args.batch, "--batch")
    lengths = _positive_list(args.length, "--length")
    device = _device(args.device)
    dtype = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    float_dtype = DTYPES.get(dtype) or (torch.float16 if device.type == "cuda" else torch.float32)
    notes = []
    if dtype in QUANTIZED and device.type == "cpu":
        notes.append(f"{dtype} on a CPU runs the torch reference of the quantized matmul (it dequantizes every "
                     "weight per call): timings of the GPU kernels need a GPU")
    with tempfile.TemporaryDirectory(prefix="fastformers-bench-") as tmp:
        bar = _progress(3 + len(batches) * len(lengths))
        try:
            return _bench(args, device, dtype, float_dtype, batches, lengths, notes, args.cache_dir or tmp, bar)
        finally:
            bar.close()


def _bench(args, device, dtype, float_dtype, batches, lengths, notes, cache_dir, bar) -> int:
    from .. import AutoConfig

    gguf_file = args.gguf_file
    if args.preset:
        preset = presets.lookup(args.preset)
        config, decoder = AutoConfig.for_model(preset.model_type, **preset.config), preset.decoder
        what = f"random weights, shapes of {preset.shape_of}"
    else:
        try:
            config = AutoConfig.from_pretrained(args.model, gguf_file=gguf_file)
        except (OSError, ValueError) as e:
            raise BenchError(f"--model {args.model}: {str(e).splitlines()[0]}") from None
        decoder, what = _is_decoder(config, gguf_file), "checkpoint"
    limit = getattr(config, "max_position_embeddings", None)
    if limit and max(lengths) + (args.new_tokens if decoder else 0) > limit:
        raise BenchError(f"--length {max(lengths)}{' + --new-tokens ' + str(args.new_tokens) if decoder else ''} "
                         f"exceeds the model's {limit} positions")
    if args.preset:
        running = [e for e in ENGINES if not (hasattr(e, "unavailable")
                                              and e.unavailable(config.model_type, decoder, dtype, device))]
        presets.check_fits(args.preset, float_dtype, device, engines=len(running))
        bar.set_description(f"building {args.preset}")
        path = presets.build_checkpoint(args.preset, float_dtype, cache_dir, args.seed)
    else:
        path = args.model
    bar.update()
    engines = []
    for engine in ENGINES:
        why = engine.unavailable(config.model_type, decoder, dtype, device) if hasattr(engine, "unavailable") else None
        if why is not None:
            notes.append(f"no {engine.name} row: {why}")
            continue
        bar.set_description(f"loading {engine.name}")
        engines.append(engine.load(path, gguf_file, decoder, dtype, float_dtype, device))
    bar.update()
    ref = next(e for e in engines if e.name == REFERENCE)
    config = ref.model.config

    bar.set_description("measuring the floor")
    rates = floor.measure_rates(device, float_dtype)
    bar.update()
    body, head = floor.matmul_params(ref.model)
    shapes = {e.name: floor.Shape(e.model, float_dtype) for e in engines}
    clock = floor.timer(device)
    gen = torch.Generator().manual_seed(args.seed)
    vocab = config.vocab_size
    pad = getattr(config, "eos_token_id", None)
    pad = (pad[0] if isinstance(pad, (list, tuple)) else pad) or 0
    rows: List[dict] = []
    for batch in batches:
        for length in lengths:
            bar.set_description(f"batch {batch} length {length}")
            low = min(1000, vocab // 2)  # clear of the special tokens at the start of most vocabularies
            ids = torch.randint(low, vocab, (batch, length), generator=gen).to(device)
            agreement = _agreement(engines, ref, ids, dtype, decoder, args.new_tokens, pad)
            if decoder:
                cell = _time_decoder(engines, ids, args, pad, clock)
            else:
                cell = {e.name: {"latency_s": t} for e, t in zip(engines, _time_calls(
                    [lambda e=e: e.forward(ids) for e in engines], args.warmup, args.repeats, clock))}
            rows += _rows(engines, ref, cell, agreement, shapes, body, head, batch, length, args.new_tokens,
                          decoder, rates)
            bar.update()
    bar.close()  # before the table: the bar's line would be left between its rows
    if any(v > 1 for r in rows for k, v in r.items() if k.endswith("floor_fraction")):
        notes.append("a floor above 100%: the model's matmuls ran faster than the square matmul measured for the "
                     f"rate ({rates['matmul_dtype']} on {device.type}), so that floor is not a bound there")
    result = {"environment": _environment(), "rates": rates, "rows": rows,
              "settings": {"model": args.preset or args.model, "what": what, "gguf_file": gguf_file,
                           "kind": "decoder" if decoder else "encoder", "decoder": decoder, "dtype": dtype,
                           "device": str(device), "batches": batches, "lengths": lengths,
                           "new_tokens": args.new_tokens if decoder else None, "repeats": args.repeats,
                           "warmup": args.warmup, "seed": args.seed, "tolerance": TOLERANCE[dtype],
                           "engines": [e.name for e in engines], "notes": notes}}
    print(report.render_table(result), end="")
    if args.out:
        paths, why = report.write(result, args.out)
        print("written: " + ", ".join(paths))
        if why:
            print(f"plot skipped: {why}")
    loose = sorted({r["engine"] for r in rows if r.get("agreement") and not r["agreement"]["ok"]
                    and r["engine"] != "fastformers"})
    if loose:  # an anchor's own accuracy (ONNX Runtime's int8, say): reported, not a failure of fastformers
        print(f"note: {', '.join(loose)} differ from transformers beyond the {dtype} tolerance "
              f"{TOLERANCE[dtype]:g} in some rows (the agree column)")
    bad = [r for r in rows if r.get("agreement") and not r["agreement"]["ok"] and r["engine"] == "fastformers"]
    if bad:
        print(f"fastformers bench: outputs disagree beyond the {dtype} tolerance {TOLERANCE[dtype]:g} in "
              f"{len(bad)} row(s)", file=sys.stderr)
        return 1
    return 0


def _agreement(engines, ref, ids, dtype, decoder, new_tokens, pad) -> Dict[str, dict]:
    """Each engine against the reference on these ids (the calls also warm both up)."""
    expected = ref.forward(ids).float()
    scale = expected.abs().max().item() or 1.0
    tokens = ref.generate(ids, new_tokens, pad) if decoder else None
    out = {}
    for engine in engines:
        if engine is ref:
            continue
        diff = (engine.forward(ids).float() - expected).abs().max().item() / scale
        entry = {"max_rel_diff": diff, "tolerance": TOLERANCE[dtype], "ok": diff <= TOLERANCE[dtype]}
        if decoder:
            same = (engine.generate(ids, new_tokens, pad) == tokens).all(dim=0).tolist()
            entry["tokens_identical"] = same.index(False) if False in same else len(same)
            entry["tokens"] = new_tokens
            if dtype == "fp32":  # float32 greedy decoding must be token-identical; lower precisions may tie-break
                entry["ok"] = entry["ok"] and entry["tokens_identical"] == new_tokens
        out[engine.name] = entry
    return out


def _time_calls(fns, warmup: int, repeats: int, clock) -> List[List[float]]:
    """Seconds per call of each fn, the fns alternating call by call so drift hits all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            ts.append(clock(fn))
    return times


def _time_decoder(engines, ids, args, pad, clock) -> Dict[str, dict]:
    """Prefill = generate() of one token; decode = the rest of a generate() of --new-tokens tokens, per token."""
    n = args.new_tokens
    fns = []
    for e in engines:
        fns += [lambda e=e: e.generate(ids, 1, pad), lambda e=e: e.generate(ids, n, pad)]
    times = _time_calls(fns, args.warmup, args.repeats, clock)
    cell = {}
    for i, e in enumerate(engines):
        prefill, full = times[2 * i], times[2 * i + 1]
        decode_s = max(statistics.median(full) - statistics.median(prefill), 1e-9)
        cell[e.name] = {"prefill_s": prefill, "generate_s": full, "decode_s": decode_s}
    return cell


def _rows(engines, ref, cell, agreement, shapes, body, head, batch, length, new_tokens, decoder, rates):
    rows = []
    for e in engines:
        shape, c = shapes[e.name], cell[e.name]
        row = {"engine": e.name, "dtype": e.dtype, "batch": batch, "length": length}
        if decoder:
            nbytes, flops = floor.prefill_cost(shape, body, head, batch, length)
            steps = new_tokens - 1
            prefill = statistics.median(c["prefill_s"])
            row.update(new_tokens=new_tokens, prefill_ms=prefill * 1e3,
                       prefill_samples_ms=[t * 1e3 for t in c["prefill_s"]],
                       generate_samples_ms=[t * 1e3 for t in c["generate_s"]],
                       decode_tokens_per_s=batch * steps / c["decode_s"],
                       prefill_bytes=nbytes, prefill_flops=flops,
                       prefill_floor_ms=floor.floor_s(nbytes, flops, rates) * 1e3,
                       decode_floor_ms=floor.decode_floor_s(shape, body, head, batch, length, steps, rates) * 1e3)
            row["prefill_floor_fraction"] = row["prefill_floor_ms"] / row["prefill_ms"]
            row["decode_floor_fraction"] = row["decode_floor_ms"] / (c["decode_s"] * 1e3)
        else:
            nbytes, flops = floor.encoder_cost(shape, body, batch, length)
            latency = statistics.median(c["latency_s"])
            row.update(latency_ms=latency * 1e3, latency_samples_ms=[t * 1e3 for t in c["latency_s"]],
                       bytes=nbytes, flops=flops, latency_floor_ms=floor.floor_s(nbytes, flops, rates) * 1e3)
            row["latency_floor_fraction"] = row["latency_floor_ms"] / row["latency_ms"]
        row["agreement"] = agreement.get(e.name)
        rows.append(row)
    base = next(r for r in rows if r["engine"] == ref.name)
    for row in rows:  # speedups over the reference: time ratios, or a rate ratio for decode
        if decoder:
            row["prefill_speedup"] = base["prefill_ms"] / row["prefill_ms"]
            row["decode_speedup"] = row["decode_tokens_per_s"] / base["decode_tokens_per_s"]
        else:
            row["latency_speedup"] = base["latency_ms"] / row["latency_ms"]
    return rows
