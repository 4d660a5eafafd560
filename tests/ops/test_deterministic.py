"""Determinism: torch.use_deterministic_algorithms(True) is honoured by the op dispatch (a backend registered
as nondeterministic is skipped in auto mode and refused when forced), and no fastformers kernel uses atomics
(which is why none is registered as nondeterministic today). Tested on the CPU through the dispatch decision;
the GPU paths themselves are not run here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from fastformers import ops
from fastformers.ops.backend import Op

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    yield lambda on: torch.use_deterministic_algorithms(on)
    torch.use_deterministic_algorithms(before)


def fake_op():
    fake = Op("fake", lambda x: "torch")
    fake.register("cuda", deterministic=False)(lambda x: "cuda (atomics)")
    fake.register("triton")(lambda x: "triton")
    return fake


def test_auto_skips_a_nondeterministic_backend_while_the_switch_is_on(monkeypatch, deterministic):
    monkeypatch.setattr("fastformers.ops.backend.backend_status", lambda name: None)
    fake = fake_op()
    x = torch.zeros(1)
    assert fake.pick("cuda", (x,))(x) == "cuda (atomics)"
    served = fake.resolve("cuda", "auto")  # what a layer binds: the switch is read per call
    assert served(x) == "cuda (atomics)"
    deterministic(True)
    assert fake.pick("cuda", (x,))(x) == "triton"
    assert served(x) == "triton"
    deterministic(False)
    assert served(x) == "cuda (atomics)"


def test_auto_falls_back_to_the_torch_reference(monkeypatch, deterministic):
    monkeypatch.setattr("fastformers.ops.backend.backend_status", lambda name: None)
    fake = Op("fake", lambda x: "torch")
    fake.register("triton", deterministic=False)(lambda x: "triton (atomics)")
    deterministic(True)
    assert fake.pick("cuda", (None,))(None) == "torch"
    assert fake.resolve("cuda", "auto")(None) == "torch"


def test_a_forced_nondeterministic_backend_is_refused_with_the_reason(monkeypatch, deterministic):
    monkeypatch.setattr("fastformers.ops.backend._require", lambda name: None)
    fake = Op("fake", lambda x: "torch")
    fake.register("triton", deterministic=False)(lambda x: "triton (atomics)")
    x = torch.zeros(1)
    with ops.use_backend("triton"):
        assert fake(x) == "triton (atomics)"
        deterministic(True)
        with pytest.raises(ops.BackendUnavailableError, match="not deterministic and "
                                                              r"torch.use_deterministic_algorithms\(True\) is on"):
            fake(x)


def test_no_kernel_uses_atomics():
    """Every reduction in kernels/ and csrc/ runs in a fixed order, so results repeat bit for bit; a kernel
    that starts using atomics must be registered with deterministic=False (and this test updated)."""
    sources = list((ROOT / "src" / "fastformers" / "kernels").glob("*.py")) + list((ROOT / "csrc").rglob("*.c*"))
    assert any(p.name == "attention_backward.py" for p in sources)
    offenders = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in sources
                 for m in re.finditer(r"tl\.atomic_\w+|atomic(Add|CAS|Exch|Max|Min)\b", p.read_text())]
    assert not offenders, offenders
