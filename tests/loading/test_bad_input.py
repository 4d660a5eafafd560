"""Bad input ends in a clear exception naming the culprit; nothing executes, nothing crashes."""

import os
import pickle

import pytest
import torch

import fastformers
from conftest import build_reference

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=16)


@pytest.mark.malformed
def test_missing_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(OSError, match="nowhere"):
        fastformers.AutoModel.from_pretrained(str(missing))
    with pytest.raises(OSError, match="nowhere"):
        fastformers.AutoTokenizer.from_pretrained(str(missing))


@pytest.mark.malformed
def test_folder_without_weights(tmp_path):
    path, _ = build_reference("bert", "AutoModel", tmp_path, **TINY)
    os.remove(path / "model.safetensors")
    with pytest.raises(OSError, match="has no weights: looked for model.safetensors"):
        fastformers.AutoModel.from_pretrained(path)


@pytest.mark.malformed
def test_config_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{ this is not json")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        fastformers.AutoConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        fastformers.AutoModel.from_pretrained(tmp_path)


@pytest.mark.malformed
def test_unknown_model_type_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "frobnicator"}')
    with pytest.raises(ValueError, match=r"'frobnicator' is not supported .* bert, distilbert, electra, .*llama.*roberta"):
        fastformers.AutoModel.from_pretrained(tmp_path)


@pytest.mark.malformed
def test_truncated_safetensors_names_file(tmp_path):
    path, _ = build_reference("bert", "AutoModel", tmp_path, **TINY)
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match=r"model\.safetensors.*truncated or corrupt"):
        fastformers.AutoModel.from_pretrained(path)


@pytest.mark.malformed
def test_corrupt_safetensors_header_names_file(tmp_path):
    path, _ = build_reference("bert", "AutoModel", tmp_path, **TINY)
    (path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header!!}" + b"\0" * 64)
    with pytest.raises(OSError, match=r"model\.safetensors"):
        fastformers.AutoModel.from_pretrained(path, torch_dtype=torch.float32)
    with pytest.raises(OSError, match=r"model\.safetensors"):
        fastformers.AutoModel.from_pretrained(path)


class _Exploit:
    marker = None

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.malformed
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note about the raw pickle below
def test_code_executing_pickle_is_refused(tmp_path):
    path, _ = build_reference("bert", "AutoModel", tmp_path, **TINY)
    os.remove(path / "model.safetensors")
    marker = tmp_path / "pwned"
    _Exploit.marker = str(marker)
    with open(path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"embeddings.word_embeddings.weight": _Exploit()}, f)
    with pytest.raises(OSError, match=r"refusing to load .*pytorch_model\.bin"):
        fastformers.AutoModel.from_pretrained(path)
    assert not marker.exists()


@pytest.mark.malformed
def test_ids_beyond_vocabulary_named(tmp_path):
    path, _ = build_reference("bert", "AutoModel", tmp_path, **TINY)
    model = fastformers.AutoModel.from_pretrained(path)
    with pytest.raises(IndexError, match="token id 99, outside the vocabulary of size 99"):
        model(torch.tensor([[1, 2, 99]]))
    with pytest.raises(IndexError, match="token id -1"):
        model(torch.tensor([[1, -1]]))


@pytest.mark.malformed
def test_too_long_sequence_names_both_numbers(tmp_path):
    path, _ = build_reference("bert", "AutoModel", tmp_path, **TINY)
    model = fastformers.AutoModel.from_pretrained(path)
    model(torch.ones(1, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="sequence length 17 exceeds max_position_embeddings=16"):
        model(torch.ones(1, 17, dtype=torch.long))


@pytest.mark.malformed
def test_bad_attention_mask_shape(tmp_path):
    path, _ = build_reference("bert", "AutoModel", tmp_path, **TINY)
    model = fastformers.AutoModel.from_pretrained(path)
    with pytest.raises(ValueError, match=r"attention_mask must have shape"):
        model(torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))
