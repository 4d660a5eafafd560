"""ops.layer_norm (with residual and dropout) and ops.rms_norm against float64 math."""

import math
import random

import pytest
import torch

from fastformers import ops
from fastformers.ops.norm import layer_norm_reference, rms_norm_reference
from conftest import DEVICE, rel_err


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


# -- Triton kernels (kernels/norm.py) -------------------------------------------------------------

# Triton's CPU interpreter converts float32 to bfloat16 by truncation (a GPU rounds to nearest even), which
# doubles each of the up to three bfloat16 roundings in these kernels (residual sum, Llama's normalised
# value, output); on the GPU bfloat16 keeps 1e-2.
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2 if DEVICE == "cpu" else 1e-2}
DTYPES = list(TOL)


def _rand(g, *shape, dtype=torch.float32, scale=1.0, shift=0.0):
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift).to(DEVICE, dtype)


def _grads(fn, inputs, grad_outs, dtype=None):
    """Outputs of fn(*inputs) (a tensor or a tuple) and the gradients of sum(out * grad_out) w.r.t. the
    inputs that are not None, inputs cast to `dtype` if given. A grad_out of None leaves that output unused."""
    leaves = [None if t is None else t.detach().to(dtype or t.dtype).requires_grad_() for t in inputs]
    outs = fn(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    used = [(o, d.to(o.dtype)) for o, d in zip(outs, grad_outs) if d is not None]
    grads = torch.autograd.grad([o for o, _ in used], [t for t in leaves if t is not None], [d for _, d in used])
    return (*outs, *grads)


def _check(got, want, names, tol, seed, floors=None):
    """Relative error of each output against float64. Where the float64 answer is zero up to its own rounding
    (a hidden size of 1 normalises to exactly 0) the absolute error instead; floors[name] is a least scale to
    divide by (see `_rms_grad_scale`)."""
    assert len(got) == len(want) == len(names)
    for name, a, b in zip(names, got, want):
        assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        a, b = a.detach().double(), b.detach().double()
        scale = max(float(b.abs().max()) if b.numel() else 0.0, (floors or {}).get(name, 0.0))
        err = float((a - b).abs().max()) / (scale if scale > 1e-10 else 1.0) if b.numel() else 0.0
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e} (seed {seed})"


LN_CASES = {  # name: (residual, weight, bias)
    "plain": (False, True, True),
    "residual": (True, True, True),
    "residual_no_bias": (True, True, False),
    "no_affine": (False, False, False),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(LN_CASES))
@pytest.mark.parametrize("shape", [(1, 1), (5, 17), (2, 3, 384), (3, 1000)])
def test_layer_norm_kernel(triton_backend, shape, case, dtype):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    with_residual, with_weight, with_bias = LN_CASES[case]
    n = shape[-1]
    x, dy = _rand(g, *shape, dtype=dtype, scale=3, shift=1), _rand(g, *shape, dtype=dtype)
    r = _rand(g, *shape, dtype=dtype) if with_residual else None
    w = _rand(g, n, dtype=dtype, scale=0.5, shift=1) if with_weight else None
    b = _rand(g, n, dtype=dtype) if with_bias else None

    def run(impl):
        return lambda x, w, b, r: impl(x, w, b, 1e-5, residual=r, dropout_p=0.3, training=False)

    inputs = (x, w, b, r)
    got = _grads(run(ops.layer_norm), inputs, (dy,))
    want = _grads(run(layer_norm_reference), inputs, (dy,), torch.float64)
    assert got[0].dtype == dtype
    names = ["y", "dx"] + ["dweight"] * with_weight + ["dbias"] * with_bias + ["dresidual"] * with_residual
    _check(got, want, names, TOL[dtype], seed)
    assert triton_backend["layer_norm"] == 1 and triton_backend["layer_norm_bwd"] == 1, dict(triton_backend)
    assert triton_backend["norm_weight_grad"] == int(with_weight or with_bias), dict(triton_backend)


