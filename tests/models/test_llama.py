"""Llama, Mistral, Qwen2, Qwen3 against transformers on tiny random weights (float32, left-padded batches),
and the KV caches: decoding token by token equals the full forward."""

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
