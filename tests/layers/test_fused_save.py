"""A model whose projections ran fused saves the separate transformers names, and transformers loads it."""

import torch
from safetensors import safe_open

from fastformers.models.llama import LlamaConfig, LlamaForCausalLM


def test_fused_projections_save_as_separate_transformers_weights(tmp_path):
    import transformers

    torch.manual_seed(0)
    config = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1)
    ours = LlamaForCausalLM(LlamaConfig(**config)).eval()
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        logits = ours(input_ids=ids).logits  # the projections run fused from here on
    attn = ours.model.layers[0].self_attn
    assert attn.qkv.weight is not None and attn.q_proj.weight.data_ptr() == attn.qkv.weight.data_ptr()
    ours.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    for part in ("q_proj", "k_proj", "v_proj"):
        assert f"model.layers.0.self_attn.{part}.weight" in names
    for part in ("gate_proj", "up_proj"):
        assert f"model.layers.1.mlp.{part}.weight" in names
    assert not any("qkv" in n or "gate_up" in n for n in names)
    theirs = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids).logits, logits, rtol=1e-5, atol=1e-5)
