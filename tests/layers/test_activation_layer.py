"""layers.Activation.after: a GELU after a plain Linear runs as ops.linear_gelu (one oneDNN call on the cpu
backend); anything else (another activation, a hooked or wrapped linear) runs the two modules one after the other."""

import pytest
import torch
from torch import nn

from fastformers import layers, ops


def _linear(seed=0):
    g = torch.Generator().manual_seed(seed)
    layer = layers.Linear(16, 24)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(24, 16, generator=g) / 4)
        layer.bias.copy_(torch.randn(24, generator=g))
    return layer, torch.randn(2, 5, 16, generator=g)


@pytest.mark.parametrize("name", ["gelu", "gelu_new"])
def test_gelu_after_a_plain_linear_is_one_op(name, monkeypatch):
    layer, x = _linear()
    act = layers.Activation(name)
    calls = []
    fused = act._linear_gelu
    monkeypatch.setattr(act, "_linear_gelu", lambda *a, **k: calls.append(k["approximate"]) or fused(*a, **k))
    with torch.no_grad():
        got = act.after(layer, x)
        separate = act(layer(x))
    assert calls == [act._approximate]
    assert (got - separate).abs().max() <= 1e-5 * separate.abs().max()


def test_other_activations_and_hooked_or_wrapped_linears_run_separately(monkeypatch):
    layer, x = _linear()
    act = layers.Activation("gelu")
    monkeypatch.setattr(act, "_linear_gelu", lambda *a, **k: pytest.fail("fused a linear it must not"))
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        assert torch.equal(act.after(layer, x), act(layer(x)))
    assert len(seen) == 2  # the hook ran, both times
    handle.remove()

    class Scaled(layers.Linear):  # a subclass (its own forward) is not a plain Linear
        def forward(self, x):
            return 2 * super().forward(x)

    scaled = Scaled(16, 24)
    scaled.load_state_dict(layer.state_dict())
    with torch.no_grad():
        assert torch.equal(act.after(scaled, x), act(scaled(x)))
        relu = layers.Activation("relu")
        assert torch.equal(relu.after(layer, x), torch.relu(layer(x)))
        assert torch.equal(relu.after(nn.Identity(), x), torch.relu(x))
