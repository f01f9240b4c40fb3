"""ImageNet weights: where each model's file comes from, and fetching it into the torch hub cache.

Files live in `torch.hub.get_dir()/checkpoints/` (`$TORCH_HOME/hub/checkpoints`), as torchvision and the
bcos package keep them, so one download serves every tool. A missing file is downloaded on first use,
with a connect timeout, progress (rich bar on a terminal, log lines otherwise) and, where the source
publishes a hash (torch hub file names `name-<sha256 prefix>.ext`), a hash check; offline it fails in one
line naming the URL and the cache path. `mgkit weights download` fetches ahead of time (compute nodes of
a cluster often have no internet; login nodes do).

Sources, as the reference implementation (paper spec §4) uses them:
* torchvision ResNets: torchvision's weights API, `ResNet50_Weights.IMAGENET1K_V1` etc.;
* B-cos ResNet-50: the reference's `resnet_50-f46c1a4159.pth` (its `weights/download.sh`; the bcos
  package's own release has a later file, `resnet_50-ead259efe4.pth`); B-cos ResNet-18: the bcos package;
* X-DNN ResNet-50: `xfixup_resnet50_model_best.pth.tar` of "Fast Axiomatic Attribution" (Hesse et al.),
  from the reference's `weights/download.sh`; no hash is published.
"""

from __future__ import annotations

import hashlib
import math
import re
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mgkit.artifacts import atomic_path, file_sha256
from mgkit.errors import MgkitError, UsageError
from mgkit.progress import Reporter, log

__all__ = ["CONNECT_TIMEOUT", "WEIGHTS", "WeightsFile", "cache_dir", "describe", "download", "download_many",
           "ensure", "entry_for", "record"]

CONNECT_TIMEOUT = 15.0
"""Seconds to wait for a connection (and for each read): an unreachable host fails instead of hanging."""

_CHUNK = 1 << 20  # one progress step per MiB
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")  # torch hub's convention: name-<sha256 prefix>.ext


@dataclass(frozen=True)
class WeightsFile:
    """One downloadable ImageNet weights file of a registered model."""

    model: str
    url: Callable[[], str] | str  # a callable when finding it needs a slow import (torchvision enums)
    filename: str
    hash_prefix: str | None  # sha256 prefix the file must have; None where the source publishes none
    source: str  # who publishes it, for `mgkit weights list`

    def resolved_url(self) -> str:
        return self.url() if callable(self.url) else self.url


def _torchvision_url(enum: str) -> Callable[[], str]:
    def url() -> str:
        import torchvision

        return getattr(torchvision.models, enum).IMAGENET1K_V1.url

    return url


def _hash_of(filename: str) -> str | None:
    m = _HASH_IN_NAME.search(filename)
    return m.group(1) if m else None


def _entry(model: str, url: Callable[[], str] | str, filename: str, source: str, hashed: bool = True
           ) -> WeightsFile:
    return WeightsFile(model, url, filename, _hash_of(filename) if hashed else None, source)


_BCOS_RELEASE = "https://github.com/B-cos/B-cos-v2/releases/download/v0.0.1-weights"
WEIGHTS: dict[str, WeightsFile] = {w.model: w for w in (
    _entry("resnet18", _torchvision_url("ResNet18_Weights"), "resnet18-f37072fd.pth",
           "torchvision ResNet18_Weights.IMAGENET1K_V1"),
    _entry("resnet50", _torchvision_url("ResNet50_Weights"), "resnet50-0676ba61.pth",
           "torchvision ResNet50_Weights.IMAGENET1K_V1"),
    _entry("bcos-resnet18", f"{_BCOS_RELEASE}/resnet_18-68b4160fff.pth", "resnet_18-68b4160fff.pth",
           "bcos package, bcos_final resnet_18"),
    _entry("bcos-resnet50", "https://nextcloud.mpi-klsb.mpg.de/index.php/s/3Yk6p86SBBFYSBN/download",
           "resnet_50-f46c1a4159.pth", "reference weights/download.sh (B-cos bcos_final resnet_50)"),
    _entry("xdnn-resnet50", "https://download.visinf.tu-darmstadt.de/data/2021-neurips-fast-axiomatic-attribution/"
                            "models/xfixup_resnet50_model_best.pth.tar",
           "xfixup_resnet50_model_best.pth.tar", "reference weights/download.sh (Hesse et al., NeurIPS 2021)",
           hashed=False),
)}
"""ImageNet weights by model name; a registered model missing here (xdnn-resnet18) has none."""


