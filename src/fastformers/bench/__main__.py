"""`python -m fastformers.bench [suite ...] [--quick] [--out DIR]`: run suites, print a table, write JSON + markdown.

`python -m fastformers.bench --preset NAME` / `--model M [...]` runs one model side by side instead (the
`fastformers bench` command, bench/command.py)."""

from __future__ import annotations

import argparse
import importlib
import sys

from .harness import environment, render_markdown, write_results

SUITES = ("encoder", "decoder", "training", "kernels", "quantized", "overhead")
CUDA_ONLY = ("kernels", "quantized")


def main() -> None:
    if any(arg.split("=", 1)[0] in ("--preset", "--model") for arg in sys.argv[1:]):
        from . import command

        parser = argparse.ArgumentParser(prog="python -m fastformers.bench")
        command.configure(parser)
        raise SystemExit(command.run(parser.parse_args()))
    parser = argparse.ArgumentParser(prog="python -m fastformers.bench",
                                     epilog="one model side by side: --preset NAME or --model M (see --preset -h)")
    parser.add_argument("suites", nargs="*", metavar="suite",
                        help=f"any of {', '.join(SUITES)} (default: all that can run here)")
    parser.add_argument("--quick", action="store_true", help="few repeats (smoke run)")
    parser.add_argument("--out", default="bench/out", help="where to write the JSON and markdown")
    parser.add_argument("--baseline", metavar="COMMIT",
                        help="overhead suite: also measure this git commit's source tree, in the same run")
    args = parser.parse_args()
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    if not args.suites:
        import torch

        args.suites = [s for s in SUITES if s not in CUDA_ONLY or torch.cuda.is_available()]
    env = environment()
    rows = []
    for suite in args.suites:
        extra = {"baseline": args.baseline} if suite == "overhead" and args.baseline else {}
        rows += importlib.import_module(f".{suite}", __package__).run(quick=args.quick, **extra)
    print(render_markdown(rows, env))
    print("written:", write_results(rows, env, args.out, "-".join(args.suites)))


if __name__ == "__main__":
    main()
