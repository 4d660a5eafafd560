"""Llama, Mistral, Qwen2, Qwen3 against transformers on tiny random weights (float32, left-padded batches),
and the KV caches: decoding token by token equals the full forward."""

import dataclasses

import pytest
import torch

import fastformers
from conftest import build_reference, check_against_transformers, rel_err

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=37, max_position_embeddings=64, pad_token_id=0)
VARIANTS = {
    "llama": {},
    "llama-llama3-rope": dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                              rope_theta=500000.0),
    "llama-linear-rope-tied": dict(rope_scaling={"rope_type": "linear", "factor": 2.0}, tie_word_embeddings=True),
    "llama-mqa-bias": dict(num_key_value_heads=1, attention_bias=True, mlp_bias=True),
    "mistral": {},
    "qwen2": {},
    "qwen3": dict(head_dim=16),
}


@pytest.mark.parametrize("task", ["AutoModel", "AutoModelForCausalLM"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_llama_family_matches_transformers(variant, task, tmp_path, padded_batch):
    ids, mask = padded_batch(lengths=(9, 5, 2), left=True)
    model_type = variant.split("-")[0]
    ours = check_against_transformers(model_type, task, tmp_path, dict(input_ids=ids, attention_mask=mask),
                                      real_positions_only=True, **{**TINY, **VARIANTS[variant]})
    assert type(ours).__name__.lower().startswith(model_type.replace("-", ""))


@pytest.mark.parametrize("cache_kind", ["static", "dynamic"])
def test_incremental_decoding_equals_full_forward(cache_kind, tmp_path, padded_batch):
    path, hf = build_reference("llama", "AutoModelForCausalLM", tmp_path, **TINY)
    model = fastformers.AutoModelForCausalLM.from_pretrained(path)
    ids, mask = padded_batch(lengths=(7, 4), left=True)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, position_ids=positions).logits
        cache = model.make_static_cache(2, 16) if cache_kind == "static" else None
        out = model(ids[:, :4], attention_mask=mask[:, :4], position_ids=positions[:, :4], past_key_values=cache)
        steps = [out.logits]
        cache = out.past_key_values
        for t in range(4, 7):
            out = model(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], position_ids=positions[:, t:t + 1],
                        past_key_values=cache)
            steps.append(out.logits)
        assert cache.get_seq_length() == 7
    inc = torch.cat(steps, dim=1)
    real = mask.bool()
    assert rel_err(inc[real], full[real]) <= 1e-5


def test_static_cache_overflow_is_a_clear_error(tmp_path):
    path, _ = build_reference("llama", "AutoModelForCausalLM", tmp_path, **TINY)
    model = fastformers.AutoModelForCausalLM.from_pretrained(path)
    with pytest.raises(ValueError, match="static cache holds 4 tokens"):
        model(torch.ones(1, 5, dtype=torch.long), past_key_values=model.make_static_cache(1, 4))


def test_unsupported_rope_type_is_named(tmp_path):
    path, _ = build_reference("llama", "AutoModel", tmp_path, **TINY)
    model = fastformers.AutoModel.from_pretrained(path)
    model.config.rope_parameters = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0}
    model.rotary_emb._inv_freq = None
    with pytest.raises(ValueError, match="rope_type='yarn' is not supported"):
        model(torch.ones(1, 3, dtype=torch.long))


def test_k_major_layout_is_invisible_to_state_dict_and_saving(tmp_path, padded_batch):
    """On CPU the Llama linears are stored K-major (faster GEMV); values, names and saving are unchanged."""
    import transformers

    path, hf = build_reference("llama", "AutoModelForCausalLM", tmp_path, **dict(TINY, tie_word_embeddings=True))
    model = fastformers.AutoModelForCausalLM.from_pretrained(path)
    attn = model.model.layers[0].self_attn
    assert attn.o_proj.weight.stride(0) == 1 and model.lm_head.weight is model.model.embed_tokens.weight
    ids, mask = padded_batch(lengths=(6, 3), left=True)
    with torch.no_grad():
        model(ids, attention_mask=mask)  # runs the fused q/k/v and gate/up GEMMs
    assert attn.q_proj.weight.stride(0) == 1
    for name, tensor in hf.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    model.save_pretrained(tmp_path / "saved")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved", attn_implementation="eager")
    for name, tensor in hf.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


