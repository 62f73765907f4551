"""The target interpreter: the Python that runs the traced code (a repository's own venv, any CPython 3.9-3.13)."""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from cwm.jail import Limits, run_jailed

SUPPORTED = ((3, 9), (3, 13))
_PROBE = (
    "import sys, platform\n"
    "try:\n    import pytest; p = pytest.__version__\nexcept Exception:\n    p = '-'\n"
    "print('cwm-probe', platform.python_implementation(), '%d.%d.%d' % sys.version_info[:3], p)\n"
)


class TraceInputError(Exception):
    """A user error (bad path, bad file, wrong interpreter): the CLI prints its one line and exits non-zero."""


@dataclass(frozen=True)
class TargetPython:
    executable: str
    version: str        # "3.12.1"
    pytest: str | None  # pytest's version in that environment, None when it has none

    @property
    def backend(self) -> str:
        """The tracer backend this interpreter gets: sys.monitoring from 3.12 on."""
        return "monitoring" if tuple(map(int, self.version.split(".")[:2])) >= (3, 12) else "settrace"


def probe_python(python: str | None) -> TargetPython:
    """Check that `python` runs and is a supported CPython; runs it jailed, as it may be any file the user named."""
    if python is None:
        python = sys.executable
    found = shutil.which(python) if os.sep not in python else python
    if not found or not Path(found).is_file():
        raise TraceInputError(f"--python {python}: no such file; give the path of a CPython 3.9-3.13 interpreter")
    if not os.access(found, os.X_OK):
        raise TraceInputError(f"--python {python}: not executable; give the path of a CPython 3.9-3.13 interpreter")
    executable = os.path.abspath(found)  # keep a venv's symlink: resolving it would lose the venv
    result = run_jailed([executable, "-c", _PROBE], cwd="/",
                        limits=Limits(timeout_s=30, memory_mb=None, writable=()),
                        env={"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"})
    words = result.stdout.split()
    if result.returncode != 0 or len(words) != 4 or words[0] != "cwm-probe":
        raise TraceInputError(f"--python {python}: not a Python interpreter (running it with -c failed); "
                              "give the path of a CPython 3.9-3.13 interpreter")
    _, implementation, version, pytest_version = words
    major_minor = tuple(map(int, version.split(".")[:2]))
    if implementation != "CPython" or not SUPPORTED[0] <= major_minor <= SUPPORTED[1]:
        raise TraceInputError(f"--python {python}: {implementation} {version} is not supported; "
                              "the tracer runs on CPython 3.9-3.13")
    return TargetPython(executable, version, None if pytest_version == "-" else pytest_version)


def child_env(target: TargetPython, *, home: str, pythonpath: str | None = None) -> dict[str, str]:
    """A small, fixed environment: a temporary HOME, no bytecode written into the project, a fixed hash seed
    (set and dict-of-str reprs come out the same on every run, so a rerun reproduces its traces)."""
    bindir = os.path.dirname(target.executable)
    env = {"PATH": os.pathsep.join([bindir, os.environ.get("PATH", os.defpath)]), "HOME": home, "TMPDIR": home,
           "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env
