"""The `fastformers` command itself (fastformers/cli/__init__.py and common.py): the subcommand table, --help,
--version, one-line errors and --debug, the shared --device check, `python -m fastformers`."""

import json
import subprocess
import sys

import pytest
import torch

from fastformers import __version__
from fastformers.cli import COMMANDS, main
from fastformers.cli.common import UsageError, check_device, read_lines, refuse_empty, shorten


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastformers: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_every_subcommand_has_help(capsys):
    names = [name for name, _, _ in COMMANDS]
    assert {"generate", "pipeline", "similarity", "embed", "env"} <= set(names)
    for name in names:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0
        assert f"usage: fastformers {name}" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"fastformers {__version__}"


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as done:
        main([])
    assert done.value.code == 2 and "COMMAND" in capsys.readouterr().err


def test_bad_model_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["similarity", "a", "--model", str(tmp_path / "missing")]) == 2
    assert "missing" in one_error_line(capsys)
    with pytest.raises(OSError, match="missing"):
        main(["--debug", "similarity", "a", "--model", str(tmp_path / "missing")])


def test_library_warnings_are_quiet_in_the_command_only(tmp_path, capsys):
    import logging

    library_log = logging.getLogger("fastformers")
    before = library_log.level
    assert main(["similarity", ""]) == 2
    assert library_log.level == before  # restored: pipeline() in the same process keeps its warnings
    capsys.readouterr()


@pytest.mark.parametrize("command", [["similarity", "a"], ["embed", "a"], ["generate", "hi"],
                                     ["pipeline", "fill-mask", "a [MASK]"]])
@pytest.mark.parametrize("device", ["cuda", "cuda:3", "nonsense"])
def test_unavailable_device_says_what_is_available(command, device, capsys):
    if torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has a GPU: --device cuda is available")  # the other two cases still run
    assert main([*command, "--device", device]) == 2
    line = one_error_line(capsys)
    assert repr(device) in line and "available here: cpu" in line


def test_device_check_with_one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda:0") == "cuda:0" and check_device("cuda") == "cuda" and check_device("cpu") == "cpu"
    assert check_device(None) is None
    with pytest.raises(UsageError, match=r"'cuda:3': this machine has 1 CUDA GPU; available here: cpu, cuda:0"):
        check_device("cuda:3")
    with pytest.raises(UsageError, match="not a device name"):
        check_device("gpu please")


def test_inputs_helpers(tmp_path, monkeypatch):
    path = tmp_path / "lines.txt"
    path.write_text("one\n\n  two  \n   \nthree", encoding="utf-8")
    assert read_lines(str(path)) == ["one", "two", "three"]  # blank lines skipped
    with pytest.raises(UsageError, match="cannot read --file .*nope"):
        read_lines(str(tmp_path / "nope"))
    path.write_bytes(b"\xff\xfe bad")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_lines(str(path))
    with pytest.raises(UsageError, match=r"empty sentence #2, #3 \(of 3\)"):
        refuse_empty(["a", "", "  "])
    with pytest.raises(UsageError, match="no inputs given"):
        refuse_empty([], "input")
    assert shorten("short", 10) == "short"
    assert shorten("a  long\nsentence here", 10) == "a long se…" and len(shorten("x" * 100, 10)) == 10


def test_python_dash_m_fastformers_runs_the_command():
    def run(*args):
        return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)

    done = run("fastformers", "env")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["backends"]["torch"] == "available" and info["fastformers"] == __version__
    assert "cpu" in info["devices"]
    done = run("fastformers.cli", "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"fastformers {__version__}"
    done = run("fastformers", "similarity", "")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == "fastformers: error: empty sentence #1 (of 1): give text to embed"


def test_bench_subcommand_runs_the_side_by_side_benchmark(capsys):
    assert main(["bench", "--preset", "bert-tiny", "--batch", "1", "--length", "8", "--repeats", "1",
                 "--warmup", "0"]) == 0
    printed = capsys.readouterr().out
    assert "fastformers   fp32   1      8" in printed and "transformers  fp32   1      8" in printed
    assert main(["bench", "--preset", "nope"]) == 2
    assert "unknown --preset 'nope'" in capsys.readouterr().err
