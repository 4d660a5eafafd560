"""Shared test helpers: tiny random transformers models saved to disk, and output comparison."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import sys

import pytest
import torch

# Triton kernels run on the CPU through Triton's interpreter when there is no GPU. Triton reads this
# when a kernel is defined, so it is set before any test imports fastformers.kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# A test that hangs (a deadlock in C++ or a lock, say) ends the run after HANG_SECONDS with every Python thread's
# stack on the real stderr, instead of holding CI until its own limit with no word of where it stopped.
HANG_SECONDS = float(os.environ.get("FASTFORMERS_TEST_HANG_S", "900"))
_stderr = None


def pytest_configure(config):
    global _stderr
    _stderr = os.fdopen(os.dup(sys.__stderr__.fileno()), "w")  # before pytest captures fd 2 for a test


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if HANG_SECONDS > 0 and _stderr is not None:
        faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=_stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (b the reference); 0 for two empty tensors."""
    a, b = a.detach().double(), b.detach().double()
    if b.numel() == 0:
        return 0.0
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def assert_close_outputs(ours, theirs, fields, tol=1e-5, mask=None):
    """Compare named output fields (tensors or tuples of tensors) within relative error `tol`."""
    for name in fields:
        a, b = ours[name], theirs[name]
        if isinstance(b, (tuple, list)):
            assert len(a) == len(b) > 0, f"{name}: {len(a)} vs {len(b)} entries"
        pairs = list(zip(a, b)) if isinstance(b, (tuple, list)) else [(a, b)]
        for i, (x, y) in enumerate(pairs):
            assert x.shape == y.shape, f"{name}[{i}]: shape {tuple(x.shape)} vs {tuple(y.shape)}"
            if mask is not None and x.dim() >= 2 and x.shape[:2] == mask.shape:
                x, y = x[mask], y[mask]  # (batch, seq, ...) outputs: real positions only
            elif mask is not None and x.dim() == 4 and (x.shape[0], x.shape[2]) == mask.shape:
                x, y = x.transpose(1, 2)[mask], y.transpose(1, 2)[mask]  # attentions: rows of real queries
            err = rel_err(x, y)
            assert err <= tol, f"{name}[{i}]: relative error {err:.2e} > {tol:.0e}"


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Give every parameter fresh random values (no zeros, no ones), so nothing passes by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            centre = 1.0 if name.endswith("weight") and p.dim() == 1 else 0.0  # norm scales near 1
            p.copy_(torch.randn(p.shape, generator=g) * std + centre)
    return model


@pytest.fixture
def padded_batch():
    """A padded batch of 3 sequences of lengths 9, 5, 1 over a vocabulary of 99 ids (ids >= 3)."""
    def make(vocab_size=99, lengths=(9, 5, 1), seed=0, pad_id=0, left=False):
        g = torch.Generator().manual_seed(seed)
        seq = max(lengths)
        ids = torch.full((len(lengths), seq), pad_id, dtype=torch.long)
        mask = torch.zeros((len(lengths), seq), dtype=torch.long)
        for i, n in enumerate(lengths):
            sl = slice(seq - n, seq) if left else slice(0, n)
            ids[i, sl] = torch.randint(3, vocab_size, (n,), generator=g)
            mask[i, sl] = 1
        return ids, mask
    return make


HEAD_OUTPUTS = {
    "AutoModel": ("last_hidden_state",),
    "AutoModelForMaskedLM": ("logits",),
    "AutoModelForSequenceClassification": ("logits",),
    "AutoModelForTokenClassification": ("logits",),
    "AutoModelForQuestionAnswering": ("start_logits", "end_logits"),
    "AutoModelForMultipleChoice": ("logits",),
    "AutoModelForCausalLM": ("logits",),
}
ENCODER_HEADS = [task for task in HEAD_OUTPUTS if task != "AutoModelForCausalLM"]


def build_reference(model_type: str, task: str, tmp_path, seed: int = 0, **config):
    """Build a tiny random transformers model, save it under tmp_path, return (path, hf_model)."""
    import transformers

    hf_config = transformers.AutoConfig.for_model(model_type, **config)
    torch.manual_seed(seed)
    # eager attention: transformers' sdpa path returns no attention probabilities to compare
    hf_model = getattr(transformers, task).from_config(hf_config, attn_implementation="eager")
    randomize_(hf_model, seed)
    hf_model.eval()
    path = tmp_path / f"{model_type}-{task}"
    hf_model.save_pretrained(path)
    return path, hf_model


def labels_for(task: str, ids: torch.Tensor, config) -> dict:
    g = torch.Generator().manual_seed(1)
    b, s = ids.shape[:2]
    if task in ("AutoModelForMaskedLM", "AutoModelForCausalLM"):
        labels = torch.randint(0, config.vocab_size, ids.shape, generator=g)
        labels[:, ::2] = -100
        return {"labels": labels}
    if task == "AutoModelForSequenceClassification":
        return {"labels": torch.randint(0, config.num_labels, (b,), generator=g)}
    if task == "AutoModelForTokenClassification":
        return {"labels": torch.randint(0, config.num_labels, ids.shape, generator=g)}
    if task == "AutoModelForQuestionAnswering":
        return {"start_positions": torch.randint(0, s, (b,), generator=g),
                "end_positions": torch.randint(0, s, (b,), generator=g)}
    if task == "AutoModelForMultipleChoice":
        return {"labels": torch.randint(0, ids.shape[1], (b,), generator=g)}
    return {}


