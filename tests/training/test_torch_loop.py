"""A plain PyTorch training loop on fastformers models, and dropout: active in train mode, off in eval."""

import pytest
import torch

from training_models import FAMILIES, batch_for, load_pair, with_dropout


@pytest.mark.parametrize("name", ["bert-cls", "llama", "t5"])
def test_optimizer_steps_lower_the_loss(name, tmp_path):
    model = load_pair(name, tmp_path)[0].train()
    batch = batch_for(name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0] and losses == sorted(losses, reverse=True), losses
    model.eval()
    with torch.no_grad():  # the inference path (fused projections) sees the trained weights
        assert abs(model(**batch).loss.item() - losses[-1]) < abs(losses[0] - losses[-1])


def test_interleaved_inference_does_not_detach_the_optimizer(tmp_path):
    """An evaluation under no_grad fuses q/k/v into one storage; the optimizer keeps updating the parameters the
    model uses, and the next evaluation sees the update (no stale fused copy)."""
    model = load_pair("bert-cls", tmp_path)[0]
    batch = batch_for("bert-cls")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    query = model.bert.encoder.layer[0].attention.self.query
    for _ in range(3):
        model.eval()
        with torch.no_grad():
            before = model(**batch).logits
        assert query.weight.data_ptr() == model.bert.encoder.layer[0].attention.self.qkv.weight.data_ptr()
        model.train()
        optimizer.zero_grad()
        model(**batch).loss.backward()
        assert query.weight.grad.abs().max() > 0
        optimizer.step()
        model.eval()
        with torch.no_grad():
            fused = model(**batch).logits
        unfused = model(**batch).logits  # autograd on: the separate linears
        assert not torch.equal(fused, before)
        assert torch.allclose(fused, unfused, atol=1e-6)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_dropout_in_train_mode_only(name, tmp_path):
    model = load_pair(name, tmp_path, **with_dropout(name, 0.3))[0]
    batch = batch_for(name)
    model.train()
    first, second = model(**batch).loss, model(**batch).loss
    assert first.item() != second.item()  # dropout drew different masks
    model.eval()
    a, b = model(**batch).loss, model(**batch).loss
    with torch.no_grad():
        c = model(**batch).loss
    assert a.item() == b.item() and abs(a.item() - c.item()) <= 1e-6 * abs(a.item())
