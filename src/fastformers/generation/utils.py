"""`model.generate(...)`: greedy, sampling and beam search, token for token as transformers.

Read top to bottom: `generate` settles the configuration and inputs (`_prepare_config`,
`_prepare_inputs`), builds the logits processors and stopping criteria, allocates the KV cache, then
runs one of two decode loops:

- `_decode` (greedy and multinomial sampling): one forward per token. The token buffer, attention
  mask and position ids are allocated once for the whole generation and each step passes views of
  them, so a step allocates little beyond what the forward itself does. The only host syncs are the
  ones stopping needs (one `any()` per step when there is an eos / stop criterion).
- `_beam_search`: transformers 5's vectorised beam search (the top 2*num_beams continuations per
  step, running and finished beams kept in fixed-shape tensors), with the same arithmetic so that
  sequences, scores and beam indices are identical; the cache is reordered with `cache.reorder`.

The model contract: `forward(input_ids, attention_mask, position_ids, past_key_values, cache_position,
use_cache, logits_to_keep, return_dict)` with `attention_mask` covering cache + new tokens and
`cache_position` the positions the new tokens take in the cache (see cache.py). The cache is the static
one `make_static_cache` sizes from the model's config (a dynamic one when attentions are returned, so
that they cover the tokens so far, as in transformers).

Encoder-decoder models (`config.is_encoder_decoder`: BART, Marian, T5) go through the same two loops on
the decoder sequence. `_prepare_encoder_decoder` runs `get_encoder()` once on the un-expanded batch,
repeats its output and the encoder mask per beam / returned sequence, and starts the decoder from
`decoder_start_token_id` (or the given `decoder_input_ids`); every step then calls
`forward(decoder_input_ids, encoder_outputs, attention_mask=<encoder mask>, past_key_values, cache_position,
use_cache, return_dict)` (decoder inputs are never padded), and `make_static_cache` returns an
`EncoderDecoderCache`. Lengths (max_length, min_length, ...) count decoder
tokens, and the result is the decoder sequences, starting with the start token, as in transformers.
"""

from __future__ import annotations

import copy
import inspect
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .. import ops
from ..outputs import _output
from .cache import DynamicCache, EncoderDecoderCache, make_static_cache, rename_cache_argument, static_cache_nbytes
from ..configuration import available_memory
from .configuration import GenerationConfig
from .logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    ExponentialDecayLengthPenalty,
    ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor,
    InfNanRemoveLogitsProcessor,
    LogitNormalization,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    PrefixConstrainedLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)
from .stopping_criteria import (
    EosTokenCriteria,
    MaxLengthCriteria,
    MaxTimeCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
)

logger = logging.getLogger("fastformers")

GenerateDecoderOnlyOutput = _output("GenerateDecoderOnlyOutput", "sequences", "scores", "logits", "attentions",
                                    "hidden_states", "past_key_values")
GenerateBeamDecoderOnlyOutput = _output("GenerateBeamDecoderOnlyOutput", "sequences", "sequences_scores", "scores",
                                        "logits", "beam_indices", "attentions", "hidden_states", "past_key_values")
GenerateEncoderDecoderOutput = _output(
    "GenerateEncoderDecoderOutput", "sequences", "scores", "logits", "encoder_attentions", "encoder_hidden_states",
    "decoder_attentions", "cross_attentions", "decoder_hidden_states", "past_key_values")
GenerateBeamEncoderDecoderOutput = _output(
    "GenerateBeamEncoderDecoderOutput", "sequences", "sequences_scores", "scores", "logits", "beam_indices",
    "encoder_attentions", "encoder_hidden_states", "decoder_attentions", "cross_attentions", "decoder_hidden_states",
    "past_key_values")
# transformers' older names
GreedySearchEncoderDecoderOutput = SampleEncoderDecoderOutput = GenerateEncoderDecoderOutput
BeamSearchEncoderDecoderOutput = BeamSampleEncoderDecoderOutput = GenerateBeamEncoderDecoderOutput
GreedySearchDecoderOnlyOutput = SampleDecoderOnlyOutput = GenerateDecoderOnlyOutput
BeamSearchDecoderOnlyOutput = BeamSampleDecoderOnlyOutput = GenerateBeamDecoderOnlyOutput

# Settings fastformers does not implement: generate() refuses them rather than ignore them.
_UNSUPPORTED = {
    "penalty_alpha": "contrastive search", "dola_layers": "DoLa decoding", "constraints": "constrained beam search",
    "force_words_ids": "constrained beam search", "guidance_scale": "classifier-free guidance",
    "watermarking_config": "watermarking", "token_healing": "token healing", "top_h": "top-H sampling",
    "prompt_lookup_num_tokens": "prompt lookup decoding", "assistant_early_exit": "self-speculative decoding",
    "use_mtp": "multi-token prediction", "low_memory": "low-memory beam search",
    "encoder_repetition_penalty": "encoder repetition penalty", "encoder_no_repeat_ngram_size": "encoder n-gram bans",
    "num_beam_groups": "group beam search", "diversity_penalty": "group beam search",
}
_INACTIVE = {"guidance_scale": (1, 1.0), "encoder_repetition_penalty": (1.0,), "encoder_no_repeat_ngram_size": (0,),
             "num_beam_groups": (1,), "diversity_penalty": (0.0,), "token_healing": (False,), "low_memory": (False,),
             "use_mtp": (False,), "penalty_alpha": (0, 0.0)}
_MODEL_INPUTS = ("input_ids", "attention_mask", "past_key_values", "position_ids")
_SEQ2SEQ_INPUTS = ("decoder_input_ids", "encoder_outputs", "decoder_attention_mask")


