"""Logits processors and warpers: `processor(input_ids, scores) -> scores`, as in transformers.

`input_ids` is (batch, length so far), `scores` (batch, vocab) float32. Each processor returns a
new tensor (or `scores` itself when it changes nothing) and never writes into `scores`, so a caller
may keep the scores it passed in. The arithmetic is transformers', operation for operation, so the
processed scores are bitwise the same.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

TokenIds = Union[int, Sequence[int], torch.Tensor]


def _id_tensor(ids: TokenIds, device=None) -> torch.Tensor:
    """One id or a list of ids as a 1-D long tensor."""
    if isinstance(ids, torch.Tensor):
        return ids.reshape(-1).to(device=device, dtype=torch.long) if device is not None else ids.reshape(-1).long()
    return torch.tensor([ids] if isinstance(ids, int) else list(ids), dtype=torch.long, device=device)


class _VocabMask:
    """A (vocab,) boolean mask of some token ids, built once per vocabulary size and device; `fill` sets those
    ids' scores to a value (a copy: the model's logits stay as they were)."""

    def __init__(self, ids: TokenIds) -> None:
        self.ids = _id_tensor(ids)
        self._mask: Optional[torch.Tensor] = None
        self._valid: Optional[torch.Tensor] = None  # the ids inside the vocabulary, on the mask's device

    def fill(self, scores: torch.Tensor, value: float) -> torch.Tensor:
        """scores.masked_fill(self(scores), value), as a copy and a write of the few ids (a masked fill reads a
        mask as long as the vocabulary: ~35 us per call on a 49k vocabulary on a 2-core CPU, against ~5 us)."""
        m = self(scores)
        if self._valid is None or self._valid.device != m.device:
            self._valid = m.nonzero().reshape(-1)
        return scores.index_fill(-1, self._valid, value)

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        m = self._mask
        if m is None or m.shape[0] != scores.shape[-1] or m.device != scores.device:
            ids = self.ids.to(scores.device)
            m = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
            m[ids[(ids >= 0) & (ids < scores.shape[-1])]] = True
            self._mask, self._valid = m, None
        return m


class LogitsProcessor:
    """Base class: `__call__(input_ids, scores) -> processed scores`."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} is an abstract class; subclass it and define __call__")


LogitsWarper = LogitsProcessor  # the name older transformers used for the sampling-only ones


