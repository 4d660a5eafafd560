"""`fastformers env`: versions, the op backends that can run here, and the devices of this machine (JSON)."""

from __future__ import annotations

import argparse
import json

from .common import available_devices


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def environment() -> dict:
    import platform

    import torch

    from .. import __version__, ops
    from ..ops import native
    from ..pipelines.defaults import chat_checkpoint, embedding_checkpoint

    info = {"fastformers": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "cuda_available": torch.cuda.is_available(), "devices": available_devices()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    for name in ("triton", "transformers", "tokenizers", "safetensors", "huggingface_hub"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    info["backend"] = ops.current_backend()
    info["backends"] = {b: ops.backend_status(b) or "available" for b in ("torch", "triton", "cuda")}
    info["compiled_kernels"] = native.kernels()  # fastformers._C: built or why not, and the CPU instruction set
    info["embedded_models"] = {"embedding": embedding_checkpoint().path if embedding_checkpoint().embedded else None,
                               "chat": chat_checkpoint().path if chat_checkpoint().embedded else None}
    return info


def run(args: argparse.Namespace) -> int:
    print(json.dumps(environment(), indent=2))
    return 0
