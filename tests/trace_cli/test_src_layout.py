"""A src-layout project whose tests would not import its own code: cwm-trace says so before it runs, naming the
copy they would import, or that there is none (the project is not installed into the interpreter)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cwm.tracing.target import probe_python
from cwm.tracing.units import untraced_src_packages


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> tuple[str, Path]:
    """A bare venv of this interpreter (no pip: seconds), and its site-packages, where .pth files put paths."""
    where = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    (site,) = where.glob("lib/python*/site-packages")
    return str(where / "bin" / "python"), site


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "proj"
    (root / "src" / "mypkg").mkdir(parents=True)
    (root / "src" / "mypkg" / "__init__.py").write_text("def double(x):\n    return 2 * x\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_double.py").write_text("from mypkg import double\n\ndef test_double():\n"
                                                   "    assert double(2) == 4\n")
    return root


def _warnings(python: str, root: Path) -> list[str]:
    return untraced_src_packages(probe_python(python), root.resolve())


def test_not_installed(venv, project):
    python, site = venv
    (site / "cwm_test.pth").unlink(missing_ok=True)
    (warning,) = _warnings(python, project)
    assert "src/mypkg is not importable" in warning and "pip install -e" in warning


def test_another_copy_installed(venv, project, tmp_path):
    python, site = venv
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "mypkg").mkdir(parents=True)
    (elsewhere / "mypkg" / "__init__.py").write_text("def double(x):\n    return x + x\n")
    (site / "cwm_test.pth").write_text(str(elsewhere) + "\n")
    (warning,) = _warnings(python, project)
    assert str(elsewhere / "mypkg") in warning and "none of its code will be traced" in warning


def test_the_project_itself_installed(venv, project):
    python, site = venv
    (site / "cwm_test.pth").write_text(str(project / "src") + "\n")
    assert _warnings(python, project) == []


def test_not_a_src_layout(venv, tmp_path):
    root = tmp_path / "flat"
    (root / "mypkg").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("")
    assert _warnings(venv[0], root) == []
