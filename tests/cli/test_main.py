"""The `fastformers` command: the README's main job (sentence similarity) and `env`."""

import json
import subprocess
import sys

from fastformers.cli import main


def test_similarity_main_job(capsys):
    assert main(["similarity", "A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."]) == 0
    out = capsys.readouterr().out
    assert "most similar: 'A man is eating food.' ~ 'A man is eating a piece of bread.'" in out


def test_embed_prints_normalised_vectors(capsys):
    assert main(["embed", "hello world"]) == 0
    (vec,) = json.loads(capsys.readouterr().out)
    assert len(vec) == 384 and abs(sum(x * x for x in vec) - 1) < 1e-4


def test_bad_model_is_a_clear_error(tmp_path, capsys):
    assert main(["similarity", "a", "--model", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_env_command_runs_as_installed_script():
    out = subprocess.run([sys.executable, "-m", "fastformers.cli", "env"], capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    assert info["backends"]["torch"] == "available" and info["fastformers"]
