"""ONNX Runtime as the anchor of the encoder benchmark: the engine people export to when they want CPU speed.

The same weights go through the usual recipe: transformers' model (eager attention, which ONNX Runtime's optimizer
recognises and fuses) exported with torch.onnx, then ONNX Runtime's transformer optimizer (fused attention,
SkipLayerNorm, BiasGelu), and for the int8 row its dynamic quantization, per channel. Optional: `pip install -e
".[anchors]"`; without onnxruntime the encoder suite leaves these rows out and says why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from typing import Dict, Optional

import torch

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def missing() -> Optional[str]:
    """Why the anchor cannot run here, or None when it can."""
    for name in ("onnxruntime", "onnx"):
        try:
            __import__(name)
        except ImportError:
            return f"{name} is not installed (pip install -e '.[anchors]')"
    return None


class _LastHiddenState(torch.nn.Module):
    """Positional inputs in a fixed order and one output: what torch.onnx's exporter needs."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state


class OrtEncoder:
    """An exported, optimized (and optionally int8-quantized) encoder in an ONNX Runtime session."""

    def __init__(self, path: str, threads: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Its worker threads otherwise spin after each run, taking the cores from the engine timed next (measured:
        # fastformers and transformers ran up to 2x slower interleaved with a spinning session).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def __call__(self, enc: Dict[str, torch.Tensor]) -> torch.Tensor:
        ids = enc["input_ids"]
        feeds = {"input_ids": ids, "attention_mask": enc.get("attention_mask", torch.ones_like(ids)),
                 "token_type_ids": enc.get("token_type_ids", torch.zeros_like(ids))}
        return torch.from_numpy(self.session.run(None, {k: v.numpy() for k, v in feeds.items()})[0])


def export_encoder(model_path: str, out_dir: Optional[str] = None) -> Dict[str, str]:
    """Export the checkpoint at `model_path` as ONNX Runtime users do; returns {"float32": path, "int8": path}."""
    out_dir = out_dir or tempfile.mkdtemp(prefix="fastformers-ort-")
    with _quiet():
        return _export(model_path, out_dir)


@contextlib.contextmanager
def _quiet():
    """The exporter's tracer warnings and the quantizer's advice (logged on the root logger) are not the
    benchmark's business: keep them out of its table."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _export(model_path: str, out_dir: str) -> Dict[str, str]:
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    model = transformers.AutoModel.from_pretrained(model_path, dtype=torch.float32, attn_implementation="eager")
    wrapped = _LastHiddenState(model).eval()  # eval: the exporter restores the wrapper's mode after export
    example = torch.tensor([[101, 2023, 2003, 102]])
    raw = os.path.join(out_dir, "model.onnx")
    axes = {name: {0: "batch", 1: "length"} for name in (*ENCODER_INPUTS, "last_hidden_state")}
    torch.onnx.export(wrapped, (example, torch.ones_like(example), torch.zeros_like(example)), raw,
                      input_names=list(ENCODER_INPUTS), output_names=["last_hidden_state"], dynamic_axes=axes,
                      opset_version=17, dynamo=False)
    config = model.config
    optimized = optimizer.optimize_model(raw, model_type="bert", num_heads=config.num_attention_heads,
                                         hidden_size=config.hidden_size)
    paths = {"float32": os.path.join(out_dir, "model-optimized.onnx"), "int8": os.path.join(out_dir, "model-int8.onnx")}
    optimized.save_model_to_file(paths["float32"])
    # DefaultTensorType: the optimizer's fused ops (contrib domain) have no shape-inferred output types.
    quantize_dynamic(paths["float32"], paths["int8"], weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": 1})
    return paths


def fused_operators(path: str) -> Dict[str, int]:
    """How many of each fused operator the optimized graph holds (a check that the optimizer did its job)."""
    import onnx

    counts: Dict[str, int] = {}
    for node in onnx.load(path).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return {op: counts.get(op, 0) for op in ("Attention", "SkipLayerNormalization", "BiasGelu", "EmbedLayerNormalization")}
