"""Fetch a pinned source distribution from the package registry (for tests and demos on real codebases).

pip does the download (it knows the registry and any mirror configured on the machine); we pin the version,
check the sha256 ourselves and cache the extracted tree, so a second call costs nothing and needs no network.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# The real code base the tracer's tests and benchmarks run: toolz, pure Python, its own test suite in the sdist.
TOOLZ = ("toolz", "1.0.0", "2c86e3d9a04798ac556793bced838816296a2f085017664e4995cb40a1047a02")

DEFAULT_CACHE = Path(os.environ.get("CWM_CACHE", Path.home() / ".cache" / "cwm-toolkit")) / "sdists"


class SdistHashMismatch(ValueError):
    """The downloaded archive does not hash to the pinned sha256."""


class RegistryUnreachable(RuntimeError):
    """The package registry could not be reached (tests skip with this as their reason)."""


def fetch_sdist(name: str, version: str, sha256: str | None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The extracted source tree of `name==version`, whose archive must hash to `sha256` (None: any archive pip
    gets for that version; the one used is named in `.complete`)."""
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    target = cache / f"{name}-{version}-{sha256[:12] if sha256 else 'unpinned'}"
    if (target / ".complete").exists():
        return _source_root(target)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--disable-pip-version-check", "-q", "-d", tmp, f"{name}=={version}"],
            capture_output=True, text=True, timeout=300)
        archives = [p for p in Path(tmp).iterdir() if p.name.endswith((".tar.gz", ".zip", ".tgz"))]
        if proc.returncode != 0 or not archives:
            raise RegistryUnreachable(f"pip could not download {name}=={version}: {proc.stderr.strip()[-300:]}")
        archive = archives[0]
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if sha256 is not None and digest != sha256:
            raise SdistHashMismatch(f"{archive.name}: sha256 {digest} does not match the pinned {sha256}")
        extracted = Path(tmp) / "src"
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(extracted)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(extracted, filter="data")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(extracted, target)
        (target / ".complete").write_text(archive.name)
    return _source_root(target)


def _source_root(target: Path) -> Path:
    """An sdist unpacks to one top-level folder `name-version/`: return it."""
    entries = [p for p in target.iterdir() if p.name != ".complete"]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else target
