"""Untrusted checkpoint files (safetensors, sharded indexes, config.json): every lie is a clear error naming the
file and the field, before anything the file does not justify is allocated. (More in test_bad_input.py.)

transformers 5.25 on the same folders, for comparison: it also refuses `../` shard names (its hub resolver
rejects them), keeps the last of two duplicate JSON keys silently, and loads a tensor stored in two shards
from whichever shard comes last.
"""

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

import fastformers
from conftest import build_reference

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=16)


@pytest.fixture
def sharded(tmp_path):
    """A tiny BERT checkpoint split into two safetensors shards with an index."""
    path, _ = build_reference("bert", "AutoModel", tmp_path, **TINY)
    state = load_file(path / "model.safetensors")
    (path / "model.safetensors").unlink()
    names = sorted(state)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for shard, keys in shards.items():
        save_file({k: state[k].contiguous() for k in keys}, path / shard)
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    return path, state, shards, index


def test_sharded_checkpoint_loads(sharded):
    path, state, _, _ = sharded
    model = fastformers.AutoModel.from_pretrained(path)
    name = "embeddings.word_embeddings.weight"
    assert torch.equal(model.state_dict()[name], state[name])


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors",
                                   "..\\x.safetensors", "C:/x.safetensors", "", 7, None])
@pytest.mark.malformed
def test_shard_names_never_leave_the_folder(sharded, shard):
    path, _, _, index = sharded
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = shard
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json: weight_map\[.*invalid shard file"):
        fastformers.AutoModel.from_pretrained(path)


@pytest.mark.malformed
@pytest.mark.parametrize("weight_map", [[], {}, "model.safetensors", None])
def test_weight_map_of_the_wrong_type(sharded, weight_map):
    path, _, _, _ = sharded
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ValueError, match=r"index\.json: 'weight_map' must be a non-empty object"):
        fastformers.AutoModel.from_pretrained(path)


@pytest.mark.malformed
def test_duplicate_keys_in_the_index_refused(sharded):
    path, _, shards, index = sharded
    first, second = list(shards)
    text = json.dumps(index)[:-2] + f', "pooler.dense.weight": "{first}"' + "}}"
    (path / "model.safetensors.index.json").write_text(text)
    with pytest.raises(ValueError, match=r"index\.json is not a valid weight index.*'pooler\.dense\.weight' "
                                         r"appears twice"):
        fastformers.AutoModel.from_pretrained(path)


@pytest.mark.malformed
def test_a_tensor_in_two_shards_refused(sharded):
    path, state, shards, _ = sharded
    first, second = list(shards)
    extra = shards[first][0]
    save_file({**{k: state[k].contiguous() for k in shards[second]}, extra: torch.zeros_like(state[extra])},
              path / second)
    with pytest.raises(ValueError, match=f"tensor '{extra}' is stored in two shards: .*{first} and .*{second}"):
        fastformers.AutoModel.from_pretrained(path)


@pytest.mark.malformed
def test_duplicate_keys_in_config_json_refused(tmp_path):
    path, _ = build_reference("bert", "AutoModel", tmp_path, **TINY)
    text = (path / "config.json").read_text()
    (path / "config.json").write_text(text.replace("{", '{"num_hidden_layers": 1000000,', 1))
    with pytest.raises(ValueError, match=r"config\.json: the key 'num_hidden_layers' appears twice"):
        fastformers.AutoModel.from_pretrained(path)


@pytest.mark.parametrize("header_len, header", [
    (2**63, b"{}"),                                   # header length past the file
    (2**20, b"{}"),
    (None, b'{"x": {"dtype": "F32", "shape": [1000000000, 1000000000], "data_offsets": [0, 4]}}'),
    (None, b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4000000000]}}'),
    (None, b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [18446744073709551615, 4]}}'),
    (None, b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "y": '),
])
@pytest.mark.malformed
def test_lying_safetensors_headers_name_the_file(tmp_path, header_len, header):
    # the safetensors library (audited) checks these; the error names our file and says what is wrong
    path, _ = build_reference("bert", "AutoModel", tmp_path, **TINY)
    header += b" " * (-len(header) % 8)
    data = struct.pack("<Q", len(header) if header_len is None else header_len) + header + b"\0" * 4
    (path / "model.safetensors").write_bytes(data)
    with pytest.raises(OSError, match=r"model\.safetensors.*(truncated or corrupt|cannot read)"):
        fastformers.AutoModel.from_pretrained(path, torch_dtype=torch.float32)