class GenerationMixin:
    """Adds `generate()` to a causal language model (see the module docstring for the contract)."""

    @classmethod
    def can_generate(cls) -> bool:
        return True

    @torch.no_grad()
    def generate(self, inputs: Optional[torch.Tensor] = None, generation_config: Optional[GenerationConfig] = None,
                 logits_processor: Optional[LogitsProcessorList] = None,
                 stopping_criteria: Optional[StoppingCriteriaList] = None,
                 prefix_allowed_tokens_fn: Optional[Callable[[int, torch.Tensor], List[int]]] = None,
                 synced_gpus: Optional[bool] = None, assistant_model=None, streamer=None, *,
                 generator: Optional[torch.Generator] = None, **kwargs):
        """Generate token ids after `inputs` / `input_ids` (batch, prompt length), as transformers does.

        Generation settings come from `generation_config` (default: the model's), overridden by
        keyword arguments (`max_new_tokens=...`, `do_sample=True`, `num_beams=4`, ...). Also accepted:
        `attention_mask` (left padding), `cache` or `past_key_values` (a cache to continue from), `tokenizer`
        (needed by `stop_strings`), `streamer`, and `generator` (a torch.Generator used for sampling
        instead of torch's global one). Returns the sequences (prompt + new tokens), or with
        `return_dict_in_generate=True` an output with `sequences`, `scores`, `logits`,
        `sequences_scores` / `beam_indices` (beam search) and `cache`.

        Encoder-decoder models: `inputs` / `input_ids` and `attention_mask` are the encoder's (padding on
        either side), `decoder_input_ids` optionally starts the decoder, `encoder_outputs` skips the
        encoder; the result is the decoder sequences (start token + new tokens), and the return_dict
        outputs are GenerateEncoderDecoderOutput / GenerateBeamEncoderDecoderOutput.
        """
        if assistant_model is not None:
            raise NotImplementedError("assisted generation (assistant_model) is not supported by fastformers")
        tokenizer = kwargs.pop("tokenizer", None)
        rename_cache_argument(kwargs)
        # lengths the caller asked for in this call (past the model's positions: an error); lengths from the
        # model's generation_config are only capped to the positions
        asked_length = any(kwargs.get(k) is not None for k in ("max_new_tokens", "max_length")) or (
            generation_config is not None and (generation_config.max_new_tokens is not None
                                               or generation_config.max_length is not None))
        config, model_kwargs, default_max_length = self._prepare_config(generation_config, kwargs)
        mode = config.get_generation_mode()
        if streamer is not None and mode.startswith("beam"):
            raise ValueError("`streamer` cannot be used with beam search (yet!). Make sure that `num_beams` is set "
                             "to 1.")

        if model_kwargs.get("position_ids") is not None:
            raise NotImplementedError("generate() computes position_ids from the attention_mask; passing "
                                      "position_ids is not supported")
        cache = model_kwargs.get("past_key_values")
        expand = max(config.num_beams, config.num_return_sequences)  # one row per beam / returned sequence
        seq2seq = None
        if self._is_encoder_decoder():
            input_ids, eos, pad, seq2seq = self._prepare_encoder_decoder(inputs, model_kwargs, config, expand)
            attention_mask = torch.ones_like(input_ids)  # decoder inputs are never padded
        else:
            input_ids, attention_mask, eos, pad = self._prepare_inputs(inputs, model_kwargs, config)
            if expand > 1:
                input_ids = input_ids.repeat_interleave(expand, dim=0)
                attention_mask = attention_mask.repeat_interleave(expand, dim=0)
        if streamer is not None:
            streamer.put(input_ids.cpu())

        prompt_len = input_ids.shape[1]
        self._set_lengths(config, prompt_len, default_max_length,
                          "decoder_input_ids" if seq2seq is not None else "input_ids", asked_length)
        has_padding = not bool(attention_mask.all())
        processors = self._logits_processors(config, prompt_len, eos, attention_mask if has_padding else None,
                                             prefix_allowed_tokens_fn, logits_processor, input_ids.device)
        criteria = self._stopping_criteria(config, eos, stopping_criteria, tokenizer)

        # the attention mask and position ids of the whole generation, allocated once
        max_length = config.max_length
        batch = input_ids.shape[0]
        new = max_length - prompt_len
        static = cache is None and config.use_cache and not (config.return_dict_in_generate
                                                              and config.output_attentions)
        # what this call allocates up front: the token buffer, mask and positions (int64), the static cache;
        # refused past the device's free memory (models without a position limit, e.g. T5, reach it)
        planned = 3 * batch * max_length * 8 + (
            static_cache_nbytes(self.config, batch, max_length - 1, self.dtype) if static else 0)
        free = _free_memory(input_ids.device)
        if free is not None and planned > free:
            raise torch.OutOfMemoryError(
                f"generate() would allocate {planned:,} bytes up front (batch size {batch}, max_new_tokens={new}, "
                f"a {max_length}-token static KV cache) but {input_ids.device} has {free:,} bytes free: lower "
                f"max_new_tokens or the batch size")
        try:
            return self._generate_within(input_ids, attention_mask, has_padding, cache, static, seq2seq, config,
                                         mode, processors, criteria, eos, pad, streamer, generator)
        except torch.OutOfMemoryError as e:
            failure = str(e).splitlines()[0] if str(e) else type(e).__name__
        # outside the handler: the traceback (and with it every tensor this call made) is gone; the cache
        # memory goes back to the device before the caller sees the error, and the model stays usable
        if input_ids.device.type == "cuda":
            torch.cuda.empty_cache()
        raise torch.OutOfMemoryError(
            f"generate() ran out of memory on {input_ids.device} (batch size {batch}, max_new_tokens={new}; "
            f"{planned:,} bytes allocated up front for the token buffer and KV cache, then the model's "
            f"activations): {failure}. What generate() allocated is freed; lower max_new_tokens or the batch size")

    def _generate_within(self, input_ids, attention_mask, has_padding, cache, static, seq2seq, config, mode,
                         processors, criteria, eos, pad, streamer, generator):
        """The allocations and the loop of generate() (which turns an out-of-memory error in here into a
        clear one)."""
        max_length = config.max_length
        batch, prompt_len = input_ids.shape
        new = max_length - prompt_len
        if has_padding:
            mask = torch.cat([attention_mask, attention_mask.new_ones(batch, new)], dim=1)
            positions = (attention_mask.long().cumsum(-1) - 1).masked_fill_(attention_mask == 0, 0)
        else:
            mask = None  # no padding: the model needs no mask (saves it a check per step)
            positions = torch.arange(prompt_len, device=input_ids.device).expand(batch, -1)
        positions = torch.cat([positions, positions[:, -1:] + torch.arange(1, new + 1, device=input_ids.device)], 1)

        if static:  # the last token is never fed back: max_length - 1 slots suffice
            cache = self.make_static_cache(batch, max_length - 1)
        elif cache is None and config.use_cache:
            cache = EncoderDecoderCache() if seq2seq is not None else DynamicCache()
        state = _State(mask, positions, cache, config, seq2seq)
        if "logits_to_keep" in inspect.signature(self.forward).parameters:
            state.extra["logits_to_keep"] = 1  # the LM head runs for the last position only

        if mode.startswith("beam"):
            return self._beam_search(input_ids, state, processors, criteria, eos, pad, generator)
        return self._decode(input_ids, state, processors, criteria, pad, streamer, generator)

    def make_static_cache(self, batch_size: int, max_length: int):
        """A preallocated KV cache for this model (see cache.make_static_cache), in its dtype and device."""
        return make_static_cache(self.config, batch_size, max_length, self.dtype, self.device)

    def compute_transition_scores(self, sequences: torch.Tensor, scores: Tuple[torch.Tensor, ...],
                                  beam_indices: Optional[torch.Tensor] = None, normalize_logits: bool = False
                                  ) -> torch.Tensor:
        """The score of each generated token, (sequences, steps), from the `scores` (and for beam search
        the `beam_indices`) of a return_dict output; `normalize_logits` applies log_softmax first.
        Steps after a beam finished are 0."""
        stacked = torch.stack(scores)  # (steps, rows, vocab)
        if normalize_logits:
            stacked = F.log_softmax(stacked, dim=-1)
        if beam_indices is None:
            beam_indices = torch.arange(stacked.shape[1], device=sequences.device)[:, None].expand(-1, len(scores))
        valid = beam_indices >= 0
        steps = int(valid.sum(-1).max())
        rows, valid = beam_indices[:, :steps].clamp(min=0).long(), valid[:, :steps]
        tokens = sequences[:, sequences.shape[-1] - steps:]
        step = torch.arange(steps, device=sequences.device)[None, :]
        return stacked[step, rows, tokens].masked_fill(~valid, 0.0)

    # ------------------------------------------------------------------------------------------
    # preparation
    # ------------------------------------------------------------------------------------------
    def _prepare_config(self, generation_config: Optional[GenerationConfig], kwargs: Dict[str, Any]
                        ) -> Tuple[GenerationConfig, Dict[str, Any], bool]:
        """The call's config: `generation_config` (or a blank one), completed by the model's
        generation_config, then by the global defaults, then overridden by `kwargs`. Returns it and
        the kwargs that are not generation settings (the model inputs), and whether max_length is the
        global default (nobody set it)."""
        model_config = getattr(self, "generation_config", None)
        if model_config is None:
            model_config = self.generation_config = GenerationConfig.from_model_config(self.config)
        default_max_length = (kwargs.get("max_length") is None and model_config.max_length is None
                              and (generation_config is None or generation_config.max_length is None))
        config = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig()
        config.update(**model_config.to_dict(), defaults_only=True, allow_custom_entries=True)
        config.update(**GenerationConfig.global_defaults(), defaults_only=True)
        model_kwargs = config.update(**kwargs)
        model_kwargs.pop("labels", None)  # Seq2SeqTrainer(predict_with_generate=True) passes them along: unused
        known = _MODEL_INPUTS + ("inputs_embeds",) + (_SEQ2SEQ_INPUTS if self._is_encoder_decoder() else ())
        unknown = [k for k in model_kwargs if k not in known]
        if unknown:
            raise ValueError(f"The following `model_kwargs` are not used by the model: {unknown} (note: typos in the "
                             f"generate arguments will also show up in this list)")
        if model_kwargs.get("inputs_embeds") is not None:
            raise NotImplementedError("generate(inputs_embeds=...) is not supported by fastformers; pass input_ids")
        for name, feature in _UNSUPPORTED.items():
            value = getattr(config, name, None)
            if value is not None and value is not False and value not in _INACTIVE.get(name, ()):
                raise NotImplementedError(f"`{name}` ({feature}) is not supported by fastformers' generate()")
        return config, model_kwargs, default_max_length

    def _prepare_inputs(self, inputs, model_kwargs, config):
        """input_ids, attention_mask, eos ids (1-D tensor or None) and the pad id (tensor or None)."""
        input_ids = model_kwargs.get("input_ids")
        if inputs is not None and input_ids is not None:
            raise ValueError("`inputs` were passed alongside `input_ids`, which is not allowed: pass one of them")
        input_ids = inputs if inputs is not None else input_ids
        attention_mask = model_kwargs.get("attention_mask")
        device = self.device
        if input_ids is None:
            if config.bos_token_id is None:
                raise ValueError("`bos_token_id` has to be defined when no `input_ids` are provided.")
            batch = attention_mask.shape[0] if attention_mask is not None else 1
            input_ids = torch.full((batch, 1), config.bos_token_id, dtype=torch.long, device=device)
        self._check_ids("input_ids", input_ids)
        input_ids = input_ids.to(device)

        def as_ids(value):
            return None if value is None else torch.tensor(value, dtype=torch.long, device=device).reshape(-1)

        eos = as_ids(config.eos_token_id)
        pad = as_ids(config.pad_token_id)
        pad = pad[0] if pad is not None else (eos[0] if eos is not None else None)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
            # infer the padding from pad_token_id when it can be told apart from eos
            if pad is not None and (input_ids == pad).any() and (eos is None or not bool((eos == pad).any())):
                attention_mask = input_ids.ne(pad).long()
        else:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"`attention_mask` must have the shape of input_ids {tuple(input_ids.shape)}, "
                                 f"got {tuple(attention_mask.shape)}")
            attention_mask = attention_mask.to(device)
        if input_ids.shape[0] > 1 and not bool(attention_mask[:, -1].all()):
            logger.warning("A decoder-only architecture is being used, but right-padding was detected! For correct "
                           "generation results, please set `padding_side='left'` when initializing the tokenizer.")
        return input_ids, attention_mask, eos, pad

    def _check_ids(self, name: str, ids) -> None:
        """A (batch, length) integer tensor with at least one row and one token, every id in the vocabulary.
        (transformers 5.25 fails later with a reshape or index error naming no argument.)"""
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise ValueError(f"`{name}` must be a tensor of shape (batch, sequence length), got {shape}")
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ValueError(f"`{name}` must hold integer token ids, got dtype {ids.dtype}")
        if ids.shape[0] == 0:
            raise ValueError(f"`{name}` is an empty batch (shape {tuple(ids.shape)}): pass at least one sequence")
        if ids.shape[1] == 0:
            raise ValueError(f"`{name}` is an empty prompt (shape {tuple(ids.shape)}): pass at least one token "
                             "(e.g. the bos token), or no input_ids to start from bos_token_id")
        vocab = getattr(self.config, "vocab_size", None)
        if vocab is not None:
            lo, hi = (int(v) for v in torch.aminmax(ids))  # one host sync, once per generate()
            if lo < 0 or hi >= vocab:  # IndexError, as the model's forward (and torch's embedding) raise
                raise IndexError(f"`{name}` holds token id {lo if lo < 0 else hi}, outside the model's vocabulary "
                                 f"[0, {vocab})")

    def _is_encoder_decoder(self) -> bool:
        return bool(getattr(self.config, "is_encoder_decoder", False))

    def _prepare_encoder_decoder(self, inputs, model_kwargs, config, expand: int):
        """Encoder-decoder models: run the encoder once, start the decoder. Returns the decoder input ids
        (one row per beam / returned sequence), eos ids, the pad id, and the `_Seq2Seq` step inputs."""
        input_ids = model_kwargs.get("input_ids")
        if inputs is not None and input_ids is not None:
            raise ValueError("`inputs` were passed alongside `input_ids`, which is not allowed: pass one of them")
        input_ids = inputs if inputs is not None else input_ids
        attention_mask = model_kwargs.get("attention_mask")
        encoder_outputs = model_kwargs.get("encoder_outputs")
        decoder_mask = model_kwargs.get("decoder_attention_mask")
        if decoder_mask is not None and not bool(decoder_mask.all()):
            raise NotImplementedError("generate() with a padded decoder_attention_mask is not supported by "
                                      "fastformers: decoder inputs are not padded")
        device = self.device
        if input_ids is not None:
            self._check_ids("input_ids", input_ids)
            input_ids = input_ids.to(device)
        if attention_mask is not None:
            if input_ids is not None and attention_mask.shape != input_ids.shape:
                raise ValueError(f"`attention_mask` must have the shape of input_ids {tuple(input_ids.shape)}, "
                                 f"got {tuple(attention_mask.shape)}")
            attention_mask = attention_mask.to(device)

        # the encoder, once, on the un-expanded batch (transformers does not infer its mask from padding)
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("an encoder-decoder model needs `inputs` / `input_ids` (or `encoder_outputs`)")
            encoder_kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "return_dict": True}
            if config.return_dict_in_generate and config.output_attentions:
                encoder_kwargs["output_attentions"] = True
            if config.return_dict_in_generate and config.output_hidden_states:
                encoder_kwargs["output_hidden_states"] = True
            encoder_outputs = self.get_encoder()(**encoder_kwargs)
        elif not hasattr(encoder_outputs, "last_hidden_state"):
            raise TypeError("`encoder_outputs` must be the encoder's output (with a `last_hidden_state`), got "
                            f"{type(encoder_outputs).__name__}")
        states = encoder_outputs.last_hidden_state
        batch = states.shape[0]
        if attention_mask is not None and attention_mask.shape[0] != batch:
            raise ValueError(f"`attention_mask` has {attention_mask.shape[0]} rows, the encoder output {batch}")

        def as_ids(value):
            return None if value is None else torch.tensor(value, dtype=torch.long, device=device).reshape(-1)

        eos = as_ids(config.eos_token_id)
        pad = as_ids(config.pad_token_id)
        pad = pad[0] if pad is not None else (eos[0] if eos is not None else None)
        start = config.decoder_start_token_id
        if start is None:
            start = config.bos_token_id
        if start is None:
            raise ValueError("`decoder_start_token_id` or `bos_token_id` has to be defined for encoder-decoder "
                             "generation.")
        start = as_ids(start)
        if start.numel() == 1:
            start = start.expand(batch)
        elif start.numel() != batch:
            raise ValueError(f"`decoder_start_token_id` expected to have length {batch} but got {start.numel()}")
        start = start.view(batch, 1)

        decoder_input_ids = model_kwargs.get("decoder_input_ids")
        if decoder_input_ids is None:
            decoder_input_ids = start
        else:
            if decoder_input_ids.dim() != 2 or decoder_input_ids.shape[0] != batch:
                raise ValueError(f"`decoder_input_ids` must have shape ({batch}, length), got "
                                 f"{tuple(decoder_input_ids.shape)}")
            self._check_ids("decoder_input_ids", decoder_input_ids)
            decoder_input_ids = decoder_input_ids.to(device)
            if bool((decoder_input_ids[:, 0] != start[:, 0]).all()):  # transformers prepends the start token
                decoder_input_ids = torch.cat([start, decoder_input_ids], dim=-1)

        if expand > 1:
            decoder_input_ids = decoder_input_ids.repeat_interleave(expand, dim=0)
            attention_mask = attention_mask.repeat_interleave(expand, dim=0) if attention_mask is not None else None
            expanded = copy.copy(encoder_outputs)
            expanded["last_hidden_state"] = states.repeat_interleave(expand, dim=0)
        else:
            expanded = encoder_outputs
        return decoder_input_ids, eos, pad, _Seq2Seq(encoder_outputs, expanded, attention_mask)

    def _set_lengths(self, config: GenerationConfig, prompt_len: int, default_max_length: bool,
                     input_name: str = "input_ids", asked_length: bool = True) -> None:
        """Resolve max_new_tokens / min_new_tokens into absolute max_length / min_length, within the model's
        positions (`asked_length`: the call set the length, so going past them is an error, not a cap)."""
        if config.max_new_tokens is not None:
            config.max_length = prompt_len + config.max_new_tokens
        elif default_max_length:  # transformers' default: 20 new tokens, within the model's positions
            config.max_length = config.max_length + prompt_len
            max_positions = getattr(self.config, "max_position_embeddings", None)
            if max_positions is not None:
                config.max_length = min(config.max_length, max_positions)
        if config.min_new_tokens is not None:
            config.min_length = prompt_len + config.min_new_tokens
        if prompt_len >= config.max_length:
            raise ValueError(f"Input length of {input_name} is {prompt_len}, but `max_length` is set to "
                             f"{config.max_length}. This can lead to unexpected behavior. You should consider "
                             "increasing `max_length` or, better yet, setting `max_new_tokens`.")
        # Checked here, before the token buffer and the static cache (both sized from max_length) exist.
        # transformers 5.25 only warns and runs on (RoPE models) or fails with an IndexError once the
        # positions run out (learned positions); fastformers refuses up front.
        max_positions = getattr(self.config, "max_position_embeddings", None)
        if max_positions is not None and config.max_length > max_positions and not asked_length \
                and prompt_len < max_positions:
            logger.warning("The model's generation_config asks for max_length %d (with the prompt), past its "
                           "max_position_embeddings %d: generating up to %d tokens.", config.max_length,
                           max_positions, max_positions)
            config.max_length = max_positions
        if max_positions is not None and config.max_length > max_positions:
            asked = (f"max_new_tokens={config.max_new_tokens}" if config.max_new_tokens is not None
                     else f"max_length={config.max_length}")
            raise ValueError(f"{asked} with a prompt of {prompt_len} tokens ({input_name}) needs "
                             f"{config.max_length} positions, but the model has max_position_embeddings="
                             f"{max_positions}: " + (f"lower max_new_tokens to at most {max_positions - prompt_len}"
                                                     if prompt_len < max_positions else "shorten the prompt"))

    def _logits_processors(self, config, prompt_len, eos, padding_mask, prefix_allowed_tokens_fn, custom, device
                           ) -> LogitsProcessorList:
        """transformers' processors, in transformers' order; those that would change nothing are left out."""
        procs = LogitsProcessorList()
        if config.sequence_bias is not None:
            procs.append(SequenceBiasLogitsProcessor(config.sequence_bias))
        if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
            ignore = (padding_mask != 0).int().argmax(dim=1) if padding_mask is not None else None
            procs.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty, prompt_ignore_length=ignore))
        if config.no_repeat_ngram_size is not None and config.no_repeat_ngram_size > 0:
            procs.append(NoRepeatNGramLogitsProcessor(config.no_repeat_ngram_size))
        if config.bad_words_ids is not None:
            procs.append(NoBadWordsLogitsProcessor(config.bad_words_ids, eos))
        if eos is not None and config.min_length is not None and config.min_length > 0:
            procs.append(MinLengthLogitsProcessor(config.min_length, eos, device=device))
        if eos is not None and config.min_new_tokens is not None and config.min_new_tokens > 0:
            procs.append(MinNewTokensLengthLogitsProcessor(prompt_len, config.min_new_tokens, eos, device=device))
        if prefix_allowed_tokens_fn is not None:
            procs.append(PrefixConstrainedLogitsProcessor(prefix_allowed_tokens_fn, config.num_beams))
        if config.forced_bos_token_id is not None:
            procs.append(ForcedBOSTokenLogitsProcessor(config.forced_bos_token_id))
        if config.forced_eos_token_id is not None:
            procs.append(ForcedEOSTokenLogitsProcessor(config.max_length, config.forced_eos_token_id, device=device))
        if config.remove_invalid_values is True:
            procs.append(InfNanRemoveLogitsProcessor())
        if config.exponential_decay_length_penalty is not None:
            procs.append(ExponentialDecayLengthPenalty(config.exponential_decay_length_penalty, eos, prompt_len))
        if config.suppress_tokens is not None:
            procs.append(SuppressTokensLogitsProcessor(config.suppress_tokens, device=device))
        if config.begin_suppress_tokens is not None:
            begin = prompt_len + (1 if prompt_len == 1 and config.forced_bos_token_id is not None else 0)
            procs.append(SuppressTokensAtBeginLogitsProcessor(config.begin_suppress_tokens, begin, device=device))
        procs = _merge(procs, custom)
        if config.do_sample:  # the warpers
            # beam sampling keeps enough tokens for a non-eos continuation
            keep = (len(eos) if eos is not None else 1) + 1 if config.num_beams > 1 else 1
            if config.temperature is not None and config.temperature != 1.0:
                procs.append(TemperatureLogitsWarper(config.temperature))
            if config.top_k is not None and config.top_k != 0:
                procs.append(TopKLogitsWarper(config.top_k, min_tokens_to_keep=keep))
            if config.top_p is not None and config.top_p < 1.0:
                procs.append(TopPLogitsWarper(config.top_p, min_tokens_to_keep=keep))
            if config.min_p is not None:
                procs.append(MinPLogitsWarper(config.min_p, min_tokens_to_keep=keep))
            if config.typical_p is not None and config.typical_p < 1.0:
                procs.append(TypicalLogitsWarper(config.typical_p, min_tokens_to_keep=keep))
            if config.epsilon_cutoff is not None and 0.0 < config.epsilon_cutoff < 1.0:
                procs.append(EpsilonLogitsWarper(config.epsilon_cutoff, min_tokens_to_keep=keep))
            if config.eta_cutoff is not None and 0.0 < config.eta_cutoff < 1.0:
                procs.append(EtaLogitsWarper(config.eta_cutoff, min_tokens_to_keep=keep, device=device))
        if config.renormalize_logits is True:
            procs.append(LogitNormalization())
        return procs

    def _stopping_criteria(self, config, eos, custom, tokenizer) -> StoppingCriteriaList:
        criteria = StoppingCriteriaList([MaxLengthCriteria(config.max_length,
                                                           getattr(self.config, "max_position_embeddings", None))])
        if config.max_time is not None:
            criteria.append(MaxTimeCriteria(config.max_time))
        if config.stop_strings is not None:
            if tokenizer is None:
                raise ValueError("There are one or more stop strings, either in the arguments to `generate` or in "
                                 "the model's generation config, but we could not locate a tokenizer. When "
                                 "generating with stop strings, you must pass the model's tokenizer to the "
                                 "`tokenizer` argument of `generate`.")
            criteria.append(StopStringCriteria(tokenizer, config.stop_strings))
        if eos is not None:
            criteria.append(EosTokenCriteria(eos))
        return _merge(criteria, custom)

    # ------------------------------------------------------------------------------------------
    # the model step
    # ------------------------------------------------------------------------------------------
    def _step(self, state: "_State", tokens: torch.Tensor, start: int, end: int):
        """Run the model on `tokens` (the positions [start, end) of the sequence); logits of the last."""
        cache = state.cache
        if cache is None:  # no cache: the whole sequence every step
            start = 0
        cache_position = state.cache_positions[start:end]
        if state.seq2seq is not None:
            return self(decoder_input_ids=tokens, encoder_outputs=state.seq2seq.encoder_outputs,
                        attention_mask=state.seq2seq.attention_mask, past_key_values=cache,
                        cache_position=cache_position, use_cache=cache is not None, return_dict=True, **state.extra)
        mask = state.mask[:, :end] if state.mask is not None else None
        return self(input_ids=tokens, attention_mask=mask, position_ids=state.positions[:, start:end],
                    past_key_values=cache, cache_position=cache_position, use_cache=cache is not None,
                    return_dict=True, **state.extra)

    def _prefill(self, state: "_State", input_ids: torch.Tensor):
        """The prompt's forward (in chunks with prefill_chunk_size); skips what a given cache holds."""
        end = input_ids.shape[1]
        start = state.cache.get_seq_length() if state.cache is not None else 0
        if start >= end:
            raise ValueError(f"the cache already holds {start} tokens, as many as the {end} of input_ids: "
                             "input_ids must hold at least one new token")
        chunk = state.prefill_chunk if state.cache is not None and state.prefill_chunk else end - start
        out = None
        for lo in range(start, end, chunk):
            hi = min(lo + chunk, end)
            out = self._step(state, input_ids[:, lo:hi] if state.cache is not None else input_ids[:, :hi], lo, hi)
        return out

    def _compiled_greedy(self, state: "_State", eos: Optional[torch.Tensor], forbid: torch.Tensor,
                         forbid_until: torch.Tensor) -> Optional[Callable]:
        """`loop(seq, cur, stop) -> (cur, finite)` running the rest of a greedy search of one sequence in one call
        (models with a compiled decode loop say how: models/llama.py), or None. It extends seq (1, max_length),
        which holds cur tokens, to stop tokens or past the first id in `eos`, with each step's `forbid` ids set to
        -inf while the length is under their `forbid_until`; finite=False: it stopped at logits holding NaN or Inf,
        without a token from them."""
        return None

    # ------------------------------------------------------------------------------------------
    # greedy search and multinomial sampling
    # ------------------------------------------------------------------------------------------
    def _decode(self, input_ids, state, processors, criteria, pad, streamer, generator):
        """Greedy search / multinomial sampling: process the last logits, pick a token, append, stop."""
        config = state.config
        batch, cur = input_ids.shape
        max_length = config.max_length
        want = _Recorder(config)
        # the sequences of the whole generation, written in place
        seq = input_ids.new_empty((batch, max_length))
        seq[:, :cur] = input_ids
        next_tokens = input_ids.new_empty(batch)
        unfinished = torch.ones(batch, dtype=torch.bool, device=input_ids.device)
        # the common case: only max_length and eos stop, checked here without the criteria objects
        fast = all(type(c) in (MaxLengthCriteria, EosTokenCriteria) for c in criteria)
        eos = next((c.eos_token_id.to(seq.device) for c in criteria if isinstance(c, EosTokenCriteria)), None)
        pad_finished = batch > 1 and any(hasattr(c, "eos_token_id") for c in criteria)
        if pad_finished and pad is None:
            raise ValueError("`pad_token_id` must be set to pad finished sequences (set it, or eos_token_id)")

        # Non-finite logits from the model: flagged on the device (no host sync of its own) and raised at the
        # next sync the loop makes anyway (eos / criteria, streamer, sampling, the end): no token computed
        # from them is ever returned or streamed. remove_invalid_values=True asks to clean them instead.
        watch = _NonFiniteWatch(seq.device, config.remove_invalid_values is not True)
        out = self._prefill(state, seq[:, :cur])
        # greedy search of one unpadded sequence that nothing watches per step: the model may run every step
        # after the first in one compiled call (the same kernels and picks, token for token)
        loop = None
        if (not config.do_sample and batch == 1 and fast and streamer is None and not want.on and watch.on
                and state.mask is None and state.seq2seq is None and seq.device.type == "cpu"):
            forbid = _eos_forbidden(processors)
            if forbid is not None:
                loop = self._compiled_greedy(state, eos, *forbid)
        while True:
            logits = out.logits[:, -1]
            if logits.dtype != torch.float32:
                logits = logits.float()
            watch.update(logits)
            scores = processors(seq[:, :cur], logits) if processors else logits
            want.record(out, logits, scores)
            if config.do_sample:
                watch.check(cur)  # before multinomial, which rejects NaN its own way
                probs = F.softmax(scores, dim=-1)
                torch.multinomial(probs, 1, generator=generator, out=next_tokens.view(batch, 1))
            else:
                next_tokens.copy_(ops.argmax(scores))  # torch.argmax's answer (a one-pass kernel on CPU)
            # rows that finished earlier get padding
            seq[:, cur] = torch.where(unfinished, next_tokens, pad) if pad_finished else next_tokens
            new = seq[:, cur]
            cur += 1
            del out
            if streamer is not None:
                watch.check(cur - 1)
                streamer.put(new.cpu())
            if fast:
                if eos is not None:
                    unfinished &= ~torch.isin(new, eos) if eos.numel() > 1 else new != eos
                    if not bool(unfinished.any() & watch.finite()):
                        break
                if cur >= max_length:
                    break
            else:
                unfinished &= ~criteria(seq[:, :cur], want.scores)
                if cur >= max_length or not bool(unfinished.any() & watch.finite()):
                    break
            if loop is not None:  # the remaining steps in one call
                cur, finite = loop(seq, cur, max_length)
                if not finite:
                    watch.flag()
                break
            out = self._step(state, seq[:, cur - 1:cur] if state.cache is not None else seq[:, :cur], cur - 1, cur)

        watch.check(cur - 1)
        if streamer is not None:
            streamer.end()
        sequences = seq[:, :cur] if cur == max_length else seq[:, :cur].contiguous()
        if not config.return_dict_in_generate:
            return sequences
        if state.seq2seq is not None:
            return GenerateEncoderDecoderOutput(sequences=sequences, scores=want.scores, logits=want.logits,
                                                **state.seq2seq.encoder_fields(config), **want.decoder_fields(),
                                                past_key_values=state.cache)
        return GenerateDecoderOnlyOutput(sequences=sequences, scores=want.scores, logits=want.logits,
                                         attentions=want.attentions, hidden_states=want.hidden_states,
                                         past_key_values=state.cache)

    # ------------------------------------------------------------------------------------------
    # beam search
    # ------------------------------------------------------------------------------------------
    def _beam_search(self, input_ids, state, processors, criteria, eos, pad, generator):
        """transformers 5's vectorised beam search. Per step: add each beam's log-probabilities to its
        score, take the best `2 * num_beams` (more with several eos ids) continuations over all beams,
        keep the best `num_beams` that did not stop as the running beams, and merge the ones among the
        top `num_beams` that stopped into the finished beams (scored with the length penalty)."""
        config = state.config
        num_beams, max_length = config.num_beams, config.max_length
        length_penalty, early_stopping = config.length_penalty, config.early_stopping
        rows, cur = input_ids.shape
        batch, prompt_len = rows // num_beams, cur
        device = input_ids.device
        want = _Recorder(config)
        keep = max(2, 1 + (len(eos) if eos is not None else 0)) * num_beams
        top_beams = torch.arange(keep, device=device) < num_beams
        batch_offset = torch.arange(batch, device=device).view(-1, 1) * num_beams

        # what shorter finished sequences are padded with (transformers: pad, or eos when pad is 0/None)
        fill = (int(pad) if pad is not None and int(pad) != 0 else int(eos[0])) if eos is not None else -1
        running = torch.full((batch, num_beams, max_length), fill, dtype=torch.long, device=device)
        running[:, :, :cur] = input_ids.view(batch, num_beams, cur)
        finished = running.clone()
        running_scores = torch.zeros((batch, num_beams), dtype=torch.float, device=device)
        running_scores[:, 1:] = -1e9  # only the first beam's continuations count at the first step
        finished_scores = torch.full((batch, num_beams), -1e9, dtype=torch.float, device=device)
        is_finished = torch.zeros((batch, num_beams), dtype=torch.bool, device=device)
        can_improve = torch.ones((batch, 1), dtype=torch.bool, device=device)
        running_idx = torch.full((batch, num_beams, max_length - cur), -1, dtype=torch.int32, device=device)
        finished_idx = running_idx.clone()

        watch = _NonFiniteWatch(device, config.remove_invalid_values is not True)  # as in _decode
        out = self._prefill(state, input_ids)
        while True:
            logits = out.logits[:, -1].float()
            watch.update(logits)
            if config.do_sample:
                watch.check(cur)
            log_probs = F.log_softmax(logits, dim=-1)
            flat_running = running[:, :, :cur].reshape(rows, cur)
            log_probs = processors(flat_running, log_probs) if processors else log_probs
            want.record(out, logits, log_probs)
            del out
            vocab = log_probs.shape[-1]
            totals = (log_probs.view(batch, num_beams, vocab) + running_scores[:, :, None]).view(batch, -1)

            # a. the best `keep` continuations over all beams of each batch row
            if config.do_sample:
                top_ids = torch.multinomial(F.softmax(totals, dim=-1), keep, generator=generator)
                top_scores, order = totals.gather(1, top_ids).sort(dim=-1, descending=True)  # best first (5.25)
                top_ids = top_ids.gather(1, order)
            else:
                top_scores, top_ids = torch.topk(totals, keep)
            source = top_ids // vocab
            cand = _take(running, source)
            cand[:, :, cur] = top_ids % vocab
            cand_idx = _take(running_idx, source)
            cand_idx[:, :, cur - prompt_len] = (source + batch_offset).to(cand_idx.dtype)
            stopped = criteria(cand[:, :, :cur + 1].reshape(batch * keep, cur + 1), want.scores).view(batch, keep)

            # b. the running beams: the best continuations that did not stop
            live_scores = top_scores + stopped.to(torch.float32) * -1.0e9
            best = torch.topk(live_scores, num_beams)[1]
            running, running_scores, running_idx = _take(cand, best), _take(live_scores, best), _take(cand_idx, best)

            # c. the finished beams: merge in the top-num_beams continuations that just stopped
            just_finished = stopped & top_beams[None, :]
            done_scores = top_scores / ((cur + 1 - prompt_len) ** length_penalty)
            batch_full = torch.all(is_finished, dim=-1, keepdim=True) & (early_stopping is True)
            done_scores += batch_full.to(torch.float32) * -1.0e9
            done_scores += (~can_improve).to(torch.float32) * -1.0e9
            done_scores += (~just_finished) * -1.0e9
            merged_scores = torch.cat((finished_scores, done_scores), dim=1)
            best = torch.topk(merged_scores, num_beams)[1]
            finished = _take(torch.cat((finished, cand), dim=1), best)
            finished_scores = _take(merged_scores, best)
            finished_idx = _take(torch.cat((finished_idx, cand_idx), dim=1), best)
            is_finished = _take(torch.cat((is_finished, just_finished), dim=1), best)

            # d. the cache follows the running beams
            if state.cache is not None:
                state.cache.reorder(running_idx[:, :, cur - prompt_len].reshape(-1))
            cur += 1

            # e. stop when no running beam can beat the finished ones (transformers' heuristic), when
            #    every beam finished with early_stopping=True, or when every continuation stopped
            if early_stopping == "never" and length_penalty > 0.0:
                best_length = max_length - prompt_len
            else:
                best_length = cur - prompt_len
            best_possible = running_scores[:, :1] / (best_length ** length_penalty)
            worst_finished = torch.where(is_finished, torch.min(finished_scores, dim=1, keepdim=True)[0], -1.0e9)
            can_improve = can_improve & torch.any(best_possible > worst_finished, dim=-1, keepdim=True)
            go_on = (torch.any(can_improve) & ~(torch.all(is_finished) & (early_stopping is True))
                     & ~torch.all(stopped) & watch.finite())
            if not bool(go_on):
                break
            tokens = running[:, :, cur - 1].reshape(rows, 1) if state.cache is not None else \
                running[:, :, :cur].reshape(rows, cur)
            out = self._step(state, tokens, cur - 1, cur)

        watch.check(cur - 1)
        n = config.num_return_sequences
        sequences = finished[:, :n].reshape(batch * n, -1)
        scores = finished_scores[:, :n].reshape(-1)
        beam_indices = finished_idx[:, :n].reshape(batch * n, -1)
        generated = int((beam_indices + 1).bool().sum(dim=1).max())
        sequences = sequences[:, :prompt_len + generated]
        if not config.return_dict_in_generate:
            return sequences
        if state.seq2seq is not None:
            return GenerateBeamEncoderDecoderOutput(
                sequences=sequences, sequences_scores=scores if config.output_scores else None, scores=want.scores,
                logits=want.logits, beam_indices=beam_indices[:, :generated], **state.seq2seq.encoder_fields(config),
                **want.decoder_fields(), past_key_values=state.cache)
        return GenerateBeamDecoderOnlyOutput(
            sequences=sequences, sequences_scores=scores if config.output_scores else None, scores=want.scores,
            logits=want.logits, beam_indices=beam_indices[:, :generated], attentions=want.attentions,
            hidden_states=want.hidden_states, past_key_values=state.cache)


