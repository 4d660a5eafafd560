"""pipeline() itself: task names, aliases, model objects, the offline default-model error."""

import pytest

import fastformers
from fastformers.pipelines import SUPPORTED_TASKS, TASK_ALIASES, default_model
from fastformers.pipelines.defaults import chat_checkpoint, embedding_checkpoint
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


def test_offline_default_error_says_it_was_the_default(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(OSError, match=r"No model was given to the fill-mask pipeline and its default, "
                                      r"distilbert/distilroberta-base, cannot be loaded \(offline"):
        fastformers.pipeline("fill-mask")
    assert "using its default distilbert/distilroberta-base, from the model hub" in caplog.text


@pytest.mark.parametrize("task, checkpoint", [("feature-extraction", embedding_checkpoint),
                                              ("sentence-embedding", embedding_checkpoint),
                                              ("text-generation", chat_checkpoint)])
def test_tasks_with_an_embedded_default_run_offline(task, checkpoint, monkeypatch, tmp_path, caplog):
    """Offline, with an empty hub cache: the embedded checkpoint is used, and the log names transformers' default."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    model, gguf_file = default_model(task)
    assert (model, gguf_file) == (checkpoint().path, checkpoint().gguf_file)
    pipe = fastformers.pipeline(task)
    assert pipe.model.config._name_or_path == checkpoint().path
    name = "HuggingFaceTB/SmolLM2-135M-Instruct" if checkpoint is chat_checkpoint else "sentence-transformers/all-MiniLM"
    assert f"using the embedded {name}" in caplog.text
    differs = task != "sentence-embedding"  # sentence-embedding is ours: all-MiniLM-L6-v2 is its hub default too
    assert (f"(transformers' default is {SUPPORTED_TASKS[task].default_model})" in caplog.text) is differs
    if task == "text-generation":
        assert "Paris" in pipe("The capital of France is", max_new_tokens=4, do_sample=False)[0]["generated_text"]
    elif task == "feature-extraction":
        assert len(pipe("hello")[0][0]) == 384  # [batch][token][hidden]
    else:
        assert len(pipe("hello")) == 384


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


def test_quantization_config_quantizes_the_model_on_load(tmp_path):
    """pipeline(..., quantization_config=...) loads the model quantized; it generates what the same model
    quantized in memory generates."""
    import torch
    from conftest import build_reference
    from pipeline_models import hf_tokenizer

    from fastformers.quantization import QuantizedLinear, quantize_model

    path, _ = build_reference("llama", "AutoModelForCausalLM", tmp_path, vocab_size=30522, hidden_size=64,
                              intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              max_position_embeddings=128, bos_token_id=101, eos_token_id=102, pad_token_id=0)
    hf_tokenizer().save_pretrained(path)
    config = fastformers.QuantizationConfig(bits=4, group_size=32)
    pipe = fastformers.pipeline("text-generation", model=str(path), quantization_config=config)
    quantized = [m for m in pipe.model.modules() if isinstance(m, QuantizedLinear)]
    assert len(quantized) == 2 * 7  # q, k, v, o, gate, up, down per layer; the lm_head stays float
    assert not isinstance(pipe.model.lm_head, QuantizedLinear)

    reference = quantize_model(fastformers.AutoModelForCausalLM.from_pretrained(path), config)
    ids = torch.tensor([pipe.tokenizer("the weather today is")["input_ids"]])
    expected = reference.generate(ids, max_new_tokens=6, do_sample=False)[0]
    out = pipe("the weather today is", max_new_tokens=6, do_sample=False, return_tensors=True)
    assert list(out[0]["generated_token_ids"]) == expected.tolist()
