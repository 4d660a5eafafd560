"""GenerationConfig: the knobs of `generate()`, read from and written to generation_config.json.

As in transformers 5, every attribute defaults to None ("not set"); `generate()` fills what neither
the caller nor the model's generation_config.json set from `GenerationConfig.global_defaults()`.
Keys the class does not know (custom entries of a generation_config.json) are kept as attributes.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from typing import Any, Dict, Optional

from ..configuration import read_json
from ..loading.hub import resolve_file

GENERATION_CONFIG_NAME = "generation_config.json"
logger = logging.getLogger("fastformers")

# Every attribute transformers' GenerationConfig has. The ones fastformers does not implement are
# accepted (so any generation_config.json loads) and rejected by generate() only when switched on.
_FIELDS = (
    # length
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "early_stopping", "max_time", "stop_strings",
    # strategy
    "do_sample", "num_beams", "use_mtp",
    # cache
    "use_cache", "cache_implementation", "cache_config", "max_cache_len",
    # logits manipulation
    "temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff",
    "repetition_penalty", "encoder_repetition_penalty", "length_penalty", "no_repeat_ngram_size", "bad_words_ids",
    "renormalize_logits", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "sequence_bias",
    "token_healing", "guidance_scale", "watermarking_config",
    # outputs
    "num_return_sequences", "output_attentions", "output_hidden_states", "output_scores", "output_logits",
    "return_dict_in_generate",
    # special tokens
    "pad_token_id", "bos_token_id", "eos_token_id", "encoder_no_repeat_ngram_size", "decoder_start_token_id",
    # assisted generation
    "is_assistant", "num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold",
    "prompt_lookup_num_tokens", "max_matching_ngram_size", "assistant_early_exit", "assistant_lookbehind",
    "target_lookbehind", "assistant_ensemble_weight", "speculation_type",
    # performance, deprecated strategies
    "compile_config", "disable_compile", "continuous_batching_config", "low_memory", "penalty_alpha",
    "dola_layers", "diversity_penalty", "num_beam_groups", "constraints", "force_words_ids", "prefill_chunk_size",
)

# What generate() uses for anything still unset (transformers' `_get_default_generation_params`).
_GLOBAL_DEFAULTS: Dict[str, Any] = {
    "max_length": 20, "min_length": 0, "do_sample": False, "use_cache": True, "early_stopping": False,
    "num_beams": 1, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0, "repetition_penalty": 1.0,
    "length_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None,
    "num_return_sequences": 1, "output_scores": False, "return_dict_in_generate": False,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "remove_invalid_values": False,
    "exponential_decay_length_penalty": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "encoder_repetition_penalty": 1.0, "num_assistant_tokens": 20,
    "num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.4, "assistant_lookbehind": 10,
    "target_lookbehind": 10, "num_beam_groups": 1, "diversity_penalty": 0.0,
}

_EXTRA_OUTPUT_FLAGS = ("output_attentions", "output_hidden_states", "output_scores", "output_logits")
# Arguments of generate() itself, a common mistake to put in a config.
_GENERATE_ARGUMENTS = ("logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn", "synced_gpus",
                       "assistant_model", "streamer", "negative_prompt_ids", "negative_prompt_attention_mask")
_METADATA = ("transformers_version", "_from_model_config", "_commit_hash", "_original_object_hash")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class GenerationConfig:
    def __init__(self, **kwargs: Any) -> None:
        lenient = kwargs.pop("_lenient", False)  # files and model configs: warn, so that loading never fails
        for name in _FIELDS:
            setattr(self, name, kwargs.pop(name, None))
        kwargs.pop("_commit_hash", None)
        self._from_model_config = kwargs.pop("_from_model_config", None)
        self.transformers_version = kwargs.pop("transformers_version", None)
        if not self._from_model_config:  # custom entries are kept (not the rest of a model config)
            for key, value in kwargs.items():
                setattr(self, key, value)
        try:
            self.validate()
        except ValueError as e:
            if not lenient:
                raise
            logger.warning("generation config: %s (generate() will refuse it until it is changed)", e)

    # -- construction -----------------------------------------------------------------------
    @staticmethod
    def global_defaults() -> Dict[str, Any]:
        return dict(_GLOBAL_DEFAULTS)

    # the name Seq2SeqTrainer(predict_with_generate=True) calls
    _get_default_generation_params = global_defaults

    @classmethod
    def from_dict(cls, config_dict: Dict[str, Any], **kwargs: Any) -> "GenerationConfig":
        """`kwargs` override the dict's values (every key becomes an attribute, so none is unused)."""
        return_unused_kwargs = kwargs.pop("return_unused_kwargs", False)
        config = cls(**{**config_dict, **kwargs})
        return (config, {}) if return_unused_kwargs else config

    @classmethod
    def from_pretrained(cls, pretrained_model_name: str | os.PathLike, config_file_name: Optional[str] = None, *,
                        revision: Optional[str] = None, cache_dir=None, local_files_only: bool = False,
                        token: Optional[str] = None, **kwargs: Any) -> "GenerationConfig":
        """Read generation_config.json (or `config_file_name`) of a checkpoint folder or hub repository.

        As in transformers, a checkpoint without that file raises OSError (callers loading a model
        fall back to `GenerationConfig.from_model_config(config)`). `kwargs` override loaded values."""
        for key in ("force_download", "proxies", "_from_auto", "_from_pipeline"):
            kwargs.pop(key, None)
        name = config_file_name or GENERATION_CONFIG_NAME
        subfolder = kwargs.pop("subfolder", None)
        if subfolder:
            name = f"{subfolder}/{name}"
        path = resolve_file(pretrained_model_name, name, revision=revision, cache_dir=cache_dir,
                            local_files_only=local_files_only, token=token, required=False)
        if path is None:
            raise OSError(f"{os.fspath(pretrained_model_name)!r} has no {name}")
        return cls.from_dict(read_json(path), _lenient=True, **kwargs)

    @classmethod
    def from_model_config(cls, model_config) -> "GenerationConfig":
        """The generation settings a model config carries (special token ids, legacy generation keys)."""
        config_dict = model_config if isinstance(model_config, dict) else model_config.to_dict()
        config_dict = {k: v for k, v in config_dict.items() if v is not None and k != "_from_model_config"}
        config = cls(**config_dict, _from_model_config=True, _lenient=True)
        # some models keep their generation attributes in the decoder / text sub-config
        for sub in ("decoder", "generator", "text_config"):
            sub_config = config_dict.get(sub)
            if sub_config is not None and not isinstance(sub_config, dict):
                sub_config = sub_config.to_dict()
            if isinstance(sub_config, dict):
                for key in _FIELDS:
                    if getattr(config, key) is None and sub_config.get(key) is not None:
                        setattr(config, key, copy.deepcopy(sub_config[key]))
                break
        if not config.return_dict_in_generate and any(getattr(config, f) for f in _EXTRA_OUTPUT_FLAGS):
            config.return_dict_in_generate = True
        return config

    # -- updating and checking ----------------------------------------------------------------
    def update(self, defaults_only: bool = False, allow_custom_entries: bool = False, **kwargs: Any) -> Dict[str, Any]:
        """Set the attributes named in `kwargs` (only unset ones with `defaults_only`); return the
        kwargs that are not attributes."""
        used = []
        for key, value in kwargs.items():
            if hasattr(self, key):
                if not defaults_only or getattr(self, key) is None:
                    setattr(self, key, value)
                used.append(key)
            elif allow_custom_entries:
                setattr(self, key, value)
                used.append(key)
        self.validate()
        return {k: v for k, v in kwargs.items() if k not in used}

    def validate(self, strict: bool = False) -> None:
        """Raise ValueError, naming the argument, for values no generation can use."""
        def bad(name, requirement):
            raise ValueError(f"`{name}` {requirement}, but is {getattr(self, name)!r}")

        def check_int(name, low, requirement):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                bad(name, requirement)

        def check_number(name, ok, requirement):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or not ok(value)):
                bad(name, requirement)

        if self.early_stopping not in (None, True, False, "never"):
            bad("early_stopping", "must be a boolean or 'never'")
        check_int("max_new_tokens", 1, "must be greater than 0")
        check_int("max_length", 1, "must be a positive integer")
        check_int("min_new_tokens", 0, "must be a non-negative integer")
        check_int("min_length", 0, "must be a non-negative integer")
        check_int("num_beams", 1, "must be a positive integer")
        check_int("num_return_sequences", 1, "must be a positive integer")
        check_int("top_k", 0, "must be a non-negative integer (0 disables top-k)")
        check_int("no_repeat_ngram_size", 0, "must be a non-negative integer")
        check_number("temperature", lambda v: v >= 0, "must be a non-negative number")
        check_number("top_p", lambda v: 0 < v <= 1, "must be a float in (0, 1]")
        check_number("min_p", lambda v: 0 <= v <= 1, "must be a float in [0, 1]")
        check_number("typical_p", lambda v: 0 < v <= 1, "must be a float in (0, 1]")
        check_number("repetition_penalty", lambda v: v > 0, "must be a strictly positive float")
        check_number("length_penalty", lambda v: True, "must be a number")
        if self.do_sample and self.temperature is not None and self.temperature == 0:
            raise ValueError("`temperature` (=0) has to be a strictly positive float when sampling; "
                             "for greedy decoding set `do_sample=False`")
        if self.max_time is not None and not (_is_number(self.max_time) and self.max_time > 0):
            bad("max_time", "must be a positive number of seconds")
        if self.bad_words_ids is not None and (
                not isinstance(self.bad_words_ids, list) or not self.bad_words_ids
                or any(not isinstance(w, list) or not w or any(not isinstance(t, int) or t < 0 for t in w)
                       for w in self.bad_words_ids)):
            bad("bad_words_ids", "must be a non-empty list of non-empty lists of token ids")
        for name in ("eos_token_id", "forced_eos_token_id"):
            value = getattr(self, name)
            ids = value if isinstance(value, (list, tuple)) else [value]
            if value is not None and any(not isinstance(t, int) or t < 0 for t in ids):
                bad(name, "must be a non-negative token id or a list of them")
        if self.stop_strings is not None and not (
                isinstance(self.stop_strings, str)
                or (isinstance(self.stop_strings, (list, tuple)) and self.stop_strings
                    and all(isinstance(s, str) and s for s in self.stop_strings))):
            bad("stop_strings", "must be a string or a non-empty list of strings")
        if self.num_return_sequences is not None and self.num_return_sequences > 1:
            if self.num_beams is None or self.num_beams == 1:
                if not self.do_sample:
                    raise ValueError("Greedy methods (do_sample != True) without beam search do not support "
                                     f"`num_return_sequences` different than 1 (got {self.num_return_sequences}).")
            elif self.num_return_sequences > self.num_beams:
                raise ValueError(f"`num_return_sequences` ({self.num_return_sequences}) has to be smaller or equal "
                                 f"to `num_beams` ({self.num_beams}).")
        for arg in _GENERATE_ARGUMENTS:
            if arg in self.__dict__:
                raise ValueError(f"Argument `{arg}` is not a valid argument of `GenerationConfig`. It should be "
                                 "passed to `generate()` directly.")

    def get_generation_mode(self) -> str:
        """'greedy_search', 'sample', 'beam_search' or 'beam_sample' (transformers' names)."""
        if self.num_beams is None or self.num_beams == 1:
            return "sample" if self.do_sample is True else "greedy_search"
        return "beam_sample" if self.do_sample is True else "beam_search"

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items()}

    def to_diff_dict(self) -> Dict[str, Any]:
        """The attributes that are set (not None), custom entries included: what generation_config.json holds."""
        return {k: v for k, v in self.to_dict().items() if v is not None and not (k == "_from_model_config" and not v)}

    def to_json_string(self, use_diff: bool = True) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        with open(json_file_path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string(use_diff=use_diff))

    def save_pretrained(self, save_directory: str | os.PathLike, config_file_name: Optional[str] = None,
                        **kwargs: Any) -> None:
        if os.path.isfile(save_directory):
            raise AssertionError(f"Provided path ({save_directory}) should be a directory, not a file")
        os.makedirs(save_directory, exist_ok=True)
        self.to_json_file(os.path.join(save_directory, config_file_name or GENERATION_CONFIG_NAME))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GenerationConfig):
            return False
        strip = lambda d: {k: v for k, v in d.items() if k not in _METADATA}  # noqa: E731
        return strip(self.to_dict()) == strip(other.to_dict())

    def __hash__(self) -> int:
        return hash(self.to_json_string())

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


def _json_default(obj):
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
