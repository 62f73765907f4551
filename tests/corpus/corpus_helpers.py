"""Helpers for the corpus tests: tiny repositories, the CLI in this process, run-log and shard readers."""
from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path


def tiny_repo(root: Path, index: int, *, sleep_s: float = 1.0) -> Path:
    """A package with four tests, one of them slow enough that a unit can be caught running."""
    (root / f"pkg{index}").mkdir(parents=True, exist_ok=True)
    (root / f"pkg{index}" / "__init__.py").write_text(
        f"OFFSET = {index}\n\n\ndef shift(xs):\n    out = []\n    for x in xs:\n        out.append(x + OFFSET)\n"
        "    return out\n\n\ndef total(xs):\n    s = 0\n    for x in shift(xs):\n        s += x\n    return s\n")
    (root / "tests").mkdir(exist_ok=True)
    (root / "tests" / "test_pkg.py").write_text(
        f"import time\nfrom pkg{index} import shift, total\n\n\n"
        f"def test_shift():\n    assert shift([1, 2]) == [1 + {index}, 2 + {index}]\n\n\n"
        f"def test_total():\n    assert total([1, 2, 3]) == 6 + 3 * {index}\n\n\n"
        f"def test_slow():\n    time.sleep({sleep_s})\n    assert total([]) == 0\n\n\n"
        f"def test_empty():\n    assert shift([]) == []\n")
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "pkg{index}"\nversion = "0.1"\n\n[build-system]\nrequires = ["setuptools"]\n'
        f'build-backend = "setuptools.build_meta"\n\n[tool.setuptools]\npackages = ["pkg{index}"]\n')
    return root


def cli(*args) -> subprocess.CompletedProcess:
    from cwm.trace_cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def rows(out: Path) -> dict[str, dict]:
    from cwm.corpus import RUN_LOG, done_rows
    return done_rows(out / RUN_LOG)


def all_keys(out: Path) -> list[str]:
    """Every sample key in the shards the merged manifest lists (duplicates kept, so tests can look for them)."""
    import tarfile

    from cwm.data.shards import shard_paths
    keys = []
    for path in shard_paths(out):
        with tarfile.open(path) as tar:
            keys += [m.name.split(".", 1)[0] for m in tar if m.isfile()]
    return keys
