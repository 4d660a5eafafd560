"""Loss and every parameter's gradient equal transformers' on the same weights and batch (float32), in train
mode (dropout probabilities 0), for one representative head of every family with a loss."""

import pytest
import torch

from conftest import rel_err
from training_models import FAMILIES, batch_for, load_pair


def gradients(model, batch):
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    return out.loss.detach(), {name: p.grad for name, p in model.named_parameters(remove_duplicate=False)
                               if p.requires_grad}  # (Marian's fixed sinusoidal table is a parameter there)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_loss_and_gradients_match_transformers(name, tmp_path):
    ours, hf, _ = load_pair(name, tmp_path)
    batch = batch_for(name)
    loss, grads = gradients(ours, batch)
    hf_loss, hf_grads = gradients(hf, batch)
    assert rel_err(loss, hf_loss) <= 1e-4, f"loss {loss} vs {hf_loss}"
    assert set(grads) == set(hf_grads), f"parameters differ: {set(grads) ^ set(hf_grads)}"
    # A gradient that is zero in exact arithmetic is rounding noise in both libraries: the key projection's
    # bias (softmax ignores a constant added to all of a query's scores), a pooler the loss does not use. It
    # is held to 1e-6 of the model's largest gradient instead of a relative error.
    floor = 1e-6 * max(g.abs().max() for g in hf_grads.values() if g is not None)
    compared = 0
    for pname, ref in hf_grads.items():
        got = grads[pname]
        if ref is None or ref.abs().max() <= floor:
            assert got is None or got.abs().max() <= floor, f"{pname}: a gradient where transformers has ~none"
            continue
        assert got is not None, f"{pname}: no gradient"
        err = rel_err(got, ref)
        assert err <= 1e-4, f"{pname}: gradient relative error {err:.2e}"
        compared += 1
    assert compared >= len(hf_grads) // 2  # most parameters had a gradient to compare


def test_gradients_are_the_same_after_inference_fused_the_projections(tmp_path):
    """An inference call (no autograd) fuses q/k/v into one storage; training afterwards still computes the same
    gradients, on the same Parameter objects an optimizer holds."""
    ours, hf, _ = load_pair("llama", tmp_path)
    params = dict(ours.named_parameters())
    batch = batch_for("llama")
    with torch.no_grad():
        ours.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    attn = ours.model.layers[0].self_attn
    assert attn.q_proj.weight.data_ptr() == attn.qkv.weight.data_ptr()  # the fused path ran
    assert all(p is params[n] for n, p in ours.named_parameters())  # same objects
    loss, grads = gradients(ours, batch)
    hf_loss, hf_grads = gradients(hf, batch)
    assert rel_err(loss, hf_loss) <= 1e-4
    for pname in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.v_proj.weight",
                  "model.layers.0.mlp.gate_proj.weight"):
        assert rel_err(grads[pname], hf_grads[pname]) <= 1e-4, pname


@pytest.mark.parametrize("name", ["bert-cls", "llama", "t5"])
def test_gradients_on_the_triton_kernels_match_transformers(name, tmp_path, triton_backend):
    """Every op forced onto the Triton kernels (their backward included; the interpreter on CPU, outputs poisoned
    before each launch): loss and gradients are still transformers'."""
    ours, hf, _ = load_pair(name, tmp_path)
    batch = batch_for(name)
    loss, grads = gradients(ours, batch)
    assert any("_bwd" in k for k in triton_backend), f"no backward kernel ran: {dict(triton_backend)}"
    hf_loss, hf_grads = gradients(hf, batch)
    assert rel_err(loss, hf_loss) <= 1e-4
    floor = 1e-6 * max(g.abs().max() for g in hf_grads.values() if g is not None)
    for pname, ref in hf_grads.items():
        if ref is not None and ref.abs().max() > floor:
            assert rel_err(grads[pname], ref) <= 1e-4, pname