@pytest.mark.parametrize("variant", ["llama", "qwen3"])
def test_llama_family_on_triton_kernels_matches_transformers(variant, tmp_path, padded_batch, triton_backend):
    """Every fused op of a decoder on the Triton kernels (the interpreter on CPU): the same logits as
    transformers on real positions, and greedy generation (decode attention over the static cache)
    token-identical to it."""
    import transformers

    ids, mask = padded_batch(lengths=(9, 5, 2), left=True)
    config = {**TINY, **VARIANTS[variant]}
    ours = check_against_transformers(variant, "AutoModelForCausalLM", tmp_path,
                                      dict(input_ids=ids, attention_mask=mask), tol=1e-4,
                                      real_positions_only=True, **config)
    for name in ("rms_norm", "rotary", "silu_mul", "attention_fwd"):
        assert any(key.startswith(name) for key in triton_backend), (name, dict(triton_backend))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / f"{variant}-AutoModelForCausalLM").eval()
    settings = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        expected, got = theirs.generate(**settings), ours.generate(**settings)
    assert torch.equal(got, expected)
    assert triton_backend["attention_decode"] > 0


# -- the one-call decode step (ops.decode_layers, csrc/cpu/decode_step.cpp) ------------------------------------------
ONE_CALL = dict(TINY, hidden_size=64, intermediate_size=96)  # multiples of 32: the packed kernels take every linear
ONE_CALL_CASES = {
    "llama-float": ("llama", {}, None),
    "llama-mqa-bias-float": ("llama", dict(num_key_value_heads=1, attention_bias=True, mlp_bias=True), None),
    "qwen2-int8": ("qwen2", {}, dict(bits=8)),
    "qwen3-int4": ("qwen3", dict(head_dim=32), dict(bits=4, group_size=32)),
    "llama3-rope-int4-per-channel": ("llama", VARIANTS["llama-llama3-rope"], dict(bits=4, group_size=None)),
}


def _decode_steps(model, ids, mask, prefill: int):
    """Logits of a prefill of `prefill` tokens then one-token steps over a static cache, and the cache."""
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    cache = model.make_static_cache(ids.shape[0], ids.shape[1] + 3)
    out = model(ids[:, :prefill], attention_mask=mask[:, :prefill], position_ids=positions[:, :prefill],
                past_key_values=cache)
    steps = [out.logits]
    for t in range(prefill, ids.shape[1]):
        out = model(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], position_ids=positions[:, t:t + 1],
                    past_key_values=cache)
        steps.append(out.logits)
    return torch.cat(steps, dim=1), cache


@pytest.fixture
def one_call_counter(monkeypatch):
    """How many decode steps ran as one call: ("step", ids shape) from token ids on the model's DecodePlan, or
    ("layers", x shape) through the decode_layers op."""
    from fastformers.models import llama

    calls = []
    layers, step = llama.decode_layers_cpu, llama.decode_step_cpu

    def counted_layers(*args):
        calls.append(("layers", args[0].shape))
        return layers(*args)

    def counted_step(*args):
        calls.append(("step", args[1].shape))
        return step(*args)

    monkeypatch.setattr(llama, "decode_layers_cpu", counted_layers)
    monkeypatch.setattr(llama, "decode_step_cpu", counted_step)
    return calls


