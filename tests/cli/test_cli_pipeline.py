"""`fastformers pipeline TASK INPUT...` (cli/pipeline.py): results as pipeline() gives them (text and --json), task
extras, refused tasks and inputs, and the refusal of a checkpoint whose task head is missing (random weights)."""

import json

import pytest
from conftest import build_reference

import fastformers
from fastformers.cli import main
from fastformers.cli.pipeline import describe
from fastformers.pipelines.defaults import default_embedding_model

TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=128)


def saved(tmp_path_factory, task: str, **config) -> str:
    """A tiny random BERT for `task` (its head included) with the MiniLM tokenizer, in one folder."""
    path, _ = build_reference("bert", task, tmp_path_factory.mktemp(task), **{**TINY, **config})
    tokenizer = fastformers.AutoTokenizer.from_pretrained(default_embedding_model(), model_max_length=128)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return saved(tmp_path_factory, "AutoModelForSequenceClassification", num_labels=3,
                 id2label={0: "red", 1: "green", 2: "blue"}, label2id={"red": 0, "green": 1, "blue": 2})


def test_json_output_is_what_pipeline_returns(classifier, capsys):
    texts = ["I love this.", "I hate that."]
    assert main(["pipeline", "text-classification", *texts, "--model", classifier, "--json", "--top-k", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = [fastformers.pipeline("text-classification", model=classifier)(t, top_k=2) for t in texts]
    assert printed == json.loads(json.dumps(expected))


def test_text_output_one_line_per_prediction(classifier, capsys):
    assert main(["pipeline", "sentiment-analysis", "I love this.", "--model", classifier]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("label: '") and "score: 0." in line


def test_several_inputs_are_headed_by_their_text(classifier, capsys):
    assert main(["pipeline", "text-classification", "one", "two", "--model", classifier]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "one" and lines[2] == "two" and lines[1].startswith("  label:")


def test_question_answering_takes_context(tmp_path_factory, capsys):
    model = saved(tmp_path_factory, "AutoModelForQuestionAnswering")
    context = "My name is Sarah and I live in London."
    assert main(["pipeline", "question-answering", "Where do I live?", "--context", context, "--model", model,
                 "--json"]) == 0
    (answer,) = json.loads(capsys.readouterr().out)
    assert answer["answer"] in context and set(answer) == {"score", "start", "end", "answer"}
    assert main(["pipeline", "question-answering", "Where?", "--model", model]) == 2
    assert "needs --context" in capsys.readouterr().err


def test_feature_extraction_defaults_to_the_embedded_minilm(capsys):
    assert main(["pipeline", "feature-extraction", "hello world"]) == 0
    assert capsys.readouterr().out.strip() == "array of shape (1, 4, 384) (use --json for the values)"
    assert main(["pipeline", "sentence-embedding", "hello world", "--json"]) == 0
    (vector,) = json.loads(capsys.readouterr().out)
    assert len(vector) == 384 and isinstance(vector[0], float)  # one normalised vector per input


def test_text_generation_defaults_to_the_embedded_smollm2(capsys):
    assert main(["pipeline", "text-generation", "The capital of France is", "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("generated_text: 'The capital of France is") and "Paris" in out


@pytest.mark.parametrize("task, head", [("fill-mask", "cls.predictions"), ("text-classification", "classifier.weight"),
                                        ("token-classification", "classifier.weight")])
def test_missing_head_is_refused(task, head, capsys):
    """all-MiniLM-L6-v2 is a sentence-embedding checkpoint: no masked-LM or classifier weights."""
    text = "Paris is the [MASK] of France." if task == "fill-mask" else "Paris is nice."
    assert main(["pipeline", task, text, "--model", default_embedding_model()]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("fastformers: error: ") and f"no weights for the {task} head" in line and head in line
    assert captured.out == ""


@pytest.mark.parametrize("argv, message", [
    (["pipeline", "image-segmentation", "x"], "unknown task 'image-segmentation'; the tasks: feature-extraction"),
    (["pipeline", "zero-shot-classification", "x"], "needs --candidate-labels"),
    (["pipeline", "zero-shot-classification", "x", "--candidate-labels", " , "], "needs --candidate-labels"),
    (["pipeline", "fill-mask", "x", ""], "empty input #2 (of 2)"),
    (["pipeline", "feature-extraction", "x", "--top-k", "2"], "--top-k is for fill-mask and text-classification"),
    (["pipeline", "fill-mask", "x", "--max-new-tokens", "2"], "are for the generation tasks"),
    (["pipeline", "text-generation", "x", "--max-new-tokens", "0"], "--max-new-tokens must be a positive"),
])
def test_refused_before_loading(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(fastformers, "pipeline", lambda *a, **k: pytest.fail("loaded a model for a refused call"))
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("fastformers: error: ") and message in line


def test_zero_shot_labels_reach_the_pipeline(monkeypatch, capsys):
    calls = []

    class Fake:
        model = type("M", (), {"newly_initialized_weights": []})()

        def __call__(self, text, **options):
            calls.append((text, options))
            return {"sequence": text, "labels": ["b", "a"], "scores": [0.75, 0.25]}

    monkeypatch.setattr(fastformers, "pipeline", lambda *a, **k: Fake())
    assert main(["pipeline", "zero-shot-classification", "x", "--candidate-labels", "a, b", "--multi-label",
                 "--model", "some-nli-model"]) == 0
    assert calls == [("x", {"candidate_labels": ["a", "b"], "multi_label": True})]
    assert capsys.readouterr().out.splitlines() == ["0.7500  b", "0.2500  a"]


def test_token_classification_numpy_scores_print_as_json_and_text(tmp_path_factory, capsys):
    model = saved(tmp_path_factory, "AutoModelForTokenClassification", num_labels=3,
                  id2label={0: "O", 1: "B-PER", 2: "B-LOC"}, label2id={"O": 0, "B-PER": 1, "B-LOC": 2})
    text = "Sarah lives in London"
    assert main(["pipeline", "ner", text, "--model", model, "--json"]) == 0
    (entities,) = json.loads(capsys.readouterr().out)
    expected = fastformers.pipeline("ner", model=model)(text)
    assert [e["word"] for e in entities] == [e["word"] for e in expected]
    assert all(abs(a["score"] - float(b["score"])) < 1e-6 for a, b in zip(entities, expected))
    assert main(["pipeline", "ner", text, "--model", model]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(expected) if expected else lines == ["(nothing found)"]
    assert describe([]) == ["(nothing found)"]


def test_missing_model_folder_is_one_line(tmp_path, capsys):
    assert main(["pipeline", "fill-mask", "a [MASK]", "--model", str(tmp_path / "nowhere")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("fastformers: error: ") and "nowhere" in line


def test_task_without_embedded_model_needs_model_instead_of_a_download(capsys, monkeypatch):
    def no_hub(*args, **kwargs):
        raise AssertionError("the command went to the hub")

    monkeypatch.setattr("fastformers.pipelines.pipeline", no_hub)
    assert main(["pipeline", "fill-mask", "Paris is the [MASK] of France."]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastformers: error: fill-mask has no embedded model: pass --model") and \
        "distilbert/distilroberta-base" in err and len(err.splitlines()) == 1
