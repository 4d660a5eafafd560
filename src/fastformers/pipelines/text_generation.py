"""text-generation: continue prompts or chats with a decoder-only model (GPT-2, Llama family), as transformers 5's
TextGenerationPipeline does.

    >>> generator = pipeline("text-generation", model="openai-community/gpt2")
    >>> generator("Hello, I'm a language model,", max_new_tokens=10, do_sample=False)
    [{'generated_text': "Hello, I'm a language model, ..."}]

Inputs: a string, a chat (a list of {"role", "content"} messages), or a list / generator of either. A chat goes
through the tokenizer's chat template (with the generation prompt, or continuing the final message when it is the
assistant's) and comes back as the chat with the new assistant message appended. Each input gives a list with one
dict per returned sequence: {"generated_text": prompt + new text} (return_full_text=False: the new text only), or
{"generated_token_ids": [ids]} with return_tensors=True. Batches are padded on the left (the tokenizer's padding
side is switched to "left", as transformers does), with the eos token when the tokenizer has no pad token.

Anything that is not a pipeline argument is a generate() option (also accepted as `generate_kwargs={...}`). Unless
the model's generation_config sets them, transformers' pipeline defaults apply: max_new_tokens=256, do_sample=True,
temperature=0.7 (the sampling ones only when sampling).
"""

from __future__ import annotations

import copy
import enum
import inspect
import itertools
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import torch

from ..generation.configuration import GenerationConfig
from .base import Pipeline, batches


class ReturnType(enum.Enum):
    TENSORS = 0
    NEW_TEXT = 1
    FULL_TEXT = 2


class Chat:
    """One conversation among the inputs: a list of messages, so that it is not mistaken for a batch of inputs."""

    def __init__(self, messages: Iterable[Any]) -> None:
        self.messages = list(messages)
        for i, message in enumerate(self.messages):
            if not _is_message(message):
                raise ValueError(f"text-generation pipeline: chat message {i} must be a dict with 'role' and "
                                 f"'content' keys, got {message!r}")


def _is_message(value: Any) -> bool:
    return isinstance(value, dict) and "role" in value and "content" in value


def _is_chat(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and _is_message(value[0])


# transformers' defaults for the parameters that neither the call nor the model's generation_config set
DEFAULT_GENERATION = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}
_SAMPLING_PARAMS = {"temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff"}
# keyword arguments generate() takes besides the GenerationConfig fields
_GENERATE_INPUTS = {"tokenizer", "past_key_values", "generation_config"}