class _Seq2Seq:
    """An encoder-decoder generation's encoder side: the encoder output as computed (returned in the
    return_dict outputs) and expanded per beam / returned sequence, with the encoder mask (what every step
    passes to the model)."""

    def __init__(self, computed, encoder_outputs, attention_mask) -> None:
        self.computed, self.encoder_outputs, self.attention_mask = computed, encoder_outputs, attention_mask

    def encoder_fields(self, config: GenerationConfig) -> Dict[str, Any]:
        return {"encoder_attentions": self.computed.get("attentions") if config.output_attentions else None,
                "encoder_hidden_states": self.computed.get("hidden_states") if config.output_hidden_states else None}


class _State:
    """What every model step of one generate() call shares."""

    def __init__(self, mask, positions, cache, config, seq2seq: Optional[_Seq2Seq] = None) -> None:
        self.mask, self.positions, self.cache, self.config = mask, positions, cache, config
        self.cache_positions = torch.arange(config.max_length, device=positions.device)  # sliced per step
        self.seq2seq = seq2seq
        self.prefill_chunk = config.prefill_chunk_size
        self.extra = {}
        if config.return_dict_in_generate and config.output_attentions:
            self.extra["output_attentions"] = True
        if config.return_dict_in_generate and config.output_hidden_states:
            self.extra["output_hidden_states"] = True


