"""`fastformers embed`: sentence embeddings as JSON (one list of floats per sentence)."""

from __future__ import annotations

import argparse
import json

from .common import check_device
from .similarity import add_sentence_arguments, gather_sentences, report_truncated, sentence_embeddings


def configure(parser: argparse.ArgumentParser) -> None:
    add_sentence_arguments(parser)


def run(args: argparse.Namespace) -> int:
    texts = gather_sentences(args)
    emb, truncated = sentence_embeddings(texts, args.model, check_device(args.device), args.batch_size)
    report_truncated(texts, truncated)
    print(json.dumps([[round(x, 6) for x in row] for row in emb.tolist()]))
    return 0
