"""GPT-2 x every head against transformers on tiny random weights (float32, padded batches)."""

import pytest

from conftest import check_against_transformers

TINY = dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=32, pad_token_id=0, num_labels=3)


@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("task", ["AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification"])
def test_gpt2_head_matches_transformers(task, left, tmp_path, padded_batch):
    ids, mask = padded_batch(lengths=(9, 5, 2), left=left)
    check_against_transformers("gpt2", task, tmp_path, dict(input_ids=ids, attention_mask=mask),
                               real_positions_only=True, **TINY)


@pytest.mark.parametrize("options", [dict(scale_attn_by_inverse_layer_idx=True, activation_function="relu"),
                                     dict(n_inner=40, scale_attn_weights=False)])
def test_gpt2_config_options(options, tmp_path, padded_batch):
    ids, mask = padded_batch(lengths=(6, 3))
    check_against_transformers("gpt2", "AutoModelForCausalLM", tmp_path, dict(input_ids=ids, attention_mask=mask),
                               real_positions_only=True, **{**TINY, **options})