@pytest.mark.parametrize("case", list(ONE_CALL_CASES))
def test_one_call_decode_step_equals_the_layers_one_by_one(case, tmp_path, padded_batch, one_call_counter):
    from fastformers.ops import native
    from fastformers.quantization import QuantizationConfig

    assert native.available(), native.load_error()
    model_type, extra, quant = ONE_CALL_CASES[case]
    path, _ = build_reference(model_type, "AutoModelForCausalLM", tmp_path, **{**ONE_CALL, **extra})
    kwargs = {} if quant is None else dict(quantization_config=QuantizationConfig(**quant))
    model = fastformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
    ids, mask = padded_batch(lengths=(8, 5, 3), left=True)
    with torch.no_grad():
        fast, fast_cache = _decode_steps(model, ids, mask, prefill=4)
        assert len(one_call_counter) == 4
        # a forward pre-hook on one layer: every step runs the layers one by one (and the hook sees each)
        seen = []
        handle = model.model.layers[1].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
        slow, slow_cache = _decode_steps(model, ids, mask, prefill=4)
        handle.remove()
    assert len(one_call_counter) == 4 and len(seen) == 5
    real = mask.bool()
    assert rel_err(fast[real], slow[real]) <= 1e-5
    for a, b in zip(fast_cache.keys + fast_cache.values, slow_cache.keys + slow_cache.values):
        assert rel_err(a, b) <= 1e-5
    assert fast_cache.get_seq_length() == slow_cache.get_seq_length() == ids.shape[1]


def test_one_call_step_follows_hooks_module_swaps_and_new_weights_between_steps(tmp_path, one_call_counter):
    path, _ = build_reference("llama", "AutoModelForCausalLM", tmp_path, **ONE_CALL)
    model = fastformers.AutoModelForCausalLM.from_pretrained(path)
    ids = torch.randint(1, 99, (1, 6))
    cache = model.make_static_cache(1, 12)

    def step(t):
        return model(ids[:, t:t + 1], past_key_values=cache, cache_position=torch.tensor([t])).logits

    with torch.no_grad():
        model(ids[:, :3], past_key_values=cache)
        step(3)
        assert len(one_call_counter) == 1
        # a hook registered between steps is honoured at once
        calls = []
        handle = model.model.layers[0].mlp.register_forward_hook(lambda *a: calls.append(1))
        step(4)
        assert calls == [1] and len(one_call_counter) == 1
        handle.remove()
        # a swapped module (a wrapper, as peft makes) runs as itself
        attn = model.model.layers[1].self_attn
        inner = attn.o_proj

        class Doubled(torch.nn.Module):
            def forward(self, x):
                return 2 * inner(x)

        attn.o_proj = Doubled()
        doubled = step(5)
        assert len(one_call_counter) == 1
        attn.o_proj = inner
        # a replaced norm weight is read by the next one-call step
        norm = model.model.norm
        cache.crop(5)
        before = step(5)
        assert len(one_call_counter) == 2
        norm.weight = torch.nn.Parameter(norm.weight.detach() * 3)
        cache.crop(5)
        after = step(5)
        assert len(one_call_counter) == 3
    assert not torch.allclose(doubled, before)
    # logits = lm_head(final norm): tripling the norm weight triples them exactly (up to float rounding)
    assert rel_err(after, 3 * before) <= 1e-5


# -- the compiled greedy loop (DecodePlan.greedy) -------------------------------------------------------------------
def _greedy_model(tmp_path, head):
    """A tiny Llama whose LM head runs on the packed kernels: "int4" / "a8" a quantized head (untied), "twin" a tied
    head with a Q8_0-style twin (ops.linear.attach_quantized_twin, as a GGUF file's tied head)."""
    import dataclasses

    from fastformers import ops
    from fastformers.ops.linear import attach_quantized_twin
    from fastformers.quantization import QuantizationConfig

    tied = head == "twin"
    path, _ = build_reference("llama", "AutoModelForCausalLM", tmp_path, **dict(ONE_CALL, tie_word_embeddings=tied))
    if tied:
        model = fastformers.AutoModelForCausalLM.from_pretrained(
            path, quantization_config=QuantizationConfig(bits=4, group_size=32))
        weight = model.lm_head.weight
        qw = ops.quantize_weight(weight.detach(), bits=8, group_size=32)
        qw = dataclasses.replace(qw, qweight=qw.qweight.contiguous())  # as a GGUF file's table is
        with torch.no_grad():
            weight.copy_(ops.dequantize_weight(qw, torch.float32))
        assert attach_quantized_twin(weight, qw)
        return model
    method = "blockwise_a8" if head == "a8" else "weight_only"
    return fastformers.AutoModelForCausalLM.from_pretrained(
        path, quantization_config=QuantizationConfig(bits=4, group_size=32, method=method, skip=[]))


