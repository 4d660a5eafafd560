"""layers.Linear and layers.FusedLinear: one GEMM at inference, fused once, separate names on save."""

import pytest
import torch
from torch import nn

from fastformers import layers
from fastformers.layers import linear as linear_module


class Block(nn.Module):
    def __init__(self, bias=True):
        super().__init__()
        self.q_proj = layers.Linear(8, 6, bias=bias)
        self.k_proj = layers.Linear(8, 4, bias=bias)
        self.v_proj = layers.Linear(8, 4, bias=bias)
        self.qkv = layers.FusedLinear(self, "q_proj", "k_proj", "v_proj")

    def separate(self, x):
        return [torch.nn.functional.linear(x, m.weight, m.bias) for m in (self.q_proj, self.k_proj, self.v_proj)]


def count_fusions(monkeypatch):
    calls = []
    original = layers.FusedLinear._fuse
    monkeypatch.setattr(layers.FusedLinear, "_fuse", lambda self, members: (calls.append(1), original(self, members)))
    return calls


def assert_same(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_fused_once_and_equal_to_separate_linears(monkeypatch, bias):
    block, x = Block(bias), torch.randn(2, 3, 8)
    fusions = count_fusions(monkeypatch)
    with torch.no_grad():
        for _ in range(3):
            assert_same(block.qkv(x), block.separate(x))
    assert len(fusions) == 1
    # the siblings' parameters are views of the fused storage; state_dict keeps the separate names
    assert block.q_proj.weight.data_ptr() == block.qkv.weight.data_ptr()
    assert sorted(block.state_dict()) == sorted(f"{n}.{p}" for n in ("q_proj", "k_proj", "v_proj")
                                               for p in (("weight", "bias") if bias else ("weight",)))


def test_in_place_updates_are_seen_and_replacements_fuse_again(monkeypatch):
    block, x = Block(), torch.randn(2, 3, 8)
    fusions = count_fusions(monkeypatch)
    with torch.no_grad():
        block.qkv(x)
        block.load_state_dict({k: torch.randn_like(v) for k, v in block.state_dict().items()})  # copy_ in place
        assert_same(block.qkv(x), block.separate(x))
        assert len(fusions) == 1
        block.load_state_dict({k: torch.randn_like(v) for k, v in block.state_dict().items()}, assign=True)
        assert_same(block.qkv(x), block.separate(x))
        assert len(fusions) == 2
        block.double()
        x = x.double()
        assert_same(block.qkv(x), block.separate(x))
        assert block.qkv.weight.dtype == torch.float64 and len(fusions) == 3


def test_training_and_wrapped_siblings_run_one_by_one():
    block, x = Block(), torch.randn(2, 3, 8)
    out = block.qkv(x)  # autograd on, trainable: separate modules, gradients reach every weight
    sum(o.sum() for o in out).backward()
    assert all(m.weight.grad is not None for m in (block.q_proj, block.k_proj, block.v_proj))

    class Doubled(nn.Module):  # stands for a peft LoRA layer wrapping the original linear
        def __init__(self, base):
            super().__init__()
            self.base_layer = base

        def forward(self, x):
            return 2 * self.base_layer(x)

    with torch.no_grad():
        block.qkv(x)  # fused
        block.q_proj = Doubled(block.q_proj)
        q, k, v = block.qkv(x)
        torch.testing.assert_close(q, 2 * block.q_proj.base_layer(x))
        hooked = []
        block.k_proj.register_forward_hook(lambda *args: hooked.append(1))
        block.qkv(x)
        assert hooked == [1]
        calls = []
        block.v_proj.forward = lambda x: (calls.append(1), torch.zeros(2, 3, 4))[1]  # as accelerate wraps forward
        assert torch.equal(block.qkv(x)[2], torch.zeros(2, 3, 4)) and calls == [1]


def test_unwrapping_after_a_merge_that_assigns_data_fuses_afresh():
    """peft's merge_and_unload writes the merged weight with `.data = ...` (no hook sees it), then puts the
    original linear back: the group must not serve its old fused copy."""
    block, x = Block(), torch.randn(2, 3, 8)
    with torch.no_grad():
        block.qkv(x)  # fused
        original = block.q_proj
        block.q_proj = nn.Sequential(original)  # wrapped (not fusable): runs one by one
        block.qkv(x)
        original.weight.data = original.weight.data * 3  # the merge
        block.q_proj = original  # unloaded
        assert_same(block.qkv(x), block.separate(x))


def test_own_fusing_does_not_invalidate_other_groups(monkeypatch):
    a, b, x = Block(), Block(), torch.randn(1, 2, 8)
    fusions = count_fusions(monkeypatch)
    with torch.no_grad():
        for _ in range(3):
            a.qkv(x), b.qkv(x)
    assert len(fusions) == 2


def test_quantized_siblings_fuse_when_formats_agree():
    from fastformers.quantization import QuantizationConfig
    from fastformers.quantization.apply import quantize_model

    block, x = Block(), torch.randn(2, 3, 8)
    quantize_model(block, QuantizationConfig(bits=8, skip=[]))
    with torch.no_grad():
        expected = [m(x) for m in (block.q_proj, block.k_proj, block.v_proj)]
        assert_same(block.qkv(x), expected)
    assert block.qkv.weight is not None and block.qkv._members[0] is block.q_proj


def test_assignment_counter_only_counts_weight_and_bias():
    before = linear_module._assignments[0]
    lin = layers.Linear(2, 2)
    lin.note = "x"
    assert linear_module._assignments[0] == before + 2  # weight and bias set by nn.Linear.__init__


def test_a_copy_runs_its_own_siblings():
    import copy

    block, x = Block(), torch.randn(2, 3, 8)
    with torch.no_grad():
        block.qkv(x)
        for twin in (copy.deepcopy(block), torch.load(_saved(block), weights_only=False)):
            twin.q_proj.weight.mul_(2)
            assert_same(twin.qkv(x), twin.separate(x))
            assert_same(block.qkv(x), block.separate(x))
            assert not torch.equal(twin.qkv(x)[0], block.qkv(x)[0])


def _saved(module):
    import io

    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    return buffer
