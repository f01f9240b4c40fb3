"""Atomic writes, file hashes and provenance records shared by every stage."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

from mgkit import __version__
from mgkit.errors import MgkitError


def tmp_path_for(path: Path) -> Path:
    """A unique temporary name beside `path`, so the final rename stays on one file system."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path; rename it to `path` only when the block finishes without error.

    On any exception (Ctrl-C included) the temporary file is removed, so `path` never holds a
    half-written artifact and an existing file there is left untouched.
    """
    path = Path(path)
    if path.exists() and not force:
        raise MgkitError(f"{path} already exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_commit() -> str | None:
    """The mgkit source tree's git commit, when it is a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def provenance(**extra: Any) -> dict[str, Any]:
    """Version, commit, host and time: what every artifact records about how it was made."""
    return {
        "mgkit_version": __version__,
        "git_commit": git_commit(),
        "host": platform.node(),
        "python": platform.python_version(),
        "created": now_iso(),
        **extra,
    }