@pytest.fixture
def greedy_calls(monkeypatch):
    """The compiled loops generate() started (each: the tokens it had then and the length it stopped at)."""
    from fastformers.models import llama

    calls = []
    real = llama.LlamaForCausalLM._compiled_greedy

    def counted(self, *args):
        loop = real(self, *args)
        if loop is None:
            return None

        def run(seq, cur, stop):
            done = loop(seq, cur, stop)
            calls.append((cur, done[0]))
            return done

        return run

    monkeypatch.setattr(llama.LlamaForCausalLM, "_compiled_greedy", counted)
    return calls


def _step_by_step(model, *args, **kwargs):
    from fastformers.models import llama

    real = llama.LlamaForCausalLM._compiled_greedy
    llama.LlamaForCausalLM._compiled_greedy = lambda *a: None
    try:
        return model.generate(*args, **kwargs)
    finally:
        llama.LlamaForCausalLM._compiled_greedy = real


@pytest.mark.parametrize("head, chunk", [("int4", 64), ("a8", 64), ("twin", 64), ("int4", 3)])
def test_compiled_greedy_loop_gives_the_step_by_step_tokens(head, chunk, tmp_path, greedy_calls, monkeypatch):
    """Token for token, for every head format, eos stops, min_length / min_new_tokens, and in chunks of 3 tokens per
    call (the loop hands back to Python every GREEDY_CHUNK tokens)."""
    from fastformers.models import llama

    monkeypatch.setattr(llama, "GREEDY_CHUNK", chunk)
    model = _greedy_model(tmp_path, head)
    ids = torch.randint(1, 99, (1, 7), generator=torch.Generator().manual_seed(3))
    free = _step_by_step(model, ids, max_new_tokens=20, do_sample=False, eos_token_id=None)
    stop_id = int(free[0, 7 + 5])  # the 6th new token: an eos there ends the generation early
    first = int((free[0, 7:] == stop_id).nonzero()[0])
    for kwargs in (dict(max_new_tokens=20, eos_token_id=None), dict(max_new_tokens=20, eos_token_id=stop_id),
                   dict(max_new_tokens=20, eos_token_id=[stop_id, 98], min_new_tokens=9),
                   dict(max_new_tokens=20, eos_token_id=stop_id, min_length=7 + 12), dict(max_new_tokens=1)):
        greedy_calls.clear()
        fast = model.generate(ids, do_sample=False, **kwargs)
        slow = _step_by_step(model, ids, do_sample=False, **kwargs)
        assert torch.equal(fast, slow), kwargs
        assert len(greedy_calls) == (slow.shape[1] > 7 + 1), kwargs  # every step after the first: one call
    assert torch.equal(model.generate(ids, do_sample=False, max_new_tokens=20, eos_token_id=stop_id),
                       free[:, :7 + first + 1])


