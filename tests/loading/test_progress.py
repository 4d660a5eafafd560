"""Progress bars while loading (loading/progress.py): when they show (a terminal, a large file, no opt-out
variable) and what they count (bytes of safetensors files, tensors of GGUF files), checked without a terminal."""

import io

import pytest

from fastformers import AutoModel, AutoModelForCausalLM
from fastformers.loading import progress
from fastformers.loading.progress import MIN_BYTES, LoadProgress, bars_allowed, progress_enabled
from fastformers.pipelines.defaults import chat_checkpoint, embedding_checkpoint


class Terminal(io.StringIO):
    def isatty(self):
        super().isatty()  # raises ValueError once closed, as a real stream does
        return True


@pytest.fixture(autouse=True)
def _no_opt_out(monkeypatch):
    for name in progress.DISABLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_on_only_for_a_terminal_and_a_large_load(monkeypatch):
    big = MIN_BYTES["weights"]
    assert progress_enabled(big, stream=Terminal())
    assert not progress_enabled(big - 1, stream=Terminal())  # loads in about a second: no bar
    assert not progress_enabled(big, stream=io.StringIO())  # a pipe or a file
    assert progress_enabled(MIN_BYTES["gguf"], "gguf", stream=Terminal())
    assert not progress_enabled(MIN_BYTES["gguf"], "weights", stream=Terminal())
    closed = Terminal()
    closed.close()
    assert not progress_enabled(big, stream=closed)


@pytest.mark.parametrize("name", ["FASTFORMERS_NO_PROGRESS", "HF_HUB_DISABLE_PROGRESS_BARS"])
def test_opt_out_variables(monkeypatch, name):
    for value, shown in (("1", False), ("true", False), ("0", True), ("", True)):
        monkeypatch.setenv(name, value)
        assert progress_enabled(1 << 40, stream=Terminal()) is shown, (name, value)
        assert bars_allowed(Terminal()) is shown and not bars_allowed(io.StringIO())


def test_without_a_bar_the_iterator_passes_unchanged(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"x" * 10)
    pieces = iter([("a", 1)])
    with LoadProgress([str(path)], stream=Terminal()) as load:  # 10 bytes: below the threshold
        assert load.bar is None and load.wrap(pieces) is pieces


def test_safetensors_load_shows_bytes_on_a_terminal(monkeypatch):
    monkeypatch.setitem(MIN_BYTES, "weights", 0)
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    AutoModel.from_pretrained(embedding_checkpoint().path)
    shown = terminal.getvalue()
    assert "loading model.safetensors" in shown and "86.7M" in shown
    monkeypatch.setenv("FASTFORMERS_NO_PROGRESS", "1")
    terminal.seek(0), terminal.truncate()
    AutoModel.from_pretrained(embedding_checkpoint().path)
    assert "loading" not in terminal.getvalue()


def test_gguf_load_counts_tensors(monkeypatch):
    checkpoint = chat_checkpoint()
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    AutoModelForCausalLM.from_pretrained(checkpoint.path, gguf_file=checkpoint.gguf_file)  # 98 MB: over 32 MB
    shown = terminal.getvalue()
    assert f"loading {checkpoint.gguf_file}" in shown and "/272 [" in shown and "tensor/s" in shown
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal: nothing
    AutoModelForCausalLM.from_pretrained(checkpoint.path, gguf_file=checkpoint.gguf_file)
    assert terminal.getvalue() == shown
