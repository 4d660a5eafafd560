"""What the subcommands share: the error a user can fix, the --device check, reading inputs, shortening text."""

from __future__ import annotations

import argparse
import sys
from typing import Iterable, List, Optional


class UsageError(Exception):
    """A mistake the user can fix (bad path, device, input...): `main` prints it as one line and exits with 2."""


def available_devices() -> List[str]:
    """The device names this machine can run on: cpu, then cuda:N for each GPU (and mps where there is one)."""
    import torch

    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(name: Optional[str]) -> Optional[str]:
    """`name` when this machine has that device (None stays None: the default), else a UsageError saying what it
    has. Checked before any model is loaded, so that `--device cuda` without a GPU costs nothing."""
    if name is None:
        return None
    import torch

    available = available_devices()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"--device {name!r} is not a device name; available here: {', '.join(available)}") from None
    if device.type == "cpu":
        return name
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise UsageError(f"--device {name!r}: this machine has no CUDA GPU (torch {torch.__version__}"
                             f"{'' if torch.version.cuda else ', built without CUDA'}); available here: "
                             f"{', '.join(available)}")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {name!r}: this machine has {count} CUDA GPU{'s' if count > 1 else ''}; "
                             f"available here: {', '.join(available)}")
        return name
    if device.type in available:
        return name
    raise UsageError(f"--device {name!r} is not available on this machine; available here: {', '.join(available)}")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu); `fastformers env` "
                                                       "lists the devices of this machine")


def read_lines(path: str) -> List[str]:
    """The non-blank lines of a file (`-`: stdin), stripped. Blank lines are skipped: they separate paragraphs in
    the files people paste, they are not sentences."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as e:
        raise UsageError(f"cannot read --file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"--file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def refuse_empty(texts: Iterable[str], what: str = "sentence") -> List[str]:
    """The texts, or a UsageError naming the first empty (or all-blank) one by its position."""
    texts = list(texts)
    if not texts:
        raise UsageError(f"no {what}s given")
    empty = [i + 1 for i, text in enumerate(texts) if not text.strip()]
    if empty:
        which = ", ".join(f"#{i}" for i in empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise UsageError(f"empty {what} {which} (of {len(texts)}): give text to embed")
    return texts


def shorten(text: str, width: int) -> str:
    """`text` on one line, at most `width` characters; a cut shows as a trailing '…'."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"