class LogitsProcessorList(list):
    """Applies its processors in order. Extra keyword arguments go to processors that take them."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        for processor in self:
            if kwargs:
                params = list(inspect.signature(processor.__call__).parameters)[2:]
                if params:
                    missing = [p for p in params if p not in kwargs]
                    if missing:
                        raise ValueError(f"{type(processor).__name__} needs the arguments {missing}")
                    scores = processor(input_ids, scores, **kwargs)
                    continue
            scores = processor(input_ids, scores)
        return scores


# -- sampling warpers -----------------------------------------------------------------------------
class TemperatureLogitsWarper(LogitsProcessor):
    def __init__(self, temperature: float) -> None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            msg = f"`temperature` (={temperature}) has to be a strictly positive float, otherwise your next token " \
                  "scores will be invalid."
            if temperature == 0:
                msg += " If you're looking for greedy decoding strategies, set `do_sample=False`."
            raise ValueError(msg)
        self.temperature = float(temperature)

    def __call__(self, input_ids, scores):
        return scores / self.temperature


class TopKLogitsWarper(LogitsProcessor):
    """Keep the `top_k` highest scores (ties with the k-th included)."""

    def __init__(self, top_k: int, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1) -> None:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k <= 0:
            raise ValueError(f"`top_k` has to be a strictly positive integer, but is {top_k}")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value

    def __call__(self, input_ids, scores):
        k = min(self.top_k, scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1, None]
        return scores.masked_fill(scores < kth, self.filter_value)


class TopPLogitsWarper(LogitsProcessor):
    """Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches `top_p`."""

    def __init__(self, top_p: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1) -> None:
        top_p = float(top_p)
        if not 0 < top_p <= 1.0:
            raise ValueError(f"`top_p` has to be a float in (0, 1], but is {top_p}")
        if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
            raise ValueError(f"`min_tokens_to_keep` has to be a positive integer, but is {min_tokens_to_keep}")
        self.top_p, self.filter_value, self.min_tokens_to_keep = top_p, filter_value, min_tokens_to_keep

    def __call__(self, input_ids, scores):
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - self.top_p)  # the low tail whose mass stays under 1 - top_p
        remove_sorted[..., -self.min_tokens_to_keep:] = False
        remove = remove_sorted.scatter(1, order, remove_sorted)
        return scores.masked_fill(remove, self.filter_value)


class MinPLogitsWarper(LogitsProcessor):
    """Drop tokens whose probability is below `min_p` times the top token's."""

    def __init__(self, min_p: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1) -> None:
        if not 0 <= min_p <= 1.0:
            raise ValueError(f"`min_p` has to be a float in the [0, 1] interval, but is {min_p}")
        if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
            raise ValueError(f"`min_tokens_to_keep` has to be a positive integer, but is {min_tokens_to_keep}")
        self.min_p, self.filter_value, self.min_tokens_to_keep = min_p, filter_value, min_tokens_to_keep

    def __call__(self, input_ids, scores):
        probs = torch.softmax(scores, dim=-1)
        remove = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        keep = torch.topk(probs, min(self.min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
        remove.scatter_(-1, keep, False)
        return scores.masked_fill(remove, self.filter_value)


class TypicalLogitsWarper(LogitsProcessor):
    """Locally typical sampling: keep the tokens whose surprisal is closest to the entropy, up to `mass`."""

    def __init__(self, mass: float = 0.9, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1) -> None:
        mass = float(mass)
        if not 0 < mass < 1:
            raise ValueError(f"`typical_p` has to be a float > 0 and < 1, but is {mass}")
        if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
            raise ValueError(f"`min_tokens_to_keep` has to be a positive integer, but is {min_tokens_to_keep}")
        self.mass, self.filter_value, self.min_tokens_to_keep = mass, filter_value, min_tokens_to_keep

    def __call__(self, input_ids, scores):
        logp = F.log_softmax(scores, dim=-1)
        entropy = -(logp * torch.exp(logp)).nansum(-1, keepdim=True)
        distance = torch.abs(-logp - entropy)
        sorted_distance, order = torch.sort(distance, descending=False)
        cumulative = scores.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
        last = (cumulative < self.mass).sum(dim=1).clamp_(max=sorted_distance.shape[-1] - 1)
        remove_sorted = sorted_distance > sorted_distance.gather(1, last.view(-1, 1))
        remove_sorted[..., :self.min_tokens_to_keep] = False
        remove = remove_sorted.scatter(1, order, remove_sorted)
        return scores.masked_fill(remove, self.filter_value)


class EpsilonLogitsWarper(LogitsProcessor):
    """Drop tokens whose probability is below `epsilon`."""

    def __init__(self, epsilon: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1) -> None:
        epsilon = float(epsilon)
        if not 0 < epsilon < 1:
            raise ValueError(f"`epsilon_cutoff` has to be a float > 0 and < 1, but is {epsilon}")
        if int(min_tokens_to_keep) < 1:
            raise ValueError(f"`min_tokens_to_keep` has to be a strictly positive integer, but is {min_tokens_to_keep}")
        self.epsilon, self.filter_value, self.min_tokens_to_keep = epsilon, filter_value, int(min_tokens_to_keep)

    def _threshold(self, scores):
        return self.epsilon

    def __call__(self, input_ids, scores):
        remove = scores.softmax(dim=-1) < self._threshold(scores)
        k = min(self.min_tokens_to_keep, scores.shape[-1])
        remove = remove & (scores < torch.topk(scores, k)[0][..., -1, None])
        return scores.masked_fill(remove, self.filter_value)


class EtaLogitsWarper(EpsilonLogitsWarper):
    """Eta sampling: the cutoff is min(eta, sqrt(eta) * exp(-entropy))."""

    def __init__(self, epsilon: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1,
                 device: str = "cpu") -> None:
        epsilon = float(epsilon)
        if not 0 < epsilon < 1:
            raise ValueError(f"`eta_cutoff` has to be a float > 0 and < 1, but is {epsilon}")
        super().__init__(epsilon, filter_value, min_tokens_to_keep)
        self.epsilon = torch.tensor(epsilon, device=device)

    def _threshold(self, scores):
        entropy = torch.distributions.Categorical(logits=scores).entropy()
        eps = self.epsilon.to(scores.device)
        return torch.min(eps, torch.sqrt(eps) * torch.exp(-entropy))[..., None]


# -- penalties and constraints -------------------------------------------------------------------
class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Divide positive (multiply negative) scores of every token already in the sequence by `penalty`.

    `prompt_ignore_length`: leading positions to skip, an int or one per row (generate passes each
    row's left padding, so padding tokens are not penalised)."""

    def __init__(self, penalty: float, prompt_ignore_length: Union[int, torch.Tensor, None] = None) -> None:
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty > 0:
            raise ValueError(f"`penalty` has to be a strictly positive float, but is {penalty}")
        if isinstance(prompt_ignore_length, int) and prompt_ignore_length < 0:
            raise ValueError(f"`prompt_ignore_length` has to be a positive integer, but is {prompt_ignore_length}")
        if isinstance(prompt_ignore_length, torch.Tensor) and prompt_ignore_length.dim() != 1:
            raise ValueError("`prompt_ignore_length` must be 1D")
        self.penalty = float(penalty)
        self.prompt_ignore_length = prompt_ignore_length

    def __call__(self, input_ids, scores):
        vocab = scores.shape[-1]
        skip = self.prompt_ignore_length
        if isinstance(skip, int):
            input_ids = input_ids[:, skip:]
        elif isinstance(skip, torch.Tensor):
            if skip.shape[0] != input_ids.shape[0]:
                raise ValueError("Incompatible `prompt_ignore_length` batch size")
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            input_ids = input_ids.masked_fill(positions[None, :] < skip.to(input_ids.device)[:, None], vocab)
        ids = input_ids.clamp(max=vocab)  # ids >= vocab land in a scratch column, dropped below
        padded = F.pad(scores, (0, 1))
        picked = padded.gather(1, ids)
        picked = torch.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return padded.scatter(1, ids, picked)[..., :vocab]


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Ban every token that would repeat an n-gram of size `ngram_size` already in the sequence."""

    def __init__(self, ngram_size: int) -> None:
        if not isinstance(ngram_size, int) or isinstance(ngram_size, bool) or ngram_size <= 0:
            raise ValueError(f"`ngram_size` has to be a strictly positive integer, but is {ngram_size}")
        self.ngram_size = ngram_size

    def __call__(self, input_ids, scores):
        n, cur_len, vocab = self.ngram_size, input_ids.shape[-1], scores.shape[-1]
        if cur_len < n:
            return scores
        prefix = input_ids[:, cur_len + 1 - n:]           # the last n - 1 tokens
        windows = input_ids.unfold(1, n, 1)                # every n-gram so far
        hit = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)
        banned = scores.new_zeros((scores.shape[0], vocab + 1), dtype=torch.bool)
        banned.scatter_(1, torch.where(hit, windows[..., -1].clamp(max=vocab), vocab), True)
        return scores.masked_fill(banned[:, :vocab], -float("inf"))


class SequenceBiasLogitsProcessor(LogitsProcessor):
    """Add a bias to a token when the tokens before it complete a given sequence.

    `sequence_bias`: {tuple of ids: bias} or [[ids, bias], ...]."""

    def __init__(self, sequence_bias) -> None:
        if isinstance(sequence_bias, list) and all(isinstance(s, (list, tuple)) and len(s) == 2
                                                   and isinstance(s[0], list) for s in sequence_bias):
            sequence_bias = {tuple(ids): bias for ids, bias in sequence_bias}
        if not isinstance(sequence_bias, dict) or not sequence_bias:
            raise ValueError(f"`sequence_bias` has to be a non-empty dictionary, or non-empty list of lists but is "
                             f"{sequence_bias}.")
        for ids, bias in sequence_bias.items():
            if not isinstance(ids, tuple) or not ids or any(not isinstance(t, int) or t < 0 for t in ids):
                raise ValueError(f"Each key in `sequence_bias` has to be a non-empty tuple of positive integers, "
                                 f"but is {sequence_bias}.")
            if not isinstance(bias, float):
                raise ValueError(f"`sequence_bias` has to be a dict with floats as values, but is {sequence_bias}.")
        self.sequence_bias: Dict[Tuple[int, ...], float] = sequence_bias
        self._prepared_for: Optional[Tuple[int, torch.device]] = None

    def _prepare(self, scores: torch.Tensor) -> None:
        vocab, device = scores.shape[-1], scores.device
        invalid = [t for ids in self.sequence_bias for t in ids if t >= vocab]
        if invalid:
            raise ValueError(f"The model vocabulary size is {vocab}, but the following tokens were being biased: "
                             f"{invalid}")
        self.single_bias = torch.zeros(vocab, dtype=torch.float, device=device)
        singles = [(ids[0], b) for ids, b in self.sequence_bias.items() if len(ids) == 1]
        if singles:
            self.single_bias[[t for t, _ in singles]] = torch.tensor([b for _, b in singles], device=device)
        by_prefix_len: Dict[int, List] = {}
        for ids, bias in self.sequence_bias.items():
            if len(ids) > 1:
                by_prefix_len.setdefault(len(ids) - 1, []).append((ids, bias))
        self.multi_bias = [
            (torch.tensor([ids[:-1] for ids, _ in group], device=device),
             torch.tensor([ids[-1] for ids, _ in group], device=device),
             torch.tensor([b for _, b in group], dtype=torch.float, device=device))
            for group in by_prefix_len.values()]
        self._prepared_for = (vocab, device)

    def __call__(self, input_ids, scores):
        if self._prepared_for != (scores.shape[-1], scores.device):
            self._prepare(scores)
        bias = torch.zeros_like(scores)
        bias += self.single_bias
        for prefixes, last, values in self.multi_bias:
            n = prefixes.shape[1]
            if n > input_ids.shape[1]:
                continue
            matching = (input_ids[:, None, -n:] == prefixes).all(dim=-1)  # (batch, sequences)
            bias.index_add_(1, last, torch.where(matching, values, 0.0).to(bias.dtype))
        return scores + bias


class NoBadWordsLogitsProcessor(SequenceBiasLogitsProcessor):
    """Forbid token sequences: the last token of each is banned when the tokens before it match.
    Single-token bad words equal to an eos id are ignored (eos stays possible)."""

    def __init__(self, bad_words_ids: List[List[int]], eos_token_id: Optional[TokenIds] = None) -> None:
        if not isinstance(bad_words_ids, list) or not bad_words_ids:
            raise ValueError(f"`bad_words_ids` has to be a non-empty list, but is {bad_words_ids}.")
        if any(not isinstance(w, list) for w in bad_words_ids):
            raise ValueError(f"`bad_words_ids` has to be a list of lists, but is {bad_words_ids}.")
        if any(any(not isinstance(t, int) or t < 0 for t in w) for w in bad_words_ids):
            raise ValueError(f"Each list in `bad_words_ids` has to be a list of positive integers, but is "
                             f"{bad_words_ids}.")
        self.bad_word_ids = bad_words_ids
        if eos_token_id is not None:
            eos = _id_tensor(eos_token_id).tolist()
            bad_words_ids = [w for w in bad_words_ids if all(w != [e] for e in eos)]
        super().__init__({tuple(w): float("-inf") for w in bad_words_ids})


class MinLengthLogitsProcessor(LogitsProcessor):
    """Forbid eos while the sequence (prompt included) is shorter than `min_length`."""

    def __init__(self, min_length: int, eos_token_id: TokenIds, device: str = "cpu") -> None:
        if not isinstance(min_length, int) or min_length < 0:
            raise ValueError(f"`min_length` has to be a non-negative integer, but is {min_length}")
        self.min_length = min_length
        self.eos_token_id = _id_tensor(eos_token_id, device)
        self._eos = _VocabMask(self.eos_token_id)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] < self.min_length:
            return self._eos.fill(scores, -math.inf)
        return scores


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """Forbid eos until `min_new_tokens` tokens follow the prompt (of length `prompt_length_to_skip`)."""

    def __init__(self, prompt_length_to_skip: int, min_new_tokens: int, eos_token_id: TokenIds,
                 device: str = "cpu") -> None:
        for name, value in (("prompt_length_to_skip", prompt_length_to_skip), ("min_new_tokens", min_new_tokens)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` has to be a positive integer, but is {value}")
        self.prompt_length_to_skip, self.min_new_tokens = prompt_length_to_skip, min_new_tokens
        self.eos_token_id = _id_tensor(eos_token_id, device)
        self._eos = _VocabMask(self.eos_token_id)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] - self.prompt_length_to_skip < self.min_new_tokens:
            return self._eos.fill(scores, -math.inf)
        return scores


class ForcedBOSTokenLogitsProcessor(LogitsProcessor):
    """Force `bos_token_id` as the first generated token (when the sequence has length 1)."""

    def __init__(self, bos_token_id: int) -> None:
        self.bos_token_id = bos_token_id

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] != 1:
            return scores
        out = torch.full_like(scores, -math.inf)
        out[:, self.bos_token_id] = 0
        return out


class ForcedEOSTokenLogitsProcessor(LogitsProcessor):
    """Force an eos token as the last token when `max_length` is reached."""

    def __init__(self, max_length: int, eos_token_id: TokenIds, device: str = "cpu") -> None:
        self.max_length = max_length
        self.eos_token_id = _id_tensor(eos_token_id, device)
        if (self.eos_token_id < 0).any():
            raise ValueError(f"`eos_token_id` has to be a list of positive integers, but is {eos_token_id}")

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] != self.max_length - 1:
            return scores
        out = torch.full_like(scores, -math.inf)
        out[:, self.eos_token_id.to(scores.device)] = 0
        return out


class InfNanRemoveLogitsProcessor(LogitsProcessor):
    """Replace nan by 0 and +-inf by the dtype's largest / smallest value."""

    def __call__(self, input_ids, scores):
        out = torch.where(scores != scores, 0.0, scores)
        out = torch.where(scores == float("inf"), torch.finfo(scores.dtype).max, out)
        return torch.where(scores == -float("inf"), torch.finfo(scores.dtype).min, out)


class ExponentialDecayLengthPenalty(LogitsProcessor):
    """Raise the eos score exponentially once `start` tokens follow the prompt: (start, factor)."""

    def __init__(self, exponential_decay_length_penalty: Tuple[int, float], eos_token_id: TokenIds,
                 input_ids_seq_length: int) -> None:
        self.regulation_start = exponential_decay_length_penalty[0] + input_ids_seq_length
        self.regulation_factor = exponential_decay_length_penalty[1]
        self.eos_token_id = _id_tensor(eos_token_id)
        if (self.eos_token_id < 0).any():
            raise ValueError(f"`eos_token_id` has to be a list of positive integers, but is {eos_token_id}")

    def __call__(self, input_ids, scores):
        cur_len = input_ids.shape[-1]
        if cur_len <= self.regulation_start:
            return scores
        eos = self.eos_token_id.to(scores.device)
        penalty = torch.abs(scores[:, eos]) * (pow(self.regulation_factor, cur_len - self.regulation_start) - 1)
        penalties = torch.zeros_like(scores)
        penalties[:, eos] = penalty.masked_fill(~torch.isfinite(scores[:, eos]), 0.0)
        return scores + penalties


class LogitNormalization(LogitsProcessor):
    """log_softmax: turns scores into normalised log-probabilities (renormalize_logits=True)."""

    def __call__(self, input_ids, scores):
        return scores.log_softmax(dim=-1)


class SuppressTokensLogitsProcessor(LogitsProcessor):
    """Never generate the given tokens."""

    def __init__(self, suppress_tokens: Iterable[int], device: str = "cpu") -> None:
        self.suppress_tokens = torch.tensor(list(suppress_tokens), dtype=torch.long, device=device)
        self._mask = _VocabMask(self.suppress_tokens)

    def __call__(self, input_ids, scores):
        return self._mask.fill(scores, -float("inf"))


class SuppressTokensAtBeginLogitsProcessor(LogitsProcessor):
    """Do not generate the given tokens as the token at position `begin_index`."""

    def __init__(self, begin_suppress_tokens: Iterable[int], begin_index: int, device: str = "cpu") -> None:
        self.begin_suppress_tokens = torch.tensor(list(begin_suppress_tokens), dtype=torch.long, device=device)
        self.begin_index = begin_index
        self._mask = _VocabMask(self.begin_suppress_tokens)

    def set_begin_index(self, begin_index: int) -> None:
        self.begin_index = begin_index

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] != self.begin_index:
            return scores
        return self._mask.fill(scores, -float("inf"))


class PrefixConstrainedLogitsProcessor(LogitsProcessor):
    """Allow only the tokens `prefix_allowed_tokens_fn(batch_id, sequence)` returns."""

    def __init__(self, prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], List[int]], num_beams: int) -> None:
        self._fn = prefix_allowed_tokens_fn
        self._num_beams = num_beams

    def __call__(self, input_ids, scores):
        mask = torch.full_like(scores, -math.inf)
        batch = input_ids.shape[0] // self._num_beams
        for row in range(input_ids.shape[0]):
            allowed = self._fn(row // self._num_beams, input_ids[row])
            if len(allowed) == 0:
                raise ValueError(f"`prefix_allowed_tokens_fn` returned an empty list for batch ID "
                                 f"{row // self._num_beams}. This means that the constraint is unsatisfiable.")
            mask[row, allowed] = 0
        out = scores + mask
        # a row whose allowed tokens all have -inf scores gets the bare mask (uniform over allowed)
        dead = out.amax(dim=-1).isneginf().view(batch, -1).all(dim=-1, keepdim=True)
        return torch.where(dead.repeat_interleave(self._num_beams, dim=0), mask, out)


__all__ = [
    "LogitsProcessor", "LogitsWarper", "LogitsProcessorList", "TemperatureLogitsWarper", "TopKLogitsWarper",
    "TopPLogitsWarper", "MinPLogitsWarper", "TypicalLogitsWarper", "EpsilonLogitsWarper", "EtaLogitsWarper",
    "RepetitionPenaltyLogitsProcessor", "NoRepeatNGramLogitsProcessor", "SequenceBiasLogitsProcessor",
    "NoBadWordsLogitsProcessor", "MinLengthLogitsProcessor", "MinNewTokensLengthLogitsProcessor",
    "ForcedBOSTokenLogitsProcessor", "ForcedEOSTokenLogitsProcessor", "InfNanRemoveLogitsProcessor",
    "ExponentialDecayLengthPenalty", "LogitNormalization", "SuppressTokensLogitsProcessor",
    "SuppressTokensAtBeginLogitsProcessor", "PrefixConstrainedLogitsProcessor",
]