class _Recorder:
    """The per-step outputs return_dict_in_generate asks for (None when not asked for)."""

    def __init__(self, config: GenerationConfig) -> None:
        on = bool(config.return_dict_in_generate)
        self.scores = () if on and config.output_scores else None
        self.logits = () if on and config.output_logits else None
        self.attentions = () if on and config.output_attentions else None
        self.hidden_states = () if on and config.output_hidden_states else None
        self.cross_attentions = self.attentions
        self.on = any(v is not None for v in (self.scores, self.logits, self.attentions, self.hidden_states))

    def record(self, out, logits, scores) -> None:
        if self.scores is not None:
            self.scores += (scores.clone(),)
        if self.logits is not None:
            self.logits += (logits.clone(),)
        seq2seq = "decoder_attentions" in out.__dataclass_fields__
        if self.attentions is not None:
            self.attentions += (out.decoder_attentions if seq2seq else out.attentions,)
            if seq2seq:
                self.cross_attentions += (out.cross_attentions,)
        if self.hidden_states is not None:
            self.hidden_states += (out.decoder_hidden_states if seq2seq else out.hidden_states,)

    def decoder_fields(self) -> Dict[str, Any]:
        return {"decoder_attentions": self.attentions, "cross_attentions": self.cross_attentions,
                "decoder_hidden_states": self.hidden_states}