class TextGenerationPipeline(Pipeline):
    task = "text-generation"
    model_input_names = ("input_ids", "attention_mask")

    def __init__(self, model, tokenizer, *, batch_size: Optional[int] = None, **kwargs: Any) -> None:
        if getattr(model.config, "is_encoder_decoder", False) or not callable(getattr(model, "generate", None)):
            raise ValueError(f"the text-generation pipeline needs a decoder-only model with generate() (GPT-2, "
                             f"Llama family); {type(model).__name__} is not one")
        self.model = model  # sanitize_parameters (in Pipeline.__init__) reads it
        self.tokenizer = tokenizer
        if getattr(tokenizer, "padding_side", "right") == "right":
            tokenizer.padding_side = "left"  # decoder-only batches are padded on the left, as in transformers
        prefix = getattr(model.config, "prefix", None)
        if prefix is not None and "prefix" not in kwargs:
            kwargs["prefix"] = prefix
        known = {k for k in vars(GenerationConfig()) if not k.startswith("_")}
        known |= set(inspect.signature(model.generate).parameters) | _GENERATE_INPUTS
        self._generate_names = known - {"self", "kwargs", "inputs", "input_ids", "attention_mask"}
        super().__init__(model, tokenizer, batch_size=batch_size, **kwargs)

    # --- arguments ----------------------------------------------------------------------------------------
    def sanitize_parameters(self, return_full_text: Optional[bool] = None, return_tensors: Optional[bool] = None,
                            return_text: Optional[bool] = None, return_type: Optional[ReturnType] = None,
                            clean_up_tokenization_spaces: Optional[bool] = None, prefix: Optional[str] = None,
                            handle_long_generation: Optional[str] = None, stop_sequence: Any = None,
                            truncation: Any = None, max_length: Optional[int] = None,
                            continue_final_message: Optional[bool] = None, skip_special_tokens: Optional[bool] = None,
                            tokenizer_encode_kwargs: Optional[Dict[str, Any]] = None, tools: Optional[list] = None,
                            documents: Optional[list] = None, add_special_tokens: Optional[bool] = None,
                            padding: Any = None, generate_kwargs: Optional[Dict[str, Any]] = None,
                            **generate: Any) -> Tuple[dict, dict]:
        generate = {**(generate_kwargs or {}), **generate}
        unknown = sorted(k for k in generate if k not in self._generate_names)
        if unknown:
            raise TypeError(f"text-generation pipeline got unexpected arguments: {', '.join(unknown)} (neither "
                            "pipeline arguments nor generate() options)")
        tokenizer_kwargs = {"add_special_tokens": add_special_tokens, "truncation": truncation, "padding": padding,
                            "max_length": max_length}
        tokenizer_kwargs = {k: v for k, v in tokenizer_kwargs.items() if v is not None}
        if tokenizer_encode_kwargs is not None:
            if not isinstance(tokenizer_encode_kwargs, dict):
                raise TypeError(f"text-generation pipeline: tokenizer_encode_kwargs must be a dict, got "
                                f"{type(tokenizer_encode_kwargs).__name__}")
            tokenizer_kwargs.update(tokenizer_encode_kwargs)
        if max_length is not None:
            generate["max_length"] = max_length
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f"text-generation pipeline: prefix must be a string, got {type(prefix).__name__}")
        prefix_length = 0
        if prefix:
            prefix_length = len(self.tokenizer(prefix, add_special_tokens=bool(add_special_tokens))["input_ids"])
        if handle_long_generation not in (None, "hole"):
            raise ValueError(f"{handle_long_generation} is not a valid value for `handle_long_generation` parameter "
                             "expected [None, 'hole']")
        if stop_sequence is not None:
            stops = [stop_sequence] if isinstance(stop_sequence, str) else list(stop_sequence)
            if not stops or not all(isinstance(s, str) and s for s in stops):
                raise ValueError(f"text-generation pipeline: stop_sequence must be a non-empty string or a list of "
                                 f"them, got {stop_sequence!r}")
            generate["stop_strings"] = stops
            generate["tokenizer"] = self.tokenizer

        if return_full_text is not None and return_type is None:
            if return_text is not None:
                raise ValueError("`return_text` is mutually exclusive with `return_full_text`")
            if return_tensors is not None:
                raise ValueError("`return_full_text` is mutually exclusive with `return_tensors`")
            return_type = ReturnType.FULL_TEXT if return_full_text else ReturnType.NEW_TEXT
        if return_tensors is not None and return_type is None:
            if return_text is not None:
                raise ValueError("`return_text` is mutually exclusive with `return_tensors`")
            return_type = ReturnType.TENSORS if return_tensors else None
        if return_type is not None and not isinstance(return_type, ReturnType):
            raise TypeError(f"text-generation pipeline: return_type must be a ReturnType, got {return_type!r}")

        pre = {"prefix": prefix or "", "tokenizer_kwargs": tokenizer_kwargs, "tools": tools, "documents": documents,
               "continue_final_message": continue_final_message,
               "handle_long_generation": handle_long_generation}
        post = {"return_type": return_type or ReturnType.FULL_TEXT,
                "clean_up_tokenization_spaces": clean_up_tokenization_spaces,
                "continue_final_message": continue_final_message,
                "skip_special_tokens": True if skip_special_tokens is None else skip_special_tokens,
                "tools": tools, "generate": generate, "prefix_length": prefix_length}
        return pre, post

    def _set_generation_params(self, generate: Dict[str, Any]) -> Dict[str, Any]:
        """What a generate() call with `generate` does not take from the global defaults: the kwargs, on top of their
        generation_config, on top of the model's generation config."""
        params = _diff(getattr(self.model, "generation_config", None))
        params.update(_diff(generate.get("generation_config")))
        return {**params, **generate}

    def _generate_kwargs(self, generate: Dict[str, Any], prefix_length: int) -> Dict[str, Any]:
        """The call's generate() options plus the pipeline's defaults for what nobody set (transformers'
        `_prepare_generate_kwargs`), with a total length counting the prefix's tokens."""
        set_params = self._set_generation_params(generate)
        added = {k: v for k, v in DEFAULT_GENERATION.items()
                 if k not in set_params and not (k == "max_new_tokens" and "max_length" in set_params)}
        if self.tokenizer.pad_token_id is not None and "pad_token_id" not in set_params:
            added["pad_token_id"] = self.tokenizer.pad_token_id
        if not {**set_params, **added}.get("do_sample"):
            added = {k: v for k, v in added.items() if k not in _SAMPLING_PARAMS}
        if prefix_length:  # a total length (not a number of new tokens) includes the prefix
            for length, new_tokens in (("max_length", "max_new_tokens"), ("min_length", "min_new_tokens")):
                if set_params.get(length) is not None and new_tokens not in set_params:
                    added[length] = set_params[length] + prefix_length
        user_config = generate.get("generation_config")
        if user_config is None:
            return {**generate, **added}
        user_config = copy.deepcopy(user_config)
        user_config.update(**added)
        return {**generate, "generation_config": user_config}

    # --- the call ----------------------------------------------------------------------------------------
    def __call__(self, text_inputs: Any, *, batch_size: Optional[int] = None, **kwargs: Any) -> Any:
        defaults = self.call_defaults
        if "generation_config" in kwargs or "generation_config" in (kwargs.get("generate_kwargs") or {}):
            # a generation_config replaces the generation options given at construction, as in transformers
            defaults = {k: v for k, v in defaults.items() if k not in self._generate_names and k != "generate_kwargs"}
        pre, post = self.sanitize_parameters(**{**defaults, **kwargs})
        post = dict(post)
        generate = self._generate_kwargs(post.pop("generate"), post.pop("prefix_length"))
        pre["generate"] = generate
        batch_size = batch_size or self.batch_size
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"text-generation pipeline: batch_size must be a positive integer, got {batch_size!r}")

        if isinstance(text_inputs, str):
            return next(self._run([text_inputs], 1, pre, post, generate))
        if isinstance(text_inputs, (list, tuple)):
            if _is_chat(text_inputs):
                return next(self._run([Chat(text_inputs)], 1, pre, post, generate))
            if text_inputs and all(_is_chat(chat) for chat in text_inputs):
                text_inputs = [Chat(chat) for chat in text_inputs]
            return list(self._run(text_inputs, batch_size, pre, post, generate))
        if isinstance(text_inputs, Iterable) and not isinstance(text_inputs, (dict, bytes)):
            iterator = iter(text_inputs)
            first = next(iterator, None)
            if first is None:
                return iter(())
            if _is_message(first):  # a generator of messages is one chat
                return next(self._run([Chat([first, *iterator])], 1, pre, post, generate))
            rest = itertools.chain([first], iterator)
            if _is_chat(first):
                rest = (Chat(chat) for chat in rest)
            return self._run(rest, batch_size, pre, post, generate)  # lazily, as transformers does for generators
        raise TypeError(f"text-generation pipeline: text_inputs must be a string, a chat (a list of messages), or a "
                        f"list or generator of them, got {type(text_inputs).__name__}")

    def _run(self, inputs: Iterable, batch_size: int, pre: dict, post: dict,
             generate: Optional[Dict[str, Any]] = None) -> Iterator[Any]:
        for chunk in batches(inputs, batch_size):
            items = [self.preprocess(x, **pre) for x in chunk]
            yield from self._generate_batch(items, generate or {}, post)

    def preprocess(self, prompt: Any, prefix: str = "", tokenizer_kwargs: Optional[dict] = None,
                   tools: Optional[list] = None, documents: Optional[list] = None,
                   continue_final_message: Optional[bool] = None, handle_long_generation: Optional[str] = None,
                   generate: Optional[dict] = None) -> Dict[str, Any]:
        tokenizer_kwargs = dict(tokenizer_kwargs or {})
        if isinstance(prompt, Chat):
            tokenizer_kwargs.pop("add_special_tokens", None)  # chat templates write their own special tokens
            if continue_final_message is None:  # a chat ending with the assistant's message is a prefill
                continue_final_message = prompt.messages[-1]["role"] == "assistant"
            encoded = self.tokenizer.apply_chat_template(
                prompt.messages, add_generation_prompt=not continue_final_message,
                continue_final_message=continue_final_message, return_dict=True, tools=tools, documents=documents,
                **tokenizer_kwargs)
        elif isinstance(prompt, str):
            encoded = self.tokenizer(prefix + prompt, **tokenizer_kwargs)
        else:
            raise TypeError(f"text-generation pipeline: each input must be a string or a chat (a list of "
                            f"{{'role', 'content'}} messages), got {type(prompt).__name__}")
        ids = list(encoded["input_ids"])
        mask = list(encoded["attention_mask"]) if "attention_mask" in encoded else [1] * len(ids)
        if handle_long_generation == "hole":
            ids, mask = self._hole(ids, mask, generate or {})
        return {"input_ids": ids, "attention_mask": mask, "prompt_text": prompt}

    def _hole(self, ids: List[int], mask: List[int], generate: Dict[str, Any]) -> Tuple[List[int], List[int]]:
        """handle_long_generation="hole": cut the prompt on the left so that the new tokens fit in the model."""
        params = self._set_generation_params(generate)
        new_tokens = params.get("max_new_tokens")
        if new_tokens is None:
            new_tokens = params.get("max_length", 20) - len(ids)
            if new_tokens < 0:
                raise ValueError("We cannot infer how many new tokens are expected")
        limit = self.tokenizer.model_max_length
        if len(ids) + new_tokens > limit:
            keep = limit - new_tokens
            if keep <= 0:
                raise ValueError("We cannot use `hole` to handle this generation the number of desired tokens exceeds "
                                 "the models max length")
            ids, mask = ids[-keep:], mask[-keep:]
        return ids, mask

    def _pad_id(self) -> int:
        for value in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id,
                      getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)):
            if isinstance(value, (list, tuple)):
                value = value[0] if value else None
            if value is not None:
                return int(value)
        return 0  # masked out by the attention mask: any id will do

    def _generate_batch(self, items: List[Dict[str, Any]], generate: Dict[str, Any], post: dict) -> Iterator[Any]:
        width = max(len(item["input_ids"]) for item in items)
        left = getattr(self.tokenizer, "padding_side", "left") == "left"
        pad = self._pad_id()
        ids, masks = [], []
        for item in items:
            fill = width - len(item["input_ids"])
            ids.append([pad] * fill + item["input_ids"] if left else item["input_ids"] + [pad] * fill)
            masks.append([0] * fill + item["attention_mask"] if left else item["attention_mask"] + [0] * fill)
        if width == 0:  # empty prompts: generate() starts from the bos token
            input_ids = attention_mask = None
        else:
            input_ids = torch.tensor(ids, dtype=torch.long, device=self.device)
            attention_mask = torch.tensor(masks, dtype=torch.long, device=self.device)
        with torch.inference_mode():
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **generate)
        sequences = output.sequences if hasattr(output, "sequences") else output
        in_b = len(items) if input_ids is not None else 1
        out_b = sequences.shape[0]
        per_input = out_b // in_b
        extras = {}
        if hasattr(output, "sequences"):  # return_dict_in_generate: per-sequence tensors come along, as lists
            for key, value in output.items():
                if key in ("sequences", "past_key_values"):
                    continue
                if isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor) \
                        and value[0].shape[0] == out_b:
                    value = torch.stack(value).swapaxes(0, 1)
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == out_b:
                    extras[key] = value.cpu()
        sequences = sequences.cpu()
        for i, item in enumerate(items):
            rows = slice(i * per_input, (i + 1) * per_input)
            one = {"generated_sequence": sequences[rows], "prompt_length": width, "prompt_text": item["prompt_text"],
                   **{k: v[rows] for k, v in extras.items()}}
            yield self.postprocess(one, **post)

    def postprocess(self, outputs: Dict[str, Any], return_type: ReturnType = ReturnType.FULL_TEXT,
                    clean_up_tokenization_spaces: Optional[bool] = None, continue_final_message: Optional[bool] = None,
                    skip_special_tokens: bool = True, tools: Optional[list] = None) -> List[Dict[str, Any]]:
        prompt, prompt_length = outputs["prompt_text"], outputs["prompt_length"]
        extras = {k: v.tolist() for k, v in outputs.items()
                  if k not in ("generated_sequence", "prompt_length", "prompt_text")}
        parse = getattr(self.tokenizer, "response_template", None) and hasattr(self.tokenizer, "parse_response")
        if parse:
            skip_special_tokens = False
        records = []
        for idx, sequence in enumerate(outputs["generated_sequence"].tolist()):
            if return_type == ReturnType.TENSORS:
                records.append({"generated_token_ids": sequence})
                continue
            text = self.tokenizer.decode(sequence[prompt_length:], skip_special_tokens=skip_special_tokens,
                                         clean_up_tokenization_spaces=clean_up_tokenization_spaces)
            if return_type == ReturnType.FULL_TEXT:
                if isinstance(prompt, str):
                    text = prompt + text
                else:
                    text = self._chat_reply(prompt, text, sequence[:prompt_length], continue_final_message, parse,
                                            skip_special_tokens, clean_up_tokenization_spaces, tools)
            records.append({"generated_text": text, **{k: v[idx] for k, v in extras.items()}})
        return records

    def _chat_reply(self, chat: Chat, text: str, prompt_ids: List[int], continue_final_message: Optional[bool],
                    parse: bool, skip_special_tokens: bool, clean_up_tokenization_spaces: Optional[bool],
                    tools: Optional[list]) -> List[Dict[str, Any]]:
        """The chat with the new text: appended to the final message (prefill) or as a new assistant message."""
        messages = chat.messages
        if continue_final_message is None:
            continue_final_message = messages[-1]["role"] == "assistant"
        if continue_final_message:
            last = messages[-1]
            return messages[:-1] + [{"role": last["role"], "content": last["content"] + text}]
        if parse:  # templates that pre-write part of the reply parse it with the prompt as prefix
            prompt_prefix = self.tokenizer.decode(prompt_ids, skip_special_tokens=skip_special_tokens,
                                                  clean_up_tokenization_spaces=clean_up_tokenization_spaces)
            reply = self.tokenizer.parse_response(text, prefix=prompt_prefix, tools=tools)
        else:
            reply = {"role": "assistant", "content": text}
        return messages + [reply]


def _diff(config: Optional[GenerationConfig]) -> Dict[str, Any]:
    if config is None:
        return {}
    return {k: v for k, v in config.to_diff_dict().items() if not k.startswith("_") and k != "transformers_version"}