def cache_dir() -> Path:
    """Where weights live: the torch hub cache's checkpoints folder (follows TORCH_HOME)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def entry_for(model: str) -> WeightsFile:
    """The weights file of `model`; MgkitError when it has none."""
    entry = WEIGHTS.get(model)
    if entry is None:
        raise MgkitError(f"no ImageNet weights exist for {model}; pass --weights PATH or train from scratch.")
    return entry


def _check_hash(path: Path, digest: str, entry: WeightsFile, url: str) -> None:
    if entry.hash_prefix and not digest.startswith(entry.hash_prefix):
        raise MgkitError(f"{url} gave a file whose sha256 {digest[:12]}... does not start with {entry.hash_prefix} "
                         f"(the hash in its name); nothing was written to {path}.")


def download(model: str, *, quiet: bool = False, timeout: float = CONNECT_TIMEOUT) -> Path:
    """Download `model`'s weights into the cache (atomically: a failed download leaves no file)."""
    entry = entry_for(model)
    path = cache_dir() / entry.filename
    url = entry.resolved_url()
    offline = (f"cannot download ImageNet weights for {model} from {url} ({{why}}); fetch them where there is "
               f"internet (`mgkit weights download {model}`) to {path}, or pass --weights PATH.")
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "mgkit"}),
                                          timeout=timeout)
    except urllib.error.HTTPError as e:
        raise MgkitError(offline.format(why=f"HTTP {e.code}")) from None
    except (urllib.error.URLError, socket.timeout, OSError) as e:
        reason = getattr(e, "reason", e)
        raise MgkitError(offline.format(why=str(reason) or type(reason).__name__)) from None
    sha = hashlib.sha256()
    size = int(response.headers.get("Content-Length") or 0) or None
    total = math.ceil(size / _CHUNK) if size else None
    log(f"downloading {url} to {path}", quiet=quiet)
    with response, atomic_path(path) as tmp, open(tmp, "wb") as out, Reporter(quiet=quiet) as rep:
        chunks = iter(lambda: response.read(_CHUNK), b"")
        try:
            for block in rep.track(chunks, total, f"{entry.filename} (MiB)"):
                sha.update(block)
                out.write(block)
        except (socket.timeout, OSError) as e:
            raise MgkitError(offline.format(why=f"the transfer broke off: {e}")) from None
        out.flush()
        _check_hash(path, sha.hexdigest(), entry, url)
    log(f"saved {path} (sha256 {sha.hexdigest()[:16]}...)", quiet=quiet)
    return path


def ensure(model: str, *, quiet: bool = False, timeout: float = CONNECT_TIMEOUT) -> Path:
    """The cached weights file of `model`, downloaded first when it is missing."""
    path = cache_dir() / entry_for(model).filename
    if path.is_file():
        return path
    return download(model, quiet=quiet, timeout=timeout)


def record(path: str | Path) -> dict[str, Any]:
    """What provenance keeps about a starting-weights file: its path and sha256."""
    return {"file": str(path), "sha256": file_sha256(path)}


def describe(models: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per weights file: model, file, source, URL, expected hash prefix, whether it is cached."""
    names = list(WEIGHTS) if not models else models
    unknown = [n for n in names if n not in WEIGHTS]
    if unknown:
        raise UsageError(f"no ImageNet weights are known for {', '.join(unknown)}; choose from {', '.join(WEIGHTS)}")
    out = []
    for name in names:
        e = WEIGHTS[name]
        path = cache_dir() / e.filename
        out.append({"model": name, "file": e.filename, "source": e.source, "url": e.resolved_url(),
                    "hash_prefix": e.hash_prefix, "path": str(path), "cached": path.is_file(),
                    "bytes": path.stat().st_size if path.is_file() else None})
    return out


def download_many(models: list[str], *, everything: bool = False, force: bool = False, quiet: bool = False,
                  timeout: float = CONNECT_TIMEOUT) -> list[dict[str, Any]]:
    """`mgkit weights download`: fetch the named files (or all), skipping cached ones unless `force`."""
    if everything and models:
        raise UsageError("pass model names or --all, not both")
    if not everything and not models:
        raise UsageError(f"name the weights to download ({', '.join(WEIGHTS)}) or pass --all")
    rows = describe(list(WEIGHTS) if everything else models)
    for row in rows:
        if row["cached"] and not force:
            log(f"{row['model']}: {row['path']} is already there", quiet=quiet)
            continue
        path = download(row["model"], quiet=quiet, timeout=timeout)
        row.update(cached=True, bytes=path.stat().st_size)
    return rows
