"""`fastformers similarity` and `fastformers embed` (cli/similarity.py, cli/embed.py) on the embedded
all-MiniLM-L6-v2: arguments, --file and stdin, the matrix / top-pairs output, refused empty sentences, the '…'
marker and the report of sentences cut to the model's length."""

import io
import json

from fastformers.cli import main

EATING = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."]


def test_similarity_main_job(capsys):
    assert main(["similarity", *EATING]) == 0
    out = capsys.readouterr().out
    assert "most similar: 'A man is eating food.' ~ 'A man is eating a piece of bread.'" in out
    header, *rows, best = out.strip().splitlines()
    assert header.split() == ["#1", "#2", "#3"] and len(rows) == 3
    assert rows[0].startswith("#1 A man is eating food.") and rows[0].split()[-3] == "+1.0000"


def test_embed_prints_normalised_vectors(capsys):
    assert main(["embed", "hello world"]) == 0
    (vec,) = json.loads(capsys.readouterr().out)
    assert len(vec) == 384 and abs(sum(x * x for x in vec) - 1) < 1e-4


def test_file_and_stdin_give_the_same_result_as_arguments(tmp_path, monkeypatch, capsys):
    assert main(["similarity", *EATING]) == 0
    expected = capsys.readouterr().out
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join([EATING[0], "", EATING[1], "   ", EATING[2], ""]), encoding="utf-8")
    assert main(["similarity", "--file", str(path)]) == 0  # blank lines are skipped
    assert capsys.readouterr().out == expected
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(EATING) + "\n"))
    assert main(["similarity", "-"]) == 0
    assert capsys.readouterr().out == expected
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(EATING)))
    assert main(["embed", "--file", "-"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_a_path_is_not_scored_as_a_sentence_and_missing_files_are_named(tmp_path, capsys):
    assert main(["similarity", "--file", str(tmp_path / "nope.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastformers: error: cannot read --file") and "nope.txt" in err


def test_empty_sentences_are_refused_by_position(tmp_path, capsys):
    assert main(["similarity", "a", "", "b"]) == 2
    assert capsys.readouterr().err.strip() == "fastformers: error: empty sentence #2 (of 3): give text to embed"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    assert main(["similarity", "--file", str(empty)]) == 2
    assert "no sentences given" in capsys.readouterr().err
    assert main(["embed", "  "]) == 2
    assert "empty sentence #1" in capsys.readouterr().err


def test_many_sentences_print_the_top_pairs(capsys):
    topics = ["cats", "dogs", "the stock market", "football", "pasta recipes", "the weather", "quantum physics",
              "guitars", "gardening", "mountain climbing"]
    sentences = [f"I like to read about {t}." for t in topics] + ["I enjoy reading about cats."]
    assert main(["similarity", *sentences, "--top", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "11 sentences; the 3 most similar pairs:" and len(lines) == 4
    scores = [float(line.split()[0]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)
    assert "#1 I like to read about cats." in lines[1] and "#11 I enjoy reading about cats." in lines[1]
    assert max(len(line) for line in lines) <= 100


def test_long_sentences_are_marked_and_cut_ones_reported(capsys):
    long = "This sentence goes on and on about nothing in particular " * 3
    very_long = "word " * 600  # over the tokenizer's 512 tokens
    assert main(["similarity", long, "A short one.", very_long]) == 0
    captured = capsys.readouterr()
    assert "…" in captured.out and long not in captured.out
    assert max(len(line) for line in captured.out.splitlines()) <= 120
    notes = captured.err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith("note: sentence #3 (word word") and "cut" in notes[0]


def test_bad_numbers_are_refused(capsys):
    assert main(["similarity", "a", "b", "--top", "0"]) == 2
    assert "--top must be a positive integer" in capsys.readouterr().err
    assert main(["embed", "a", "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err


def test_one_sentence_says_there_is_nothing_to_compare(capsys):
    assert main(["similarity", "Only me."]) == 0
    assert capsys.readouterr().out.strip() == "1 sentence: Only me. (give two or more to compare)"
