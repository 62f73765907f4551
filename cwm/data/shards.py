"""WebDataset tar shards with a manifest: atomic, resumable, readable without this toolkit (DESIGN.md §3).

A shard holds samples `{key}.json`. The write order makes any crash harmless:

1. samples are appended to `{prefix}-{index:06d}.tar.tmp`;
2. when the shard is full (or the writer closes) the file is fsynced and entered, with its sha256 and the
   groups it completes, into `manifest.json` (itself replaced atomically);
3. only then is it renamed to `{prefix}-{index:06d}.tar`.

On open the manifest is the truth: a listed shard still under its temporary name is renamed (hash checked), an
unlisted temporary file is deleted — its groups never completed, so the caller redoes them. A *group* (one test,
one episode) is the unit of resume: all records of a group land in one shard, and `done_groups` tells the caller
which units need no rerun. Keys already present are never written twice.
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Iterable, Iterator

import orjson

SCHEMA = "cwm.shards/1"
MANIFEST = "manifest.json"


def record_key(obj) -> str:
    """A stable content hash of a JSON-able object: 32 hex digits, usable as a WebDataset key (no dots)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return hashlib.sha256(blob).hexdigest()[:32]


def encode_sample(record) -> bytes:
    """A record as a sample's UTF-8 JSON. orjson, several times the standard library's speed: encoding every record
    was a quarter of a `cwm-trace` parent's CPU on attrs' tests, where the parent competes with the workers for the
    cores (RESULTS.md).

    A text may hold a lone surrogate (a user `__repr__` can return one), which no UTF-8 encodes: such a text is
    written with the surrogate as its visible escape (`\\ud800`, as `repr` would show it), never dropped and never
    the end of the run (it once ended `cwm-trace` with a traceback). What orjson refuses goes that way."""
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError:
        return json.dumps(_escape_surrogates(record), ensure_ascii=False).encode()


def _escape_surrogates(value):
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_escape_surrogates(k): _escape_surrogates(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape_surrogates(v) for v in value]
    return value


