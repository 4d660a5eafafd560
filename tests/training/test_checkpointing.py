"""Activation (gradient) checkpointing: the blocks really run again in the backward pass, and the gradients are
those of the plain run, dropout included (torch.utils.checkpoint replays the random state)."""

import pytest
import torch

from conftest import rel_err
from training_models import batch_for, load_pair, with_dropout


def count_block_calls(model):
    """A list that grows by one per call of any repeated block."""
    calls = []
    for layer in model._layers():
        layer.register_forward_pre_hook(lambda module, args: calls.append(module))
    return calls


def train_step(model, batch, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["bert-cls", "distilbert-cls", "gpt2", "llama", "bart", "t5"])
def test_checkpointing_recomputes_blocks_and_keeps_gradients(name, tmp_path):
    model = load_pair(name, tmp_path, **with_dropout(name))[0].train()
    batch = batch_for(name)
    blocks = len(model._layers())
    calls = count_block_calls(model)
    loss, grads = train_step(model, batch)
    assert len(calls) == blocks
    assert not model.is_gradient_checkpointing

    calls.clear()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    ckpt_loss, ckpt_grads = train_step(model, batch)
    assert len(calls) == 2 * blocks  # every block ran again in the backward pass
    assert rel_err(ckpt_loss, loss) == 0
    assert grads.keys() == ckpt_grads.keys()
    for pname, g in grads.items():
        assert rel_err(ckpt_grads[pname], g) <= 1e-6, pname

    calls.clear()
    with torch.no_grad():  # no autograd: nothing to recompute
        model(**batch)
    assert len(calls) == blocks

    calls.clear()
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    train_step(model, batch)
    assert len(calls) == blocks


def test_every_n_layers_and_checkpoint_kwargs(tmp_path):
    model = load_pair("llama", tmp_path, num_hidden_layers=4)[0].train()
    calls = count_block_calls(model)
    model.activation_checkpointing_enable({"use_reentrant": False, "preserve_rng_state": False}, every_n_layers=2)
    assert [layer.gradient_checkpointing for layer in model._layers()] == [True, False, True, False]
    train_step(model, batch_for("llama"))
    assert len(calls) == 4 + 2
    with pytest.raises(ValueError, match="every_n_layers"):
        model.activation_checkpointing_enable(every_n_layers=0)


def test_checkpointing_refuses_a_cache_in_training(tmp_path):
    model, _, _ = load_pair("llama", tmp_path)
    model.train().gradient_checkpointing_enable()
    batch = batch_for("llama")
    with pytest.raises(ValueError, match="use_cache=True does not go with activation checkpointing"):
        model(**batch, use_cache=True)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_checkpointing_under_lora_reaches_the_adapters(use_reentrant, tmp_path):
    """Frozen base weights and embeddings (peft LoRA): the checkpointed blocks still pass gradients to the adapters,
    also with the reentrant variant (which needs the blocks' input to require grad: enable_input_require_grads)."""
    peft = pytest.importorskip("peft")
    model = load_pair("llama", tmp_path)[0]
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                             init_lora_weights=False)  # random B: every adapter weight gets a gradient
    lora = peft.get_peft_model(model, config).train()
    batch = batch_for("llama")
    loss, grads = train_step(lora, batch)
    lora.gradient_checkpointing_enable({"use_reentrant": use_reentrant})
    calls = count_block_calls(model)
    ckpt_loss, ckpt_grads = train_step(lora, batch)
    assert len(calls) == 2 * len(model._layers())
    # the reentrant variant runs its first forward without autograd, where the cpu backend's inference kernels
    # (csrc/: RMSNorm, rotary) serve: the same loss up to float32 rounding
    assert rel_err(ckpt_loss, loss) <= (1e-6 if use_reentrant else 0)
    assert grads.keys() == ckpt_grads.keys() and all("lora_" in n for n in grads) and len(grads) == 8
    for pname, g in grads.items():
        assert rel_err(ckpt_grads[pname], g) <= 1e-6, pname
