"""`fastformers bench` (fastformers.bench.command) end to end on the CPU: the bert-tiny and gpt2 presets on small
grids, the files it writes, the agreement it reports, and its one-line errors."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pytest

from fastformers.bench import __main__ as bench_main
from fastformers.bench import command, presets


def bench(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="fastformers bench")
    command.configure(parser)
    return command.run(parser.parse_args(list(argv)))


def numbers(row: dict):
    """Every number of a result row, the per-call samples included."""
    for key, value in row.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield key, value
        elif isinstance(value, list):
            yield from ((key, v) for v in value)


def load_result(out: Path, stem_end: str) -> dict:
    (path,) = out.glob(f"*-{stem_end}.json")
    return json.loads(path.read_text())


def test_bert_tiny_preset_writes_table_json_markdown_plot(tmp_path, capsys):
    assert bench("--preset", "bert-tiny", "--batch", "1,2", "--length", "8,16", "--repeats", "2", "--warmup", "1",
                 "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")) == 0
    printed = capsys.readouterr().out
    assert "bert-tiny" in printed and "latency ms" in printed and "written:" in printed
    assert {p.suffix for p in tmp_path.glob("*-bert-tiny-fp32.*")} == {".json", ".md", ".png"}
    assert (tmp_path / "cache" / "bert-tiny-float32-seed0" / "config.json").exists()

    result = load_result(tmp_path, "bert-tiny-fp32")
    env = result["environment"]
    for key in ("device", "cpu", "python", "torch", "transformers", "fastformers", "date"):
        assert env[key], key
    assert "commit" in env  # the commit where a checkout, None otherwise
    assert result["rates"]["copy_bytes_per_s"] > 0 and result["rates"]["matmul_flops_per_s"] > 0
    rows = result["rows"]
    assert sorted((r["engine"], r["batch"], r["length"]) for r in rows) == sorted(
        (e, b, n) for e in ("fastformers", "transformers", "onnxruntime") for b in (1, 2) for n in (8, 16))
    for row in rows:
        for key, value in numbers(row):
            assert math.isfinite(value) and value > 0, (key, value, row)
        assert len(row["latency_samples_ms"]) == 2
        assert row["latency_floor_ms"] <= row["latency_ms"] * 5  # a floor, from rates of the same run
    for row in (r for r in rows if r["engine"] in ("fastformers", "onnxruntime")):  # the anchor: onnxruntime is in
        assert row["agreement"]["ok"] and row["agreement"]["max_rel_diff"] <= command.TOLERANCE["fp32"]
    markdown = next(tmp_path.glob("*-bert-tiny-fp32.md")).read_text()
    assert "| engine | dtype | batch | length | latency ms |" in markdown
    assert markdown.count("| fastformers |") == 4


def test_gpt2_preset_prefill_decode_and_greedy_tokens(tmp_path, capsys):
    assert bench("--preset", "gpt2", "--batch", "1", "--length", "8", "--new-tokens", "4", "--repeats", "1",
                 "--warmup", "0", "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")) == 0
    printed = capsys.readouterr().out
    assert "decode tok/s" in printed and "note: no onnxruntime row: the anchor covers bert" in printed
    assert {p.suffix for p in tmp_path.glob("*-gpt2-fp32.*")} == {".json", ".md", ".png"}
    rows = load_result(tmp_path, "gpt2-fp32")["rows"]
    assert [r["engine"] for r in rows] == ["fastformers", "transformers"]
    for row in rows:
        for key, value in numbers(row):
            assert math.isfinite(value) and value > 0, (key, value, row)
        assert row["new_tokens"] == 4
    agreement = rows[0]["agreement"]
    assert agreement["ok"] and agreement["tokens_identical"] == agreement["tokens"] == 4


def test_missing_matplotlib_skips_the_plot_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert bench("--preset", "bert-tiny", "--batch", "1", "--length", "8", "--repeats", "1", "--warmup", "0",
                 "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")) == 0
    printed = capsys.readouterr().out
    assert "plot skipped: matplotlib is not installed (pip install 'fastformers[plot]')" in printed
    assert {p.suffix for p in tmp_path.glob("*-bert-tiny-fp32.*")} == {".json", ".md"}


@pytest.mark.parametrize("argv, message", [
    ((), "name a model: --preset NAME"),
    (("--preset", "bert-huge"), "unknown --preset 'bert-huge'; choose from bert-tiny"),
    (("--preset", "bert-tiny", "--batch", "0,8"), "--batch takes comma-separated positive integers, got '0,8'"),
    (("--preset", "bert-tiny", "--length", "x"), "--length takes comma-separated positive integers"),
    (("--preset", "gpt2", "--new-tokens", "1"), "--new-tokens must be at least 2"),
    (("--preset", "bert-tiny", "--gguf-file", "m.gguf"), "--gguf-file names a file inside --model"),
    (("--preset", "bert-tiny", "--device", "tpu"), "--device"),
])
def test_bad_arguments_end_in_one_line(argv, message, capsys):
    assert bench(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastformers bench: ") and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_cuda_without_a_gpu_names_what_is_available(capsys):
    assert bench("--preset", "bert-tiny", "--device", "cuda") == 2
    assert "--device cuda: not available here; available: cpu" in capsys.readouterr().err


def test_length_beyond_the_models_positions(tmp_path, capsys):
    assert bench("--preset", "bert-tiny", "--length", "600", "--cache-dir", str(tmp_path)) == 2
    assert "--length 600 exceeds the model's 512 positions" in capsys.readouterr().err


def test_preset_too_large_for_memory_says_what_it_needs(monkeypatch, capsys):
    monkeypatch.setattr(presets, "available_memory", lambda device: 2 * 2**30)
    assert bench("--preset", "llama-8b", "--dtype", "bf16") == 2
    err = capsys.readouterr().err
    assert "preset llama-8b needs about" in err and "GiB of memory" in err and "2.0 GiB is available" in err


def test_preset_weights_are_seeded_random_not_zero(tmp_path):
    import torch

    import fastformers

    folder = presets.build_checkpoint("bert-tiny", torch.float32, str(tmp_path), seed=3)
    again = presets.build_checkpoint("bert-tiny", torch.float32, str(tmp_path / "again"), seed=3)
    a = fastformers.AutoModel.from_pretrained(folder).state_dict()
    b = fastformers.AutoModel.from_pretrained(again).state_dict()
    for name, t in a.items():
        assert torch.equal(t, b[name]), name
        if not t.is_floating_point():
            continue
        assert t.count_nonzero() > 0.99 * t.numel(), name
        if name.endswith("LayerNorm.weight"):  # norms near 1
            assert (t - 1).abs().max() < 0.2 and t.std() > 1e-3, name
        elif t.numel() > 100:  # matrices and biases: small normal values
            assert 0.015 < t.std() < 0.025 and t.abs().max() < 0.2, name
    assert presets.parameter_count("bert-tiny") == sum(
        p.numel() for p in fastformers.AutoModel.from_pretrained(folder).parameters())


def test_python_m_fastformers_bench_reaches_the_command(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["python -m fastformers.bench", "--preset", "nope"])
    with pytest.raises(SystemExit) as exit_:
        bench_main.main()
    assert exit_.value.code == 2 and "unknown --preset 'nope'" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["python -m fastformers.bench", "nosuchsuite"])
    with pytest.raises(SystemExit):  # positional suite names keep the suite runner's parser
        bench_main.main()
    assert "unknown suite(s) nosuchsuite" in capsys.readouterr().err


def test_progress_bar_is_off_in_pipes_and_with_the_env_var(monkeypatch):
    monkeypatch.delenv("FASTFORMERS_NO_PROGRESS", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert not command._progress(3).disable
    monkeypatch.setenv("FASTFORMERS_NO_PROGRESS", "1")
    assert command._progress(3).disable
    monkeypatch.delenv("FASTFORMERS_NO_PROGRESS")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert command._progress(3).disable


def test_model_folder_and_int8_quantized_rows(tmp_path, capsys):
    import torch

    folder = presets.build_checkpoint("bert-tiny", torch.float32, str(tmp_path), seed=1)
    assert bench("--model", folder, "--dtype", "int8", "--batch", "1", "--length", "8", "--repeats", "1",
                 "--warmup", "0", "--out", str(tmp_path / "out")) == 0
    printed = capsys.readouterr().out
    assert "(checkpoint), encoder, int8" in printed and "note: int8 on a CPU runs the torch reference" in printed
    result = load_result(tmp_path / "out", "bert-tiny-float32-seed1-int8")
    ours, theirs, anchor = result["rows"]
    assert (ours["engine"], ours["dtype"], theirs["engine"], theirs["dtype"], anchor["engine"], anchor["dtype"]) == \
        ("fastformers", "int8", "transformers", "fp32", "onnxruntime", "int8")
    for row in (ours, anchor):
        assert row["agreement"]["ok"] and 0 < row["agreement"]["max_rel_diff"] <= command.TOLERANCE["int8"]
        assert row["bytes"] < theirs["bytes"] / 2  # int8 weights are read, not float32 ones


def test_model_that_is_not_there(tmp_path, capsys):
    assert bench("--model", str(tmp_path / "missing")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fastformers bench: --model {tmp_path / 'missing'}: ") and len(err.splitlines()) == 1


@pytest.mark.gpu
@pytest.mark.parametrize("preset, extra", [("bert-base", ()), ("gpt2", ("--new-tokens", "8"))])
def test_fp16_on_the_gpu_times_with_cuda_events(preset, extra, tmp_path):
    assert bench("--preset", preset, "--device", "cuda", "--dtype", "fp16", "--batch", "1,4", "--length", "128",
                 "--repeats", "5", *extra, "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")) == 0
    result = load_result(tmp_path, f"{preset}-fp16")
    env = result["environment"]
    assert env["cuda"] and not env["device"].startswith("cpu")  # torch's CUDA version, the GPU's name
    assert result["settings"]["device"] == "cuda" and result["rates"]["matmul_size"] in (4096, 8192)
    for row in result["rows"]:
        for key, value in numbers(row):
            assert math.isfinite(value) and value > 0, (key, value, row)
        # a weight-streaming decode may read a little faster than a copy (read + write) runs: a margin, not 1.0
        assert all(v < 1.5 for k, v in row.items() if k.endswith("floor_fraction")), row
    assert all(r["agreement"]["ok"] for r in result["rows"] if r["engine"] == "fastformers")
