"""`fastformers pipeline TASK INPUT... [--model M] [--json]`: any task pipeline() supports, one result per input.

Task extras: --candidate-labels for zero-shot-classification, --context for question-answering (each INPUT is a
question), --max-new-tokens / --do-sample for the generation tasks, --top-k for fill-mask and text-classification.
Without --model the task's embedded model is used where it has one; other tasks ask for --model (naming
transformers' default hub id) instead of downloading. A
checkpoint without the weights of the task's head is refused: its predictions would come from random weights.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any, Dict, List

from ..pipelines import EMBEDDED_DEFAULTS, SUPPORTED_TASKS, TASK_ALIASES
from .common import UsageError, add_device_argument, check_device, refuse_empty, shorten

# tasks whose output is the encoder's hidden states: no head to check
HEADLESS_TASKS = {"feature-extraction", "sentence-embedding"}
GENERATION_TASKS = {"text-generation", "summarization", "translation", "text2text-generation"}


def configure(parser: argparse.ArgumentParser) -> None:
    tasks = sorted([*SUPPORTED_TASKS, *TASK_ALIASES, "translation_XX_to_YY"])
    parser.add_argument("task", metavar="TASK", help="one of: " + ", ".join(tasks))
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="texts to run the task on (questions for "
                                                                   "question-answering)")
    parser.add_argument("--model", default=None, help="folder or hub id (default: the task's default model)")
    parser.add_argument("--gguf-file", default=None, help="a GGUF file inside --model")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one result per input")
    parser.add_argument("--candidate-labels", default=None, metavar="L1,L2,...",
                        help="zero-shot-classification: the labels, comma-separated")
    parser.add_argument("--multi-label", action="store_true", help="zero-shot-classification: labels independent")
    parser.add_argument("--context", default=None, help="question-answering: the text the answers come from")
    parser.add_argument("--top-k", type=int, default=None, help="fill-mask / text-classification: results per input")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="generation tasks: most new tokens")
    parser.add_argument("--do-sample", action="store_true", help="generation tasks: sample (default: greedy)")
    add_device_argument(parser)


def task_name(task: str) -> str:
    """The canonical name of `task`, or a UsageError listing the tasks (before anything is loaded)."""
    if re.fullmatch(r"translation_.+_to_.+", task):
        return "translation"
    name = TASK_ALIASES.get(task, task)
    if name not in SUPPORTED_TASKS:
        known = sorted([*SUPPORTED_TASKS, *TASK_ALIASES, "translation_XX_to_YY"])
        raise UsageError(f"unknown task {task!r}; the tasks: {', '.join(known)}")
    return name


def call_options(name: str, args: argparse.Namespace) -> Dict[str, Any]:
    """The task's keyword arguments from the command's options; a task's required extra missing is refused."""
    options: Dict[str, Any] = {}
    if name == "zero-shot-classification":
        labels = [label.strip() for label in (args.candidate_labels or "").split(",") if label.strip()]
        if not labels:
            raise UsageError("zero-shot-classification needs --candidate-labels, e.g. --candidate-labels "
                             "sports,politics,science")
        options.update(candidate_labels=labels, multi_label=args.multi_label)
    if name == "question-answering":
        if not (args.context or "").strip():
            raise UsageError("question-answering needs --context TEXT (each INPUT is a question about it)")
        options["context"] = args.context
    if args.top_k is not None:
        if name not in ("fill-mask", "text-classification"):
            raise UsageError(f"--top-k is for fill-mask and text-classification, not {name}")
        options["top_k"] = args.top_k
    if name in GENERATION_TASKS:
        if args.max_new_tokens is not None:
            if args.max_new_tokens < 1:
                raise UsageError(f"--max-new-tokens must be a positive integer, got {args.max_new_tokens}")
            options["max_new_tokens"] = args.max_new_tokens
        options["do_sample"] = args.do_sample
    elif args.max_new_tokens is not None or args.do_sample:
        raise UsageError(f"--max-new-tokens / --do-sample are for the generation tasks, not {name}")
    return options


def refuse_hub_default(name: str) -> None:
    """The command runs offline by default: a task with no embedded model needs --model, rather than a download
    (or, offline, a minute of retries against an unreachable hub) the user did not ask for."""
    locate = EMBEDDED_DEFAULTS.get(name, (None, None))[0]
    if locate is None or not locate().embedded:
        hub_id = SUPPORTED_TASKS[name].default_model
        raise UsageError(f"{name} has no embedded model: pass --model FOLDER_OR_HUB_ID (transformers' default is "
                         f"--model {hub_id}, downloaded from the model hub)")


def refuse_missing_head(name: str, model: Any) -> None:
    """A model whose task head was not in the checkpoint (randomly initialised) would print noise: refuse it."""
    missing = list(getattr(model, "newly_initialized_weights", []))
    if name in HEADLESS_TASKS or not missing:
        return
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    source = getattr(model.config, "_name_or_path", "the checkpoint")
    raise UsageError(f"{source} has no weights for the {name} head of {type(model).__name__} ({shown}): its "
                     f"predictions would come from random weights; use a checkpoint trained for {name}")


def run(args: argparse.Namespace) -> int:
    from .. import pipeline

    name = task_name(args.task)
    inputs = refuse_empty(args.inputs, "input")
    options = call_options(name, args)
    device = check_device(args.device)
    if args.model is None:
        refuse_hub_default(name)
    extra = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    pipe = pipeline(args.task, model=args.model, device=device, **extra)
    refuse_missing_head(name, pipe.model)
    if name == "question-answering":
        context = options.pop("context")
        results = [pipe(question=q, context=context, **options) for q in inputs]
    else:
        results = [pipe(text, **options) for text in inputs]
    if args.json:
        print(json.dumps(results, default=_plain, ensure_ascii=False))
        return 0
    for text, result in zip(inputs, results):
        if len(inputs) > 1:
            print(f"{shorten(text, 70)}")
        for line in describe(result):
            print(("  " if len(inputs) > 1 else "") + line)
    return 0


def _plain(value: Any) -> Any:
    """Tensors and numpy values in a result, as JSON lists and numbers."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _shape(value: Any) -> List[int]:
    if hasattr(value, "shape"):
        return list(value.shape)
    shape = []
    while isinstance(value, list) and value:
        shape.append(len(value))
        value = value[0]
    return shape


def describe(result: Any) -> List[str]:
    """Readable lines for one input's result: one line per prediction, scores with 4 decimals."""
    if isinstance(result, dict) and isinstance(result.get("labels"), list) and "scores" in result:
        return [f"{score:.4f}  {label}" for label, score in zip(result["labels"], result["scores"])]
    if isinstance(result, dict):
        return ["  ".join(f"{key}: {_value(value)}" for key, value in result.items())]
    if isinstance(result, list) and not result:
        return ["(nothing found)"]  # e.g. token-classification where every token is "O"
    if isinstance(result, list) and all(isinstance(item, dict) for item in result):
        return [line for item in result for line in describe(item)]
    if hasattr(result, "shape") or (isinstance(result, list) and result and isinstance(result[0], (list, float))):
        return [f"array of shape {tuple(_shape(result))} (use --json for the values)"]
    return [str(result)]


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, str):
        return repr(value)  # whole (generated text is the point), quoted so that spaces and newlines show
    return str(value)
