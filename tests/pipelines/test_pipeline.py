"""pipeline() itself: task names, aliases, model objects, the offline default-model error."""

import pytest

import fastformers
from fastformers.pipelines import SUPPORTED_TASKS, TASK_ALIASES
from pipeline_models import saved_model


def test_unknown_task_names_it_and_the_supported_ones():
    with pytest.raises(ValueError, match="'image-segmentation'") as info:
        fastformers.pipeline("image-segmentation")
    for task in (*SUPPORTED_TASKS, *TASK_ALIASES):
        assert task in str(info.value)


def test_offline_default_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(OSError, match="distilbert-base-uncased-finetuned-sst-2-english"):
        fastformers.pipeline("sentiment-analysis")


def test_model_object_takes_its_tokenizer_from_name_or_path(tmp_path_factory):
    path = saved_model(tmp_path_factory, "AutoModelForSequenceClassification")
    model = fastformers.AutoModelForSequenceClassification.from_pretrained(path)
    clf = fastformers.pipeline("text-classification", model=model, torch_dtype="float32", device="cpu")
    assert clf.tokenizer.mask_token == "[MASK]"
    assert clf("hello") == fastformers.pipeline("text-classification", model=path)("hello")
    model.config._name_or_path = ""
    with pytest.raises(ValueError, match="tokenizer"):
        fastformers.pipeline("text-classification", model=model)
    with pytest.raises(TypeError, match="top_q"):  # fill-mask takes no tokenizer keyword arguments
        fastformers.pipeline("fill-mask", model=path, top_q=3)
