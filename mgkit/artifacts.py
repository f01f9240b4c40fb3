"""Atomic writes, file hashes and provenance records shared by every stage."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

from mgkit import __version__
from mgkit.errors import MgkitError, UsageError


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", platform.node() or "host")[:40]
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (Linux), else by a locked swap."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:
        old = os.umask(0o077)
        os.umask(old)
    return old


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{_HOST}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # someone else's process, or not a pid
        return True
    return True


def remove_stale_tmp(path: Path) -> list[Path]:
    """Delete temporary siblings of `path` left by writers of this host that no longer run (SIGKILL, OOM).

    Temporary names are `.{name}.{host}.{pid}.{random}.tmp`; a file whose writer's PID is alive, or that
    was written on another host (a shared folder on a cluster), is left alone.
    """
    prefix = _tmp_prefix(path)
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid, _, rest = name[len(prefix):-len(".tmp")].partition(".")
        if not pid.isdigit() or not rest or "." in rest or _pid_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _folder_error(folder: Path, e: OSError) -> MgkitError:
    reason = e.strerror or type(e).__name__
    return MgkitError(f"cannot write in {folder}: {reason.lower()}")


def tmp_path_for(path: Path) -> Path:
    """A unique temporary name beside `path` (so the final rename stays on one file system).

    The name carries this host and PID, so a later writer can tell a dead writer's leftovers; the
    file gets the mode the umask allows (mkstemp alone would make it 0600).
    """
    try:
        fd, name = tempfile.mkstemp(prefix=f"{_tmp_prefix(path)}{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _folder_error(path.parent, e) from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    return Path(name)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_output(out: str | Path, *, flag: str = "--out", inputs: Iterable[str | Path | None] = (),
                 force: bool = True, folder: bool = False) -> Path:
    """Refuse an output path that cannot be written, before any work is done.

    Refused: a path that is (or resolves to) one of the command's `inputs`, or an existing file inside an
    input folder (writing there would destroy an input or a file the command reads); a folder where a
    file is wanted (or a file where a run folder is wanted, `folder=True`); an existing file without
    `force`; a parent that is a file; a parent folder that cannot be written.
    """
    out = Path(out)
    for source in inputs:
        if source is None:
            continue
        source = Path(source)
        # an input folder may take new outputs (tables beside the records), not replace a file it holds
        if source.is_dir():
            if out.is_file() and _inside(out, source):
                raise UsageError(f"{flag} {out} is a file inside {source}, an input of this command; writing "
                                 f"it would destroy what the command reads (choose another {flag})")
        elif _same_file(out, source):
            raise UsageError(f"{flag} {out} is also an input of this command; writing it would destroy that "
                             f"input (choose another {flag})")
    if folder:
        if out.exists() and not out.is_dir():
            raise UsageError(f"{flag} {out} is a file; a folder is needed (choose another {flag})")
    elif out.is_dir():
        raise UsageError(f"{flag} {out} is a directory; give the path of the file to write")
    if not folder and out.exists() and not force:
        raise MgkitError(f"{out} already exists; pass --force to overwrite it")
    parent = next((p for p in (out.parent, *out.parent.parents) if p.exists()), Path("."))
    if not parent.is_dir():
        raise UsageError(f"{flag} {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MgkitError(f"cannot write in {parent}: permission denied (choose another {flag})")
    return out


@contextlib.contextmanager
def atomic_path(path: str | Path, *, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path; rename it to `path` only when the block finishes without error.

    On any exception (Ctrl-C included) the temporary file is removed, so `path` never holds a
    half-written artifact and an existing file there is left untouched. Temporary files of earlier
    writers of `path` that were killed (SIGKILL leaves no chance to clean up) are removed first.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name")
    if path.exists() and not force:
        raise MgkitError(f"{path} already exists; pass --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{path.parent} is a file, not a folder") from None
    except OSError as e:
        if isinstance(e, NotADirectoryError):
            raise UsageError(f"{path.parent}: a part of this path is a file, not a folder") from None
        raise _folder_error(path.parent, e) from None
    remove_stale_tmp(path)
    tmp = tmp_path_for(path)
    mode = 0o666 & ~current_umask()
    try:
        yield tmp
        if tmp.exists():  # the writer may have replaced the file: keep the umask's mode
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


FIGURE_FORMATS = ("png", "pdf")


def save_figure(fig: Any, path: str | Path, *, dpi: float | None = None) -> Path:
    """Write a matplotlib figure as PNG or PDF (by the suffix) atomically: a failed write leaves no
    file. `dpi` defaults to the figure's own."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise UsageError(f"--out {path}: the figure is written as .png or .pdf, not {path.suffix or 'no suffix'}.")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=fig.dpi if dpi is None else dpi)
    return path


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