def _eos_forbidden(processors) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """(ids, until) when the processors only forbid eos ids while the sequence is short (min_length,
    min_new_tokens): id ids[i] is set to -inf while the length is under until[i]. None for any other processor."""
    ids, until = [], []
    for p in processors:
        if type(p) is MinLengthLogitsProcessor:
            end = p.min_length
        elif type(p) is MinNewTokensLengthLogitsProcessor:
            end = p.prompt_length_to_skip + p.min_new_tokens
        else:
            return None
        ids.append(p.eos_token_id.reshape(-1).long().cpu())
        until.append(torch.full_like(ids[-1], end))
    if not ids:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(ids), torch.cat(until)


class _NonFiniteWatch:
    """NaN / Inf in the model's logits, flagged on the device with no host sync: a NaN or Inf logit makes the
    vocabulary sum NaN / Inf, and 0 * that sum is NaN (0 * a finite sum is 0), so `acc` stays 0 until one
    appears. A sum (two small kernels) rather than isfinite().all(): 25x cheaper on a 50k vocabulary on CPU.
    (A float32 sum that overflows, logits near 1e34, also counts: such logits are garbage too.)"""

    def __init__(self, device, on: bool) -> None:
        self.acc = torch.zeros((), dtype=torch.float32, device=device)
        self.on = on

    def update(self, logits: torch.Tensor) -> None:
        if self.on:
            self.acc.add_(logits.sum() * 0)

    def finite(self) -> torch.Tensor:
        return torch.isfinite(self.acc)

    def flag(self) -> None:
        """Logits were NaN or Inf (seen elsewhere: a compiled loop)."""
        self.acc.fill_(float("nan"))

    def check(self, length: int) -> None:
        """Stop generation (a host sync) when logits were NaN / Inf. transformers 5.25 emits argmax(NaN) tokens
        in greedy and beam search and fails inside torch.multinomial when sampling."""
        if self.on and not bool(torch.isfinite(self.acc)):
            raise FloatingPointError(f"the model's logits contain NaN or Inf (at or before the step that extends "
                                     f"the sequence past {length} tokens); generation stopped without returning "
                                     "tokens computed from them. Check the weights and the dtype (float16 "
                                     "overflow?).")


def _free_memory(device: torch.device) -> Optional[int]:
    """Bytes a new allocation on `device` can use: free device memory plus what torch's caching allocator
    holds unused (CUDA), MemAvailable (Linux CPU); None when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return available_memory() if device.type == "cpu" else None


def _take(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select along dim 1 (the beam dimension) of a (batch, beams, ...) tensor."""
    while index.dim() < tensor.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(tensor, index, dim=1)


def _merge(defaults: list, custom: Optional[list]) -> list:
    """transformers' rule: a custom processor / criterion replaces a built-in one of the same type;
    the other custom ones come after the built-in ones."""
    if not custom:
        return defaults
    merged = type(defaults)()
    for d in defaults:
        merged.append(next((c for c in custom if type(c) is type(d)), d))
    merged.extend(c for c in custom if c not in merged)
    return merged


__all__ = ["GenerationMixin", "GenerateDecoderOnlyOutput", "GenerateBeamDecoderOnlyOutput",
           "GenerateEncoderDecoderOutput", "GenerateBeamEncoderDecoderOutput"]
