"""ops.argmax against torch.argmax: the cpu kernel (csrc/cpu/argmax.cpp) must give the same index everywhere --
random rows of odd lengths, ties, NaN, +-inf, rows of -inf, signed zeros, batched and strided inputs -- on its
AVX-512 path and (in a fresh process) its portable one."""

import os
import subprocess
import sys

import pytest
import torch

from fastformers import ops
from fastformers.ops import native

pytestmark = pytest.mark.skipif(os.environ.get("FASTFORMERS_BUILD_EXT") == "0",
                                reason="FASTFORMERS_BUILD_EXT=0: the extension was deliberately not built")


def test_the_kernel_is_there():
    assert native.available(), native.load_error()

INF, NAN = float("inf"), float("nan")


def cases():
    g = torch.Generator().manual_seed(0)
    out = []
    for n in (1, 2, 15, 16, 17, 31, 33, 100, 1000, 49152, 50257):
        out.append(torch.randn(3, n, generator=g))
    row = torch.randn(1000, generator=g)
    for spots in ((5, 900), (17, 18), (0, 999), (3, 19, 35)):  # ties: the first index must win
        t = row.clone()
        t[list(spots)] = 10.0
        out.append(t)
    small = torch.randint(-3, 3, (4, 301), generator=g).float()  # many ties everywhere
    out.append(small)
    for spots, value in (((7,), NAN), ((40, 3), NAN), ((0,), NAN), ((999,), NAN), ((12,), INF), ((12, 700), INF),
                         ((12,), -INF)):
        t = row.clone()
        t[list(spots)] = value
        out.append(t)
    nan_after_inf = row.clone()
    nan_after_inf[[4, 600]] = torch.tensor([INF, NAN])
    out.append(nan_after_inf)
    out.append(torch.full((2, 37), -INF))
    out.append(torch.full((2, 37), NAN))
    out.append(torch.tensor([-0.0, 0.0, -0.0, 0.0] * 9))
    out.append(torch.tensor([0.0, -0.0] * 20))
    out.append(torch.randn(2, 3, 77, generator=g))  # batched
    out.append(torch.randn(40, 66, generator=g)[:, 3:60])  # strided rows
    out.append(torch.randn(66, 40, generator=g).t())  # column-major
    return out


@pytest.mark.parametrize("i", range(len(cases())))
def test_cpu_kernel_matches_torch_argmax(i):
    x = cases()[i]
    assert ops.argmax.choose("cpu", (x,)) == "cpu"
    got = ops.argmax(x)
    assert got.dtype == torch.long and got.shape == x.shape[:-1]
    assert torch.equal(got, torch.argmax(x, dim=-1)), (got, torch.argmax(x, dim=-1))


def test_other_dtypes_run_torch_argmax_and_bad_input_is_named():
    x = torch.randn(2, 50)
    assert ops.argmax.choose("cpu", (x.bfloat16(),)) == "torch"
    assert torch.equal(ops.argmax(x.double()), torch.argmax(x.double(), -1))
    with pytest.raises(RuntimeError, match="x must be float32"):
        torch.ops.fastformers_ext.argmax(x.double())
    with pytest.raises(RuntimeError, match="last dimension"):
        torch.ops.fastformers_ext.argmax(torch.empty(3, 0))


def test_schema_and_fake_implementation():
    torch.library.opcheck(torch.ops.fastformers_ext.argmax.default, (torch.randn(3, 70),),
                          test_utils=("test_schema", "test_faketensor"))


_PORTABLE = """
import sys
sys.path.insert(0, %r)
import torch
from fastformers import ops
from fastformers.ops import native
from test_argmax import cases
assert native.cpu_isa() != "avx512", native.cpu_isa()
for x in cases():
    assert torch.equal(ops.argmax(x), torch.argmax(x, dim=-1)), x
print("ok")
""" % (os.path.dirname(__file__),)


def test_the_portable_path_matches_too():
    env = dict(os.environ, FASTFORMERS_CPU_PORTABLE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _PORTABLE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr[-2000:]
