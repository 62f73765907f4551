"""Helpers for the cwm-trace tests: the CLI, an untraced pytest oracle, shard and run-log readers."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHOP = REPO / "examples" / "shop"
HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "cwm.trace_cli"]


def fast_python() -> str:
    """The interpreter the traced projects run on: a test venv with only pytest (a child starts in ~0.5 s,
    against ~2 s for .venv with its pytest plugins), else this one. It also exercises --python."""
    for version in ("3.12.1", "3.13.0"):
        python = REPO / f".venv-py{version}" / "bin" / "python"
        if python.exists():
            return str(python)
    return sys.executable


def cli(*args) -> subprocess.CompletedProcess:
    """`cwm-trace ARGS` in this process (a fresh interpreter costs seconds of imports on a busy machine);
    the SIGKILL test runs `CLI` as a subprocess, to kill it."""
    from cwm.trace_cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def untraced_outcomes(python: str, root: Path, nodeids: list[str] | None = None) -> dict[str, str]:
    """The oracle: each test's outcome in a plain `python -m pytest` run in the project, no tracer anywhere.
    It runs in a copy, so whatever the project's plugins write (.benchmarks, caches) stays out of the repo."""
    with tempfile.TemporaryDirectory() as tmp:
        copy, out = Path(tmp) / root.name, Path(tmp) / "outcomes.json"
        shutil.copytree(root, copy)
        env = {**os.environ, "PYTHONPATH": str(HERE), "CWM_OUTCOMES": str(out), "PYTHONDONTWRITEBYTECODE": "1"}
        subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "outcome_plugin",
                        "--rootdir", str(copy), *(nodeids or [])], cwd=copy, env=env, capture_output=True,
                       timeout=240)
        return json.loads(out.read_text())


def unit_statuses(out_dir: Path) -> dict[str, str]:
    """group -> status from the run log."""
    from cwm.tracing.run import RUN_LOG, logged_statuses

    return logged_statuses(out_dir / RUN_LOG)


def shard_files(out_dir: Path) -> list[Path]:
    manifest = json.loads((out_dir / "manifest.json").read_text())
    return [out_dir / entry["name"] for entry in manifest["shards"]]


def shard_samples(out_dir: Path) -> list[tuple[str, dict]]:
    """(key, record) of every sample, read with tarfile alone (duplicates kept, so tests can look for them)."""
    samples = []
    for path in shard_files(out_dir):
        with tarfile.open(path) as tar:
            for member in tar:
                samples.append((member.name.split(".", 1)[0], json.load(tar.extractfile(member))))
    return samples


def records_by_group(out_dir: Path) -> dict[str, list[dict]]:
    """Records of each unit; a unit's records are the ones whose origin came from its job (keyed by the log)."""
    groups: dict[str, list[dict]] = {}
    log = [json.loads(line) for line in (out_dir / "units.jsonl").read_text().splitlines()]
    samples = dict(shard_samples(out_dir))
    from cwm.tracing.run import sample_key
    for entry in log:
        groups[entry["group"]] = [samples[k] for k in (sample_key(entry["group"], i) for i in range(entry["traces"]))
                                  if k in samples]
    return groups