class ShardWriter:
    """Appends records to rolling shards in `out_dir`; see the module docstring for the crash contract."""

    def __init__(self, out_dir: str | os.PathLike, prefix: str, *, max_samples: int = 1000,
                 max_bytes: int = 64 << 20):
        if not prefix or "." in prefix or "/" in prefix:
            raise ValueError(f"shard prefix {prefix!r}: use a plain name without dots or slashes")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self._manifest = self._recover()
        self.done_groups: set[str] = {g for s in self._manifest["shards"] for g in s.get("groups", [])}
        self.done_keys: set[str] = set()
        for entry in self._manifest["shards"]:
            self.done_keys.update(_tar_keys(self.out_dir / entry["name"]))
        self._next_index = self._first_free_index()
        self._tmp_path: Path | None = None
        self._file = None
        self._tar = None  # a tarfile.TarFile while a shard is open
        self._samples = 0
        self._groups: list[str] = []
        self.bytes_written = 0     # JSON bytes of the records this writer wrote

    # -- recovery ---------------------------------------------------------------------------------------------
    def _recover(self) -> dict:
        path = self.out_dir / MANIFEST
        manifest = json.loads(path.read_text()) if path.exists() else {"schema": SCHEMA, "shards": []}
        kept = []
        for entry in manifest["shards"]:
            final = self.out_dir / entry["name"]
            tmp = final.with_name(final.name + ".tmp")
            if not final.exists() and tmp.exists() and _sha256(tmp) == entry["sha256"]:
                os.replace(tmp, final)
            if final.exists():
                kept.append(entry)
        if len(kept) != len(manifest["shards"]):
            manifest["shards"] = kept
            self._write_manifest(manifest)
        listed = {e["name"] + ".tmp" for e in kept}
        for tmp in self.out_dir.glob(f"{self.prefix}-*.tar.tmp"):
            if tmp.name not in listed:
                tmp.unlink()
        return manifest

    def _first_free_index(self) -> int:
        used = [int(p.name[len(self.prefix) + 1:-4]) for p in self.out_dir.glob(f"{self.prefix}-[0-9]*.tar")
                if p.name[len(self.prefix) + 1:-4].isdigit()]
        return max(used, default=-1) + 1

    # -- writing ----------------------------------------------------------------------------------------------
    def add(self, records: Iterable[tuple[str, dict]], group: str | None = None) -> int:
        """Write the records whose key is new, all in the current shard; returns how many were written."""
        encoded = []
        for key, record in records:
            if "." in key or "/" in key or not key:
                raise ValueError(f"record key {key!r}: keys must be non-empty, without dots or slashes")
            if key in self.done_keys:
                continue
            encoded.append((key, encode_sample(record)))
        size = sum(len(blob) + 1024 for _, blob in encoded)
        if self._tar is not None and self._samples and (
                self._samples + len(encoded) > self.max_samples or self._file.tell() + size > self.max_bytes):
            self._finish_shard()
        if self._tar is None and (encoded or group is not None):
            self._start_shard()
        for key, blob in encoded:
            # What webdataset's TarWriter writes, without importing it (it imports torch: seconds per run). No
            # time stamp (mtime 0): the same records make byte-identical shards.
            info = tarfile.TarInfo(f"{key}.json")
            info.size, info.mtime, info.mode = len(blob), 0, 0o444
            self._tar.addfile(info, io.BytesIO(blob))
            self.done_keys.add(key)
        self._samples += len(encoded)
        if group is not None:
            self._groups.append(group)
        self.bytes_written += sum(len(blob) for _, blob in encoded)
        return len(encoded)

    def _start_shard(self) -> None:
        name = f"{self.prefix}-{self._next_index:06d}.tar"
        self._next_index += 1
        self._tmp_path = self.out_dir / (name + ".tmp")
        self._file = open(self._tmp_path, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        self._samples = 0
        self._groups = []

    def _finish_shard(self) -> None:
        self._tar.close()  # ends the tar stream; the file object stays ours (tarfile closes only files it opened)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._tmp_path.with_name(self._tmp_path.name[:-4])
        entry = {"name": final.name, "samples": self._samples, "bytes": self._tmp_path.stat().st_size,
                 "sha256": _sha256(self._tmp_path), "groups": self._groups}
        self._manifest["shards"].append(entry)
        self._write_manifest(self._manifest)
        os.replace(self._tmp_path, final)
        self.done_groups.update(self._groups)
        self._tar = self._file = self._tmp_path = None

    def _write_manifest(self, manifest: dict) -> None:
        tmp = self.out_dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, self.out_dir / MANIFEST)

    def close(self) -> None:
        """Finish the open shard (it holds only whole groups, so it is complete)."""
        if self._tar is not None:
            self._finish_shard()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- reading --------------------------------------------------------------------------------------------------
def shard_paths(source: str | os.PathLike | list) -> list[Path]:
    """Complete shard files named by a directory (its manifest), a .tar, a glob, or a list of those."""
    if isinstance(source, (list, tuple)):
        return [p for s in source for p in shard_paths(s)]
    path = Path(source)
    if path.is_dir():
        manifest = path / MANIFEST
        if manifest.exists():
            return [path / e["name"] for e in json.loads(manifest.read_text())["shards"]]
        return sorted(path.glob("*.tar"))
    if path.is_file():
        return [path]
    matches = sorted(Path(p) for p in glob.glob(str(source)))
    if not matches:
        raise FileNotFoundError(f"{source}: no shards there (expected a shard directory, a .tar file or a glob)")
    return [p for m in matches for p in shard_paths(m)]


def iter_records(source: str | os.PathLike | list) -> Iterator[dict]:
    """Every record in the shards named by `source`, in shard order."""
    for path in shard_paths(source):
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".json"):
                    yield json.load(tar.extractfile(member))


def _tar_keys(path: Path) -> list[str]:
    with tarfile.open(path, "r:") as tar:
        return [m.name.split(".", 1)[0] for m in tar if m.isfile()]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