def _rms_grad_scale(s, w, dy):
    """max |dy w rstd|: the size of the two terms whose difference is RMSNorm's dx. With a hidden size of 1,
    dx = dy w rstd eps / (s^2 + eps) is a float32 cancellation (1 - h^2) that no float32 kernel resolves to
    better than ~1e-7 of this scale, so dx is measured against it."""
    s = s.double()
    return float((dy.double() * w.double() * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + 1e-6)).abs().max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("shape", [(1, 1), (5, 17), (2, 3, 384), (3, 1000)])
def test_rms_norm_kernel(triton_backend, shape, with_residual, dtype):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x, w, dy = _rand(g, *shape, dtype=dtype, scale=2), _rand(g, shape[-1], dtype=dtype), _rand(g, *shape, dtype=dtype)
    if with_residual:  # both outputs carry gradient: the sum is the next residual stream
        r, dsum = _rand(g, *shape, dtype=dtype), _rand(g, *shape, dtype=dtype)
        inputs, grad_outs, names = (x, w, r), (dy, dsum), ["y", "sum", "dx", "dweight", "dresidual"]
    else:
        inputs, grad_outs, names = (x, w), (dy,), ["y", "dx", "dweight"]

    def run(impl):
        return lambda x, w, r=None: impl(x, w, 1e-6, residual=r)

    got = _grads(run(ops.rms_norm), inputs, grad_outs)
    want = _grads(run(rms_norm_reference), inputs, grad_outs, torch.float64)
    assert all(t.dtype == dtype for t in got)
    scale = _rms_grad_scale(x + r if with_residual else x, w, dy)
    _check(got, want, names, TOL[dtype], seed, floors={"dx": scale, "dresidual": scale})
    assert dict(triton_backend) == {"rms_norm": 1, "rms_norm_bwd": 1, "norm_weight_grad": 1}


def test_rms_norm_kernel_follows_the_reference_arithmetic(triton_backend):
    """Half precision: the sum is x + residual rounded once (bit-equal to the reference), the output
    w * (normalised sum rounded to x's dtype), and a float32 weight promotes the output to float32, as the
    reference computes it; with only the sum used downstream, x and residual get its gradient unchanged."""
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x, r = _rand(g, 6, 77, dtype=torch.float16, scale=2), _rand(g, 6, 77, dtype=torch.float16)
    for w in (_rand(g, 77, dtype=torch.float16), _rand(g, 77)):
        out, summed = ops.rms_norm(x, w, 1e-6, residual=r)
        ref_out, ref_sum = rms_norm_reference(x, w, 1e-6, residual=r)
        assert out.dtype == ref_out.dtype and torch.equal(summed, ref_sum), f"seed {seed}"
        # within one float16 rounding of the normalised value (float32 sums in another order may flip one)
        assert rel_err(out, ref_out) <= 1e-3, f"relative error {rel_err(out, ref_out):.2e} (seed {seed})"
    dsum = _rand(g, 6, 77, dtype=torch.float16)
    got = _grads(lambda x, r: ops.rms_norm(x, w, 1e-6, residual=r), (x, r), (None, dsum))
    assert torch.equal(got[2], dsum) and torch.equal(got[3], dsum), f"seed {seed}"


def test_norm_kernels_strided_rows_and_deterministic_weight_grads(triton_backend):
    """Rows read in place with their own strides (x a column slice, residual and dy row-strided), a layout that
    must be copied (every other position of a 3-D tensor), and several row tiles per backward program
    (300 rows): two identical backward passes give bit-identical weight gradients."""
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x = _rand(g, 300, 60, scale=3, shift=1)[:, 7:52]  # rows 60 apart, 45 columns
    r = _rand(g, 600, 45)[::2]
    w, b, dy = _rand(g, 45, shift=1), _rand(g, 45), _rand(g, 300, 50)[:, :45]
    inputs = (x, w, b, r)

    def ln(impl):
        return lambda x, w, b, r: impl(x, w, b, 1e-5, residual=r)

    want = _grads(ln(layer_norm_reference), inputs, (dy,), torch.float64)
    first, second = (_grads(ln(ops.layer_norm), inputs, (dy,)) for _ in range(2))
    _check(first, want, ["y", "dx", "dweight", "dbias", "dresidual"], 1e-4, seed)
    assert torch.equal(first[2], second[2]) and torch.equal(first[3], second[3]), "weight grads differ between runs"

    x3 = _rand(g, 4, 6, 33, scale=2)[:, ::2]  # (4, 3, 33) that no (M, N) view covers
    dy3, w = _rand(g, 4, 3, 33), _rand(g, 33)
    got = _grads(lambda x, w: ops.rms_norm(x, w, 1e-6), (x3, w), (dy3,))
    want = _grads(lambda x, w: rms_norm_reference(x, w, 1e-6), (x3, w), (dy3,), torch.float64)
    _check(got, want, ["y", "dx", "dweight"], 1e-4, seed)
    assert triton_backend["layer_norm_bwd"] == 2 and triton_backend["rms_norm_bwd"] == 1, dict(triton_backend)


