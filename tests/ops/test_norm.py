"""ops.layer_norm (with residual and dropout) and ops.rms_norm against float64 math."""

import pytest
import torch

from fastformers import ops
from conftest import rel_err


def ln64(x, w, b, eps):
    x = x.double()
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w.double() + b.double()


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (2, 5, 384), (7, 1000)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_layer_norm_matches_float64(shape, with_residual):
    g = torch.Generator().manual_seed(sum(shape))
    x, r = torch.randn(shape, generator=g) * 3 + 1, torch.randn(shape, generator=g)
    w, b = torch.randn(shape[-1], generator=g), torch.randn(shape[-1], generator=g)
    out = ops.layer_norm(x, w, b, 1e-5, residual=r if with_residual else None)
    ref = ln64(x + r if with_residual else x, w, b, 1e-5)
    assert rel_err(out, ref) <= 1e-5


def test_layer_norm_dropout_only_in_training():
    g = torch.Generator().manual_seed(0)
    x, r = torch.randn(4, 64, generator=g), torch.randn(4, 64, generator=g)
    w, b = torch.ones(64), torch.zeros(64)
    evald = ops.layer_norm(x, w, b, 1e-5, residual=r, dropout_p=0.5, training=False)
    assert rel_err(evald, ln64(x + r, w, b, 1e-5)) <= 1e-5
    torch.manual_seed(1)
    trained = ops.layer_norm(x, w, b, 1e-5, residual=r, dropout_p=0.5, training=True)
    torch.manual_seed(1)
    kept = torch.nn.functional.dropout(torch.ones_like(x), 0.5, training=True)
    assert rel_err(trained, ln64(x * kept + r, w, b, 1e-5)) <= 1e-5


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (2, 5, 576)])
def test_rms_norm_matches_float64(shape):
    g = torch.Generator().manual_seed(len(shape))
    x, r, w = torch.randn(shape, generator=g), torch.randn(shape, generator=g), torch.randn(shape[-1], generator=g)

    def ref(h):
        h = h.double()
        return h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * w.double()

    assert rel_err(ops.rms_norm(x, w, 1e-6), ref(x)) <= 1e-5
    out, summed = ops.rms_norm(x, w, 1e-6, residual=r)
    assert rel_err(out, ref(x + r)) <= 1e-5
    assert rel_err(summed, x.double() + r.double()) <= 1e-6


def test_rms_norm_low_precision_close_to_float64():
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(4, 96, generator=g), torch.randn(96, generator=g)
    ref = x.double() / torch.sqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-6) * w.double()
    for dtype in (torch.bfloat16, torch.float16):
        assert rel_err(ops.rms_norm(x.to(dtype), w.to(dtype), 1e-6), ref) <= 1e-2
