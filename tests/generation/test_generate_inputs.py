"""generate() on hostile or careless inputs: lengths past the model's positions, empty prompts and batches,
ids outside the vocabulary, NaN / Inf logits. Each gets a clear error naming the argument, raised before
anything large is allocated and before any token computed from bad logits is returned.

Where fastformers is stricter than transformers 5.25 (checked on the same tiny models):
- max_new_tokens past max_position_embeddings: transformers warns and runs on (RoPE models) or fails with
  `IndexError: index out of range in self` once the learned positions run out (GPT-2); fastformers
  refuses before allocating the token buffer and the static cache.
- an empty prompt (1, 0) or an empty batch (0, n): transformers fails inside attention with
  `RuntimeError: cannot reshape tensor of 0 elements ...`.
- NaN / Inf logits: transformers' greedy and beam search return argmax(NaN) tokens; its sampling fails
  inside torch.multinomial (`probability tensor contains either inf, nan or element < 0`).
"""

from __future__ import annotations

import resource
import time

import pytest
import torch

from gen_models import model_pair

PROMPT = torch.tensor([[5, 6, 7]])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


@pytest.mark.parametrize("name", ["llama", "gpt2"])
@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=10**8), dict(max_length=10**8),
                                    dict(max_new_tokens=10**8, num_beams=2),
                                    dict(max_new_tokens=10**8, do_sample=True)])
@pytest.mark.malformed
def test_max_new_tokens_past_positions_raises_before_allocating(name, kwargs):
    ours, _ = model_pair(name)
    before, start = _peak_rss_mb(), time.perf_counter()
    with pytest.raises(ValueError, match=r"max_(new_tokens|length)=100000000.*max_position_embeddings=256"):
        ours.generate(PROMPT, **kwargs)
    assert time.perf_counter() - start < 5
    assert _peak_rss_mb() - before < 200  # a 10**8-slot cache would be gigabytes


def test_max_new_tokens_up_to_the_limit_still_generates():
    ours, _ = model_pair("llama")
    out = ours.generate(PROMPT, max_new_tokens=256 - 3, eos_token_id=None, min_new_tokens=0)
    assert out.shape == (1, 256)
    with pytest.raises(ValueError, match="at most 253"):
        ours.generate(PROMPT, max_new_tokens=254)
    with pytest.raises(ValueError, match="shorten the prompt"):
        ours.generate(torch.full((1, 300), 5), max_new_tokens=1)


def test_a_length_from_the_generation_config_is_capped_not_refused(caplog):
    # the call did not ask for it: the model's own generation_config (a checkpoint's generation_config.json)
    ours, _ = model_pair("llama")
    saved = ours.generation_config
    ours.generation_config = type(saved).from_dict({**saved.to_dict(), "max_new_tokens": 10**8})
    try:
        before = _peak_rss_mb()
        with caplog.at_level("WARNING", logger="fastformers"):
            out = ours.generate(PROMPT, eos_token_id=None)
        assert out.shape == (1, 256) and _peak_rss_mb() - before < 200
        assert "past its max_position_embeddings 256" in caplog.text
        with pytest.raises(ValueError, match="max_new_tokens=100000000"):  # asked for in the call: refused
            ours.generate(PROMPT, max_new_tokens=10**8)
    finally:
        ours.generation_config = saved


@pytest.mark.malformed
@pytest.mark.parametrize("shape, what", [((1, 0), "empty prompt"), ((0, 3), "empty batch"), ((0, 0), "empty batch")])
def test_empty_prompt_and_batch_name_the_argument(shape, what):
    ours, _ = model_pair("llama")
    with pytest.raises(ValueError, match=f"`input_ids` is an {what}"):
        ours.generate(torch.zeros(shape, dtype=torch.long), max_new_tokens=2)


@pytest.mark.parametrize("bad, error, match", [
    (torch.tensor([[5, 99]]), IndexError, "`input_ids` holds token id 99, outside the model's vocabulary"),
    (torch.tensor([[-1, 5]]), IndexError, "token id -1"),
    (torch.tensor([[5.0, 6.0]]), ValueError, "`input_ids` must hold integer token ids"),
    (torch.tensor([5, 6]), ValueError, "`input_ids` must be a tensor of shape"),
])
@pytest.mark.malformed
def test_bad_ids_name_the_argument(bad, error, match):
    # transformers 5.25: IndexError from the embedding for out-of-range ids (a device assert on CUDA), naming
    # no argument; fastformers checks before the first forward, with the type the model's forward raises
    ours, _ = model_pair("llama")
    with pytest.raises(error, match=match):
        ours.generate(bad, max_new_tokens=2)


class _PoisonLogits:
    """A forward hook on the LM head that turns the logits NaN (or +Inf) from its `after`-th call on."""

    def __init__(self, model, after: int, value: float) -> None:
        self.calls, self.after, self.value = 0, after, value
        self.handle = model.get_output_embeddings().register_forward_hook(self)

    def __call__(self, module, args, output):
        self.calls += 1
        if self.calls > self.after:
            output = output.clone()
            output[..., 7] = self.value
        return output

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("kwargs", [dict(), dict(do_sample=True), dict(num_beams=2), dict(eos_token_id=None),
                                    dict(num_beams=2, do_sample=True)])
@pytest.mark.malformed
def test_nonfinite_logits_stop_generation_with_a_clear_error(value, kwargs):
    ours, _ = model_pair("llama")
    streamed = []

    class Streamer:
        def put(self, value):
            streamed.append(value)

        def end(self):
            pass

    streamer = Streamer() if kwargs.get("num_beams", 1) == 1 else None
    with _PoisonLogits(ours, after=2, value=value):
        with pytest.raises(FloatingPointError, match="NaN or Inf"):
            ours.generate(PROMPT, max_new_tokens=8, streamer=streamer, **kwargs)
    if streamer is not None:  # the prompt and the two tokens from clean logits only
        assert len(streamed) == 3
    # the model is still usable afterwards
    assert ours.generate(PROMPT, max_new_tokens=2).shape == (1, 5)


def test_remove_invalid_values_cleans_instead_of_raising():
    ours, _ = model_pair("llama")
    with _PoisonLogits(ours, after=0, value=float("inf")):
        out = ours.generate(PROMPT, max_new_tokens=3, remove_invalid_values=True, eos_token_id=None)
    assert out.shape == (1, 6)
