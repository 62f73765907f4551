"""Shared fixtures of the tracer tests. Standard library, pytest and `tracer` only: these tests also run under
bare Python 3.12/3.13 venvs (make test-tracer-versions)."""
import importlib.util
import re
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
BACKENDS = ["settrace"] + (["monitoring"] if sys.version_info >= (3, 12) else [])


def _load(name):
    spec = importlib.util.spec_from_file_location(f"cwm_tracer_test_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pytest_generate_tests(metafunc):
    """Every test with a `backend` argument runs once per backend this interpreter has."""
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS)


@pytest.fixture(scope="session")
def here():
    return HERE


@pytest.fixture(scope="session")
def corpus():
    return _load("corpus")


def comparable(records):
    """Records with what legitimately differs between two runs removed: wall time and memory addresses."""
    out = []
    for r in records:
        r = dict(r, stats={k: v for k, v in r["stats"].items() if k != "wall_s"})
        r.pop("backend", None)
        out.append(ADDRESS.sub("0x?", repr(r)))
    return out


@pytest.fixture(scope="session")
def compare():
    return comparable
