"""`fastformers env` (cli/env.py): versions, backends, devices and the embedded models, as JSON."""

import json

import torch

from fastformers import __version__
from fastformers.cli import main
from fastformers.pipelines.defaults import chat_checkpoint, embedding_checkpoint


def test_env_reports_versions_backends_devices(capsys):
    assert main(["env"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["fastformers"] == __version__ and info["torch"] == torch.__version__
    assert info["backends"]["torch"] == "available" and set(info["backends"]) == {"torch", "triton", "cuda"}
    assert info["devices"][0] == "cpu" and len(info["devices"]) == 1 + torch.cuda.device_count()
    from fastformers.ops import native
    assert info["compiled_kernels"]["built"] == native.available()
    assert info["compiled_kernels"].get("cpu_isa") == native.cpu_isa()
    assert info["embedded_models"] == {"embedding": embedding_checkpoint().path, "chat": chat_checkpoint().path}
