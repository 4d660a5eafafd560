"""The `fastformers` command (console script, `python -m fastformers`, `python -m fastformers.cli`).

  fastformers generate "prompt"                      chat with a causal LM, tokens streamed as they come
  fastformers pipeline TASK INPUT... [--model M]     any pipeline() task
  fastformers similarity "one" "two" ... | --file F  sentence embeddings + cosine similarities
  fastformers embed "text" ...                       print sentence embeddings (JSON)
  fastformers env                                    versions, op backends and devices of this machine

Each subcommand is a module with `configure(parser)` and `run(args) -> int`, listed once in COMMANDS. A mistake the
user can fix ends in one line `fastformers: error: ...` on stderr and exit code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

from .common import UsageError

# (name, help, module): the module's configure(parser) adds the subcommand's arguments, run(args) runs it.
COMMANDS = [
    ("generate", "generate text from a prompt (chat-formatted), streamed as it comes", "fastformers.cli.generate"),
    ("pipeline", "run any pipeline() task on inputs given as arguments", "fastformers.cli.pipeline"),
    ("similarity", "cosine similarity of sentence embeddings", "fastformers.cli.similarity"),
    ("embed", "print sentence embeddings as JSON", "fastformers.cli.embed"),
    ("env", "versions, op backends and available devices", "fastformers.cli.env"),
    ("bench", "benchmark a model in fastformers and transformers side by side (and ONNX Runtime where it applies)",
     "fastformers.bench.command"),
]

# errors a user's input causes (a path, a hub id, an argument value): reported in one line. Others are bugs and
# keep their traceback.
USER_ERRORS = (UsageError, OSError, ValueError)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="fastformers", description="fastformers: transformers' API, faster. "
                                     "Runs offline on the embedded models (MiniLM, SmolLM2) when their packages "
                                     "are installed.")
    parser.add_argument("--version", action="version", version=f"fastformers {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and the library's log messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, module_name in COMMANDS:
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # the library's warnings (weights newly initialised, default models) are for Python users; the command says
    # what matters itself, in one line. Restored afterwards: main() also runs inside other programs (and tests).
    library_log = logging.getLogger("fastformers")
    level = library_log.level
    library_log.setLevel(logging.INFO if args.debug else logging.ERROR)
    if args.debug:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except BrokenPipeError:  # `fastformers ... | head`: the reader has gone; stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's flush does not fail
        return 141
    except USER_ERRORS as e:
        if args.debug:
            raise
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
        print(f"fastformers: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    finally:
        library_log.setLevel(level)


def sentence_embeddings(*args, **kwargs):
    """Kept here for callers of `fastformers.cli.sentence_embeddings` (see cli.similarity)."""
    from .similarity import sentence_embeddings as embed

    return embed(*args, **kwargs)[0]


if __name__ == "__main__":
    sys.exit(main())
