"""Where checkpoint files come from: a local folder, or a Hugging Face hub repository.

Hub access goes through ``huggingface_hub`` (imported lazily), which honours ``HF_HUB_OFFLINE``,
``HF_HOME``, ``cache_dir`` and ``local_files_only`` exactly as transformers does.
"""

from __future__ import annotations

import os
from typing import Optional


def no_duplicate_keys(pairs: list) -> dict:
    """`json.load(..., object_pairs_hook=no_duplicate_keys)`: a JSON object naming a key twice is refused (plain
    json keeps the last silently, so two readers of one file could disagree on what it says)."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice in one JSON object")
        seen.add(key)
    return dict(pairs)


def refuse_remote_code(trust_remote_code: bool) -> None:
    if trust_remote_code:
        raise ValueError(
            "trust_remote_code=True is not supported: fastformers never executes code shipped with a "
            "checkpoint. Use a model whose architecture fastformers implements."
        )


def _looks_like_repo_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def resolve_file(
    name_or_path: str | os.PathLike,
    filename: str,
    *,
    revision: Optional[str] = None,
    cache_dir: Optional[str | os.PathLike] = None,
    local_files_only: bool = False,
    token: Optional[str] = None,
    required: bool = True,
) -> Optional[str]:
    """Return a local path to ``filename`` of a checkpoint folder or hub repository.

    With ``required=False`` a file the checkpoint does not have gives ``None``; a checkpoint that
    cannot be found at all (no such folder, no such repository, offline without a cached copy)
    always raises ``OSError`` naming it.
    """
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        path = os.path.join(name, filename)
        if os.path.isfile(path):
            return path
        if required:
            raise OSError(f"{name!r} has no file named {filename!r} (looked for {path})")
        return None
    if not _looks_like_repo_id(name) or os.path.exists(name):
        raise OSError(
            f"{name!r} is neither a folder holding a checkpoint nor a hub repository id "
            f"(like 'sentence-transformers/all-MiniLM-L6-v2')"
        )
    return _hub_download(name, filename, revision=revision, cache_dir=cache_dir,
                         local_files_only=local_files_only, token=token, required=required)


def _hub_download(repo_id, filename, *, revision, cache_dir, local_files_only, token, required):
    import huggingface_hub
    from huggingface_hub import errors

    offline = local_files_only or os.environ.get("HF_HUB_OFFLINE", "0").upper() in {"1", "ON", "YES", "TRUE"}
    try:
        return huggingface_hub.hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=cache_dir,
            local_files_only=offline, token=token,
        )
    except errors.RepositoryNotFoundError:
        raise OSError(f"{repo_id!r} is not a local folder and no hub repository of that name was found") from None
    except errors.RevisionNotFoundError:
        raise OSError(f"hub repository {repo_id!r} has no revision {revision!r}") from None
    except errors.LocalEntryNotFoundError:
        # Offline (or no connection) and not in the cache. When the repo itself is cached but this
        # optional file is not, treat it as absent rather than failing.
        if not required and _cached_repo_has_snapshot(repo_id, revision, cache_dir):
            return None
        where = "offline mode (HF_HUB_OFFLINE or local_files_only)" if offline else "no connection to the hub"
        raise OSError(
            f"cannot load {filename!r} of {repo_id!r}: {where} and it is not in the local cache. "
            f"Pass a local folder, or download it first."
        ) from None
    except errors.EntryNotFoundError:
        if required:
            raise OSError(f"hub repository {repo_id!r} has no file named {filename!r}") from None
        return None


def _cached_repo_has_snapshot(repo_id, revision, cache_dir) -> bool:
    """Whether the hub cache holds any snapshot of the repository (then a missing file is absent)."""
    from huggingface_hub import constants

    root = os.path.join(os.fspath(cache_dir or constants.HF_HUB_CACHE), "models--" + repo_id.replace("/", "--"))
    return os.path.isdir(os.path.join(root, "snapshots")) and bool(os.listdir(os.path.join(root, "snapshots")))