@contextlib.contextmanager
def _unpadding_seen():
    """A list that gets an entry each time an encoder unpads a batch (ops.unpad) inside the block."""
    from fastformers import ops

    seen, unpad = [], ops.unpad

    def spy(x, attention_mask):
        seen.append(attention_mask.shape)
        return unpad(x, attention_mask)

    ops.unpad = spy
    try:
        yield seen
    finally:
        ops.unpad = unpad


def check_against_transformers(model_type: str, task: str, tmp_path, inputs: dict, tol: float = 1e-5,
                               real_positions_only: bool = False, **config):
    """Load the same saved weights in both libraries; compare every output field, hidden states,
    attentions and the loss. Returns our model.

    real_positions_only: compare only positions whose attention_mask is 1. Decoders need it with
    left padding: a padding query sees no key at all, and what a library writes there is arbitrary
    (we write zeros, transformers a uniform average); no later token reads it."""
    import fastformers

    path, hf_model = build_reference(model_type, task, tmp_path, **config)
    ours = getattr(fastformers, task).from_pretrained(path)
    assert type(ours).__name__ == type(hf_model).__name__
    if task == "AutoModelForMultipleChoice":
        inputs = {k: v[:, None].expand(-1, 2, -1).contiguous() for k, v in inputs.items()}
    ids = inputs.get("input_ids")
    labels = labels_for(task, ids, hf_model.config) if ids is not None else {}
    if "attention_mask" in inputs and labels.get("labels") is not None and labels["labels"].shape == ids.shape:
        labels["labels"][inputs["attention_mask"] == 0] = -100  # no loss on padding, as data collators do
        if task == "AutoModelForCausalLM":  # nor on tokens predicted from a padding position (left padding)
            labels["labels"][:, 1:][inputs["attention_mask"][:, :-1] == 0] = -100
    with torch.no_grad():
        a = ours(**inputs, **labels, output_hidden_states=True, output_attentions=True)
        b = hf_model(**inputs, **labels, output_hidden_states=True, output_attentions=True)
    fields = HEAD_OUTPUTS[task] + ("hidden_states", "attentions") + (("loss",) if labels else ())
    mask = inputs["attention_mask"].bool() if real_positions_only and "attention_mask" in inputs else None
    assert_close_outputs(a, b, fields, tol, mask)
    # without the optional outputs (the fast path) the results are the same; where the encoder unpadded the batch
    # (ops.unpadding_pays: on the CPU and on GPU kernels) padded positions carry what the heads make of zeros, not
    # of pad tokens, so real positions are compared (every position of the padded path is, just above)
    with torch.no_grad(), _unpadding_seen() as unpadded:
        a2 = ours(**inputs)
    if unpadded and mask is None:
        mask = inputs["attention_mask"].bool()
    assert_close_outputs(a2, b, HEAD_OUTPUTS[task], tol, mask)
    optional = {"pooler_output", "cache"}  # the KV cache (transformers 5.25 calls it cache)
    assert set(a2.keys()) - optional == set(HEAD_OUTPUTS[task]) | (set(b.keys()) & {"pooler_output"}) - optional
    return ours


@pytest.fixture(autouse=True)
def _one_thread_for_generation(request):
    """Generation tests run tiny models step by step: one thread is fastest for them, and keeps them
    from crawling when another process competes for the cores (spinning OpenMP workers). Also for the
    generating tests elsewhere (the text-generation pipeline, the generate command)."""
    path = request.node.path
    if "generation" not in path.parts and path.name not in ("test_text_generation.py", "test_cli_generate.py"):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def triton_backend():
    """Force every op onto the Triton kernels (the interpreter on CPU), with kernel outputs poisoned
    (NaN) before each launch; yields the launch counter, so a test can prove the kernels ran."""
    from fastformers.kernels import _common
    from fastformers import ops

    _common.LAUNCHES.clear()
    with ops.use_backend("triton"), _common.poisoned_outputs():
        yield _common.LAUNCHES


# -- hardening summary: how many malformed inputs the run tried ------------------------------------------
# A test feeding malformed input either records how many it tried (record_property("malformed_inputs_tried",
# n): the fuzzers) or is marked `malformed` (one input each). A failing one accepted (or mishandled) at least
# one input wrongly.
_HARDENING = {"tried": 0, "wrong": 0}
_COUNTED = "malformed_inputs_tried"


def pytest_runtest_logreport(report):
    if report.when != "call" and not (report.when == "setup" and report.failed):
        return
    counted = [n for key, n in report.user_properties if key == _COUNTED]
    if not counted and "malformed" not in report.keywords:
        return
    _HARDENING["tried"] += sum(counted) if counted else 1
    if report.failed:
        _HARDENING["wrong"] += 1


def pytest_terminal_summary(terminalreporter):
    if _HARDENING["tried"]:
        terminalreporter.write_line(f"hardening: {_HARDENING['tried']} malformed inputs tried, "
                                    f"{_HARDENING['wrong']} accepted wrongly")
