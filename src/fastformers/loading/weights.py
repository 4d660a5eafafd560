"""Checkpoint weight files: which ones a checkpoint has, and their tensors.

Formats: model.safetensors, sharded model.safetensors.index.json, and pytorch_model.bin (single or
sharded) read only through `torch.load(weights_only=True)`, which refuses pickles that would run code.
Every read error names the file.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from .hub import no_duplicate_keys, resolve_file

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"


def find_weight_files(name_or_path, *, use_safetensors: Optional[bool] = None, **hub) -> List[str]:
    """Local paths of a checkpoint's weight files, safetensors preferred."""
    candidates = []
    if use_safetensors is not False:
        candidates += [SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME]
    if not use_safetensors:
        candidates += [WEIGHTS_NAME, WEIGHTS_INDEX_NAME]
    for filename in candidates:
        path = resolve_file(name_or_path, filename, required=False, **hub)
        if path is None:
            continue
        if not filename.endswith(".index.json"):
            return [path]
        files = [resolve_file(name_or_path, shard, **hub) for shard in _shards_of(path)]
        _check_no_tensor_in_two_shards(files)
        return files
    raise OSError(f"{os.fspath(name_or_path)!r} has no weights: looked for {', '.join(candidates)}")


def _shards_of(index_path: str) -> List[str]:
    """The shard file names of a weight index, each a relative path inside the checkpoint folder."""
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f, object_pairs_hook=no_duplicate_keys)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{index_path} is not a valid weight index (a JSON object with 'weight_map'): {e}") from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index_path}: 'weight_map' must be a non-empty object of tensor name -> shard file, "
                         f"found {type(weight_map).__name__}")
    shards = []
    for name, shard in weight_map.items():
        # a name from the file must not leave the checkpoint folder: no absolute path, no drive, no '..'
        parts = shard.replace("\\", "/").split("/") if isinstance(shard, str) else None
        if parts is None or not shard or os.path.isabs(shard) or ".." in parts or ":" in parts[0] or "\0" in shard:
            raise ValueError(f"{index_path}: weight_map[{name!r}] names an invalid shard file {shard!r} (it must be a "
                             "file name inside the checkpoint folder)")
        if shard not in shards:
            shards.append(shard)
    return shards


def _check_no_tensor_in_two_shards(files: List[str]) -> None:
    """A tensor stored in two shards would load silently from whichever comes last: refused. (Only the
    safetensors headers are read: pickled shards would have to be loaded to list their names.)"""
    from safetensors import SafetensorError, safe_open

    seen: Dict[str, str] = {}
    for path in files:
        if not path.endswith(".safetensors"):
            continue
        try:
            with safe_open(path, framework="pt") as f:
                names = list(f.keys())
        except (SafetensorError, OSError, ValueError) as e:
            raise OSError(f"cannot read safetensors file {path}: it is truncated or corrupt ({e})") from None
        for name in names:
            if name in seen:
                raise ValueError(f"tensor {name!r} is stored in two shards: {seen[name]} and {path}")
            seen[name] = path


def read_tensors(path: str, device: str | torch.device = "cpu") -> Iterator[Tuple[str, torch.Tensor]]:
    """Yield (name, tensor) of one weight file."""
    if path.endswith(".safetensors"):
        yield from _read_safetensors(path, device)
    else:
        yield from _read_pickle(path).items()


def checkpoint_dtype(path: str) -> Optional[torch.dtype]:
    """The dtype of the first floating tensor of a weight file (for torch_dtype='auto')."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        names = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
        try:
            with safe_open(path, framework="pt") as f:
                for name in f.keys():
                    dtype = names.get(f.get_slice(name).get_dtype())
                    if dtype is not None:
                        return dtype
        except Exception as e:  # reported by name when the tensors are read
            raise OSError(f"cannot read safetensors file {path}: it is truncated or corrupt ({e})") from None
        return None
    return next((t.dtype for t in _read_pickle(path).values() if t.is_floating_point()), None)


_INT_BITS = {"I8": 8, "U8": 8, "I16": 16, "U16": 16, "I32": 32, "U32": 32, "I64": 64, "U64": 64}


def parameter_capacity(path: str) -> int:
    """An upper bound on the parameters a weight file holds, from its header alone: a float tensor holds
    its elements, an integer one up to a 2-bit parameter per 2 bits (packed quantized weights). A pickle
    file: its tensors' elements (memory-mapped where the file's format allows; read with weights_only, so a
    pickle holding more than tensors is refused here already)."""
    if not path.endswith(".safetensors"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - the legacy format cannot be mapped: read it (which names any fault)
            state = _read_pickle(path)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise OSError(f"{path} does not hold a state dict of tensors")
        return sum(t.numel() for t in state.values())
    from safetensors import safe_open

    total = 0
    try:
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                part = f.get_slice(name)
                n = 1
                for d in part.get_shape():
                    n *= d
                total += n * _INT_BITS.get(part.get_dtype(), 2) // 2
    except Exception as e:  # noqa: BLE001 - whatever the header's fault, the file is named
        raise OSError(f"cannot read safetensors file {path}: it is truncated or corrupt ({e})") from None
    return total


def _read_safetensors(path: str, device) -> Iterator[Tuple[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    try:
        f = safe_open(path, framework="pt", device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise OSError(f"cannot read safetensors file {path}: it is truncated or corrupt ({e})") from None
    with f:
        for name in f.keys():
            try:
                tensor = f.get_tensor(name)
            except (SafetensorError, OSError, ValueError, RuntimeError) as e:
                raise OSError(f"cannot read tensor {name!r} from safetensors file {path}: {e}") from None
            yield name, tensor


def _read_pickle(path: str) -> Dict[str, torch.Tensor]:
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise OSError(
            f"refusing to load {path}: it is a pickle holding more than tensors (weights_only=True rejected it: "
            f"{str(e).splitlines()[0]}). Convert the checkpoint to safetensors."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise OSError(f"cannot read PyTorch weight file {path}: it is truncated or corrupt ({e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OSError(f"{path} does not hold a state dict of tensors")
    return state