def test_compiled_greedy_loop_is_skipped_where_steps_are_watched(tmp_path, greedy_calls):
    """Sampling, a batch, a streamer, recorded scores, a custom processor or a hook: the step-by-step loop runs."""
    from fastformers.generation import LogitsProcessorList

    model = _greedy_model(tmp_path, "int4")
    ids = torch.randint(1, 99, (1, 7), generator=torch.Generator().manual_seed(4))
    model.generate(ids, do_sample=False, max_new_tokens=4)
    assert len(greedy_calls) == 1

    class Streamer:
        def put(self, value):
            pass

        def end(self):
            pass

    class Processor:
        def __call__(self, input_ids, scores):
            return scores

    seen = []
    for kwargs in (dict(do_sample=True), dict(streamer=Streamer()),
                   dict(return_dict_in_generate=True, output_scores=True),
                   dict(logits_processor=LogitsProcessorList([Processor()])), dict(repetition_penalty=1.3)):
        model.generate(ids, max_new_tokens=4, **kwargs)
    model.generate(ids.repeat(2, 1), do_sample=False, max_new_tokens=4)
    handle = model.lm_head.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    model.generate(ids, do_sample=False, max_new_tokens=4)
    handle.remove()
    assert len(greedy_calls) == 1 and len(seen) == 4


def test_compiled_greedy_loop_stops_at_nonfinite_logits_with_the_clear_error(tmp_path, greedy_calls):
    model = _greedy_model(tmp_path, "int4")
    ids = torch.randint(1, 99, (1, 7), generator=torch.Generator().manual_seed(5))
    tokens = model.generate(ids, do_sample=False, max_new_tokens=3, eos_token_id=None)
    with torch.no_grad():
        model.model.embed_tokens.weight[int(tokens[0, 8])] = float("nan")  # the second new token's embedding
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        model.generate(ids, do_sample=False, max_new_tokens=6, eos_token_id=None)
    assert greedy_calls[-1] == (8, 9)  # it stopped at the step that read the poisoned row, with no token from it


def test_a_weight_reshaped_under_the_plan_is_refused_not_read(tmp_path, one_call_counter):
    """`param.data = ...` keeps every module and parameter object, so the plan stays; its step checks the tensors
    again and names the one that no longer fits, instead of reading it with the shape it had."""
    path, _ = build_reference("llama", "AutoModelForCausalLM", tmp_path, **ONE_CALL)
    model = fastformers.AutoModelForCausalLM.from_pretrained(path)
    ids = torch.randint(1, 99, (1, 6))
    cache = model.make_static_cache(1, 12)
    with torch.no_grad():
        model(ids[:, :3], past_key_values=cache)
        model(ids[:, 3:4], past_key_values=cache, cache_position=torch.tensor([3]))
        assert [kind for kind, _ in one_call_counter] == ["step"]
        model.model.layers[1].post_attention_layernorm.weight.data = torch.ones(7)
        with pytest.raises(RuntimeError, match="layer 1: post_attention_layernorm changed since the plan was made"):
            model(ids[:, 4:5], past_key_values=cache, cache_position=torch.tensor([4]))


def test_compiled_greedy_loop_gives_transformers_tokens(tmp_path, greedy_calls):
    """Float layers and a tied head with a Q8_0-style twin (as a GGUF file's): the head's float weight holds exactly
    the twin's values, so transformers on the same weights is the reference for the loop's tokens."""
    from fastformers import ops
    from fastformers.ops.linear import attach_quantized_twin

    path, hf = build_reference("llama", "AutoModelForCausalLM", tmp_path, **dict(ONE_CALL, tie_word_embeddings=True))
    qw = ops.quantize_weight(hf.model.embed_tokens.weight.detach(), bits=8, group_size=32)
    qw = dataclasses.replace(qw, qweight=qw.qweight.contiguous())
    with torch.no_grad():
        hf.model.embed_tokens.weight.copy_(ops.dequantize_weight(qw, torch.float32))
    hf.save_pretrained(tmp_path / "twin")
    model = fastformers.AutoModelForCausalLM.from_pretrained(tmp_path / "twin")
    assert attach_quantized_twin(model.lm_head.weight, qw)
    ids = torch.randint(1, 99, (1, 7), generator=torch.Generator().manual_seed(6))
    ours = model.generate(ids, do_sample=False, max_new_tokens=24, eos_token_id=None)
    theirs = hf.generate(ids, do_sample=False, max_new_tokens=24, eos_token_id=None, pad_token_id=0)
    assert len(greedy_calls) == 1 and torch.equal(ours, theirs)
