"""The engines `fastformers bench` compares: each loads one checkpoint folder (or GGUF file) and runs the same
encoder forward or greedy generate() on the same ids.

An engine is small on purpose: `load`, `forward`, `generate`, and the model it holds (for byte and FLOP
accounting). transformers is imported here only, lazily: it is the bench extra's, not a runtime dependency.
"""

from __future__ import annotations

import contextlib
import io
from typing import Optional

import torch

from .. import QuantizationConfig
from .harness import BenchError, progress_enabled

# fastformers' quantized formats per --dtype (int8: one scale per output channel; int4: groups of 128)
QUANTIZED = {"int8": dict(bits=8, group_size=None), "int4": dict(bits=4, group_size=128)}


class Engine:
    """One library's model: `dtype` is the label the table shows (what it really runs in)."""

    name = "engine"

    def __init__(self, model, dtype: str, device: torch.device, decoder: bool) -> None:
        self.model = model
        self.dtype = dtype
        self.device = device
        self.decoder = decoder

    def forward(self, ids: torch.Tensor):
        """Encoder: the last hidden states. Decoder: the logits of the last position."""
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids))
        return out.logits[:, -1] if self.decoder else out.last_hidden_state

    def generate(self, ids: torch.Tensor, new_tokens: int, pad_token_id: int) -> torch.Tensor:
        """Greedy, exactly `new_tokens` new tokens (min_new_tokens keeps EOS from ending it early)."""
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                      min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_token_id)
        return out[:, ids.shape[1]:]


def _auto_class(module, decoder: bool):
    return module.AutoModelForCausalLM if decoder else module.AutoModel


class FastformersEngine(Engine):
    name = "fastformers"

    @classmethod
    def load(cls, path: str, gguf_file: Optional[str], decoder: bool, dtype: str, float_dtype: torch.dtype,
             device: torch.device) -> "FastformersEngine":
        import fastformers

        kwargs = {}
        if dtype in QUANTIZED:
            kwargs["quantization_config"] = QuantizationConfig(**QUANTIZED[dtype])
        elif gguf_file is not None:
            kwargs["quantization_config"] = False  # dequantize on a GPU too: the same float weights as transformers
        model = _auto_class(fastformers, decoder).from_pretrained(path, gguf_file=gguf_file, dtype=float_dtype,
                                                                   device=device, **kwargs)
        return cls(model.eval(), dtype, device, decoder)


class TransformersEngine(Engine):
    name = "transformers"

    @classmethod
    def load(cls, path: str, gguf_file: Optional[str], decoder: bool, dtype: str, float_dtype: torch.dtype,
             device: torch.device) -> "TransformersEngine":
        try:
            import transformers
        except ImportError:
            raise BenchError("it compares against transformers, which is not installed: "
                             "pip install 'fastformers[bench]'") from None
        transformers.logging.set_verbosity_error()  # generation-config notes would interleave with the table
        transformers.logging.disable_progress_bar()  # bench shows its own
        # its GGUF reader draws a tqdm bar whatever the logging settings: kept out of pipes like ours
        quiet = contextlib.redirect_stderr(io.StringIO()) if gguf_file and not progress_enabled() else \
            contextlib.nullcontext()
        with quiet:
            model = _auto_class(transformers, decoder).from_pretrained(path, gguf_file=gguf_file, dtype=float_dtype)
        # transformers runs int8 / int4 requests in the float dtype: fastformers' formats are its own
        label = {torch.float16: "fp16", torch.float32: "fp32"}[float_dtype] if dtype in QUANTIZED else dtype
        return cls(model.to(device).eval(), label, device, decoder)


class OnnxRuntimeEngine(Engine):
    """The anchor for encoders on CPUs: the same weights exported and optimized as ONNX Runtime users do
    (ort_anchor.py); fp32 runs the optimized graph, int8 its dynamic quantization (per channel)."""

    name = "onnxruntime"
    MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "electra")  # encoders its "bert" optimizer fuses

    @staticmethod
    def unavailable(model_type: str, decoder: bool, dtype: str, device: torch.device) -> Optional[str]:
        """Why this run has no ONNX Runtime row, or None."""
        from . import ort_anchor

        if decoder or model_type not in OnnxRuntimeEngine.MODEL_TYPES:
            return f"the anchor covers {', '.join(OnnxRuntimeEngine.MODEL_TYPES)} encoders, not {model_type}"
        if device.type != "cpu" or dtype not in ("fp32", "int8"):
            return "the anchor runs fp32 and int8 on CPUs"
        return ort_anchor.missing()

    @classmethod
    def load(cls, path: str, gguf_file: Optional[str], decoder: bool, dtype: str, float_dtype: torch.dtype,
             device: torch.device) -> "OnnxRuntimeEngine":
        import transformers

        from . import ort_anchor

        paths = ort_anchor.export_encoder(path)
        session = ort_anchor.OrtEncoder(paths["int8" if dtype == "int8" else "float32"], torch.get_num_threads())
        # `model` is only for the byte and FLOP counts: float32 weights, or int8 ones per channel as its quantizer's
        accounting = FastformersEngine.load(path, None, False, dtype, torch.float32, device).model if dtype == "int8" \
            else transformers.AutoModel.from_pretrained(path, dtype=torch.float32)
        engine = cls(accounting, dtype, device, decoder)
        engine.session = session
        return engine

    def forward(self, ids: torch.Tensor):
        return self.session({"input_ids": ids})


# The engines of one run, in the order they alternate. ANCHORS (ONNX Runtime; llama.cpp to come) are Engine
# subclasses with `load` / `forward` / `generate` (ids in, hidden states / logits / new ids out) and an
# `unavailable(model_type, decoder, dtype, device)` that says why a run has no row of theirs; the timing, agreement
# check, floor and report take any number of engines, with transformers (the reference) always present.
ENGINES = (FastformersEngine, TransformersEngine, OnnxRuntimeEngine)
REFERENCE = "transformers"