def test_norm_kernels_empty_rows(triton_backend):
    x, w, b = torch.randn(0, 8, device=DEVICE), torch.randn(8, device=DEVICE), torch.randn(8, device=DEVICE)
    y, dx, dw, db = _grads(lambda x, w, b: ops.layer_norm(x, w, b, 1e-5), (x, w, b), (x,))
    assert y.shape == dx.shape == (0, 8) and torch.equal(dw, torch.zeros_like(w)) and torch.equal(db, dw)
    y, dx, dw = _grads(lambda x, w: ops.rms_norm(x, w, 1e-6), (x, w), (x,))
    assert y.shape == dx.shape == (0, 8) and torch.equal(dw, torch.zeros_like(w))
    assert "layer_norm" not in triton_backend and "rms_norm_bwd" not in triton_backend


# -- dropout --------------------------------------------------------------------------------------

def _dropout_run(x, w, b, r, p, rng_seed):
    """(the kernel's outputs and gradients, the keep mask it drew) for layer_norm in training mode."""
    from fastformers.kernels import norm

    torch.manual_seed(rng_seed)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(rng_seed)).to(DEVICE, x.dtype)
    got = _grads(lambda x, w, b, r: ops.layer_norm(x, w, b, 1e-5, residual=r, dropout_p=p, training=True),
                 (x, w, b, r), (dy,))
    torch.manual_seed(rng_seed)  # the same draw again: the seed the call used
    keep = norm.dropout_keep_mask(norm.draw_dropout_seed(DEVICE), x.shape, p)
    return got, keep, dy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [False, True])
def test_layer_norm_dropout_matches_float64_with_the_kernels_mask(triton_backend, with_residual, dtype):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    shape, p = (2, 5, 97), 0.25
    x = _rand(g, *shape, dtype=dtype, scale=3, shift=1)
    r = _rand(g, *shape, dtype=dtype) if with_residual else None
    w, b = _rand(g, 97, dtype=dtype, shift=1), _rand(g, 97, dtype=dtype)
    got, keep, dy = _dropout_run(x, w, b, r, p, seed)
    # the mask seen independently of the helper: a dropped element of x gets exactly zero gradient
    assert torch.equal(got[1] != 0, keep), f"dx is zero exactly where the helper's mask drops (seed {seed})"
    scale = keep.double() / (1 - p)
    want = _grads(lambda x, w, b, r: layer_norm_reference(x * scale, w, b, 1e-5, residual=r),
                  (x, w, b, r), (dy,), torch.float64)
    _check(got, want, ["y", "dx", "dweight", "dbias"] + ["dresidual"] * with_residual, TOL[dtype], seed)
    assert dict(triton_backend) == {"layer_norm": 1, "layer_norm_bwd": 1, "norm_weight_grad": 1, "dropout_mask": 1}


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_layer_norm_dropout_rate(triton_backend, p):
    from fastformers.kernels import norm

    seed = random.randrange(2**31)
    torch.manual_seed(seed)
    keep = norm.dropout_keep_mask(norm.draw_dropout_seed(DEVICE), (61, 83), p)  # 5063 elements
    n = keep.numel()
    dropped = 1 - keep.double().mean().item()
    bound = 5 * math.sqrt(p * (1 - p) / n)
    assert abs(dropped - p) <= bound, f"dropped fraction {dropped:.4f} for p={p} (5 sigma {bound:.4f}, seed {seed})"
    # no structure along rows or columns: neighbours agree about as often as independent draws would
    agree = (keep[:, 1:] == keep[:, :-1]).double().mean().item()
    expect = p * p + (1 - p) * (1 - p)
    assert abs(agree - expect) <= 5 * math.sqrt(expect * (1 - expect) / keep[:, 1:].numel()), f"seed {seed}"
    assert len({tuple(row.tolist()) for row in keep}) == keep.shape[0], f"repeated row masks (seed {seed})"


