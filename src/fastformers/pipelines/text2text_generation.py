"""text2text-generation, summarization and translation: encoder-decoder generation (BART, Marian, T5).

transformers 5 dropped these pipelines; this keeps transformers 4's behaviour and output format: the
input (with the model's `prefix`, e.g. T5's "summarize: ") is encoded, `model.generate` writes the output,
and each generated sequence becomes {"generated_text" | "summary_text" | "translation_text": str} (or
`..._token_ids` with return_tensors=True). A single string gives a list with one dict per returned
sequence; a list of strings gives one such list per input, flattened when each holds one dict.

A model's `config.task_specific_params[task]` (T5 checkpoints carry "summarization",
"translation_en_to_de", ...) supplies the prefix and generation defaults of the task, as in transformers 4.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Optional

import torch

from .base import Pipeline, batches

logger = logging.getLogger("fastformers")



class Text2TextGenerationPipeline(Pipeline):
    task = "text2text-generation"
    return_name = "generated"
    model_input_names = ("input_ids", "attention_mask")

    def __init__(self, model, tokenizer, *, task: Optional[str] = None, batch_size: Optional[int] = None,
                 **kwargs: Any) -> None:
        if not getattr(model.config, "is_encoder_decoder", False):
            raise ValueError(f"the {self.task} pipeline needs an encoder-decoder model (BART, Marian, T5); "
                             f"{type(model).__name__} is not one")
        self.task_name = task or self.task
        params = (getattr(model.config, "task_specific_params", None) or {}).get(self.task_name, {})
        self.task_defaults = dict(params)
        super().__init__(model, tokenizer, batch_size=batch_size, **kwargs)

    def sanitize_parameters(self, return_tensors: bool = False, return_text: bool = True,
                            clean_up_tokenization_spaces: Optional[bool] = None, truncation: Any = False,
                            prefix: Optional[str] = None, generate_kwargs: Optional[Dict[str, Any]] = None,
                            stop_sequence: Optional[str] = None, **kwargs: Any):
        generate = {k: v for k, v in self.task_defaults.items() if k != "prefix"}
        generate.update(generate_kwargs or {})
        generate.update(kwargs)  # anything else is a generate() option, as in transformers
        if stop_sequence is not None:
            ids = self.tokenizer.encode(stop_sequence, add_special_tokens=False)
            if len(ids) > 1:
                logger.warning("Stopping on a multiple token sequence is not yet supported on transformers. The "
                               "first token of the stop sequence will be used as the stop sequence string in the "
                               "interim.")
            generate["eos_token_id"] = ids[0]
        if prefix is None:
            prefix = self.task_defaults.get("prefix", getattr(self.model.config, "prefix", None)) or ""
        pre = {"prefix": prefix, "truncation": truncation}
        post = {"return_tensors": bool(return_tensors) or not return_text,
                "clean_up_tokenization_spaces": clean_up_tokenization_spaces, "generate": generate}
        return pre, post

    def preprocess(self, inputs: Any, prefix: str = "", truncation: Any = False) -> Dict[str, Any]:
        if not isinstance(inputs, str):
            raise TypeError(f"{self.task} pipeline: each input must be a string, got {type(inputs).__name__}")
        encoded = self.tokenizer(prefix + inputs, truncation=truncation)
        return {k: encoded[k] for k in self.model_input_names}

    def _run(self, inputs, batch_size: int, pre: dict, post: dict):
        post = dict(post)
        generate = post.pop("generate")
        for chunk in batches(inputs, batch_size):
            items = [self.preprocess(x, **pre) for x in chunk]
            if len(items) > 1 and self.tokenizer.pad_token_id is None:
                raise ValueError("Please make sure that the tokenizer has a pad_token_id when using a batch input")
            batch = self._collate(items)
            with torch.inference_mode():
                sequences = self.model.generate(**batch, **generate)
            per_input = sequences.shape[0] // len(items)
            for i in range(len(items)):
                yield self.postprocess(sequences[i * per_input:(i + 1) * per_input].cpu(), **post)

    def postprocess(self, sequences: torch.Tensor, return_tensors: bool = False,
                    clean_up_tokenization_spaces: Optional[bool] = None) -> List[Dict[str, Any]]:
        if return_tensors:
            return [{f"{self.return_name}_token_ids": ids} for ids in sequences]
        return [{f"{self.return_name}_text": self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean_up_tokenization_spaces)}
            for ids in sequences]

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if args:  # transformers 4 accepted several positional texts: pipe("a", "b")
            inputs = [inputs, *args]
        result = super().__call__(inputs, **kwargs)
        if isinstance(inputs, (list, tuple)) and all(len(r) == 1 for r in result):
            return [r[0] for r in result]
        return result


class SummarizationPipeline(Text2TextGenerationPipeline):
    task = "summarization"
    return_name = "summary"


class TranslationPipeline(Text2TextGenerationPipeline):
    """translation, or translation_xx_to_yy: the language pair picks the model's task_specific_params
    (T5's "translate English to German: " prefix)."""

    task = "translation"
    return_name = "translation"

    def __init__(self, model, tokenizer, *, task: Optional[str] = None, **kwargs: Any) -> None:
        pair = re.fullmatch(r"translation_(.+)_to_(.+)", task or "")
        if pair:
            kwargs.setdefault("src_lang", pair.group(1))
            kwargs.setdefault("tgt_lang", pair.group(2))
        elif task == "translation" and kwargs.get("src_lang") and kwargs.get("tgt_lang"):
            task = f"translation_{kwargs['src_lang']}_to_{kwargs['tgt_lang']}"
        super().__init__(model, tokenizer, task=task, **kwargs)

    def sanitize_parameters(self, src_lang: Optional[str] = None, tgt_lang: Optional[str] = None, **kwargs: Any):
        # the language pair chose task_specific_params at construction; multilingual tokenizers with
        # src_lang / tgt_lang codes (mBART, NLLB) are not among fastformers' models
        return super().sanitize_parameters(**kwargs)