def test_layer_norm_dropout_follows_torch_manual_seed(triton_backend):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x, r, w, b = _rand(g, 7, 64, scale=2), _rand(g, 7, 64), _rand(g, 64, shift=1), _rand(g, 64)

    def train(rng_seed):
        torch.manual_seed(rng_seed)
        return ops.layer_norm(x, w, b, 1e-5, residual=r, dropout_p=0.5, training=True)

    assert torch.equal(train(seed), train(seed)), f"the same torch.manual_seed gives another output (seed {seed})"
    assert not torch.equal(train(seed), train(seed + 1)), f"two seeds give one output (seed {seed})"
    from fastformers.kernels import norm

    s1, s2 = (norm.draw_dropout_seed(DEVICE) for _ in range(2))
    assert not torch.equal(norm.dropout_keep_mask(s1, x.shape, 0.5), norm.dropout_keep_mask(s2, x.shape, 0.5))
    # eval mode (or p = 0): exact LayerNorm(x + residual), and no random number is drawn
    exact = ln64(x + r, w, b, 1e-5)
    state = torch.get_rng_state()
    for kwargs in ({"dropout_p": 0.5, "training": False}, {"dropout_p": 0.0, "training": True}):
        out = ops.layer_norm(x, w, b, 1e-5, residual=r, **kwargs)
        assert rel_err(out, exact) <= 1e-5, f"{kwargs}: relative error {rel_err(out, exact):.2e} (seed {seed})"
    assert torch.equal(torch.get_rng_state(), state)
    assert triton_backend["layer_norm"] == 6, dict(triton_backend)


# -- refusals and custom-op checks ----------------------------------------------------------------

def _t(*shape, dtype=torch.float32):
    return torch.randn(shape, device=DEVICE, dtype=dtype)


@pytest.mark.parametrize("call, reason", [
    (lambda: ops.layer_norm(_t(2, 3, dtype=torch.float64), _t(3), None, 1e-5), "dtype torch.float64"),
    (lambda: ops.layer_norm(_t(1, 65537), None, None, 1e-5), "hidden size 65537"),
    (lambda: ops.layer_norm(_t(2, 3), _t(3).half(), None, 1e-5), "weight dtype"),
    (lambda: ops.layer_norm(_t(2, 3), _t(3), _t(4), 1e-5), "bias shape"),
    (lambda: ops.layer_norm(_t(2, 3), _t(3), None, 1e-5, residual=_t(2, 1, 3)), "does not broadcast"),
    (lambda: ops.layer_norm(_t(2, 3), _t(3), None, 1e-5, dropout_p=1.0, training=True), "dropout_p=1.0"),
    (lambda: ops.rms_norm(_t(2, 3), None, 1e-6), "weight is None"),
    (lambda: ops.rms_norm(_t(2, 3), _t(3), 1e-6, residual=_t(2, 3).half()), "residual dtype"),
    (lambda: ops.rms_norm(_t(2, 0), _t(0), 1e-6), "non-empty last dimension"),
])
def test_norm_kernels_refuse_with_a_reason(triton_backend, call, reason):
    with pytest.raises(ops.BackendUnavailableError, match=reason):
        call()
    assert not triton_backend


def test_norm_kernels_accept_eval_mode_with_any_dropout_p():
    from fastformers.kernels import norm

    x, w = _t(2, 3), _t(3)
    assert norm.layer_norm_unsupported(x, w, None, 1e-5, dropout_p=1.0, training=False) is None
    assert norm.rms_norm_unsupported(x, w.bfloat16(), 1e-6, residual=_t(2, 3)) is None


@pytest.mark.parametrize("op_name", ["layer_norm", "layer_norm_bwd", "rms_norm", "add_rms_norm", "rms_norm_bwd"])
def test_norm_custom_ops_opcheck(triton_backend, op_name):
    from fastformers.kernels import norm

    g = torch.Generator().manual_seed(random.randrange(2**31))
    x, r, dy = _rand(g, 3, 5, scale=2, shift=1), _rand(g, 3, 5), _rand(g, 3, 5)
    w, b = _rand(g, 5, shift=1), _rand(g, 5)
    seed = norm.draw_dropout_seed(DEVICE)
    mean = x.mean(-1)
    rstd = 1 / x.var(-1, unbiased=False).add(1e-5).sqrt()
    args = {
        "layer_norm": lambda: (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), r.requires_grad_(),
                               seed, 1e-5, 0.2),
        "layer_norm_bwd": lambda: (dy, x, w, b, None, None, mean, rstd, 0.0, False, True, True),
        "rms_norm": lambda: (x.requires_grad_(), w.requires_grad_(), 1e-6),
        "add_rms_norm": lambda: (x.requires_grad_(), r.requires_grad_(), w.requires_grad_(), 1e-6),
        "rms_norm_bwd": lambda: (dy, r, x, w, rstd, True),
    }[op_name]()
    torch.library.opcheck(getattr(torch.ops.fastformers, op_name).default, args)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, n", [(4096, 768), (2048, 4096), (8, 65536)])
def test_norm_kernels_at_model_sizes(triton_backend, rows, n, dtype):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x, r, dy = _rand(g, rows, n, dtype=dtype, scale=2), _rand(g, rows, n, dtype=dtype), _rand(g, rows, n, dtype=dtype)
    w, b = _rand(g, n, dtype=dtype, shift=1), _rand(g, n, dtype=dtype)

    def ln(impl):
        return lambda x, w, b, r: impl(x, w, b, 1e-5, residual=r)

    got = _grads(ln(ops.layer_norm), (x, w, b, r), (dy,))
    want = _grads(ln(layer_norm_reference), (x, w, b, r), (dy,), torch.float64)
    _check(got, want, ["y", "dx", "dweight", "dbias", "dresidual"], TOL[dtype], seed)
    got = _grads(lambda x, w, r: ops.rms_norm(x, w, 1e-6, residual=r), (x, w, r), (dy, r))
    want = _grads(lambda x, w, r: rms_norm_reference(x, w, 1e-6, residual=r), (x, w, r), (dy, r), torch.float64)
    _check(got, want, ["y", "sum", "dx", "dweight", "dresidual"], TOL[dtype], seed)
    got, keep, dy = _dropout_run(x, w, b, r, 0.1, seed)
    scale = keep.double() / 0.9
    want = _grads(lambda x, w, b, r: layer_norm_reference(x * scale, w, b, 1e-5, residual=r),
                  (x, w, b, r), (dy,), torch.float64)
    _check(got, want, ["y", "dx", "dweight", "dbias", "dresidual"], TOL[dtype], seed)


def test_layer_norm_kernel_broadcasts_the_residual(triton_backend):
    """BERT's embeddings add (1, seq, hidden) position embeddings to a batch: the residual broadcasts,
    and its gradient sums over the batch."""
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 17, generator=g).to(DEVICE).requires_grad_()
    r = torch.randn(1, 5, 17, generator=g).to(DEVICE).requires_grad_()
    w, b = (torch.randn(17, generator=g).to(DEVICE) for _ in range(2))
    gy = torch.randn(3, 5, 17, generator=g).to(DEVICE)
    out = ops.layer_norm(x, w, b, 1e-5, residual=r)
    dx, dr = torch.autograd.grad(out, (x, r), gy)
    x64, r64 = x.detach().double().requires_grad_(), r.detach().double().requires_grad_()
    ref = ln64(x64 + r64, w, b, 1e-5)
    dx64, dr64 = torch.autograd.grad(ref, (x64, r64), gy.double())
    for got, want in ((out, ref), (dx, dx64), (dr, dr64)):
        assert rel_err(got, want) <= 1e-4, f"seed {seed}"
    assert triton_backend["layer_norm"] and triton_backend["layer_norm_bwd"]
