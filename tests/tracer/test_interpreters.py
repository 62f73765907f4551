"""One trace per program across interpreters: the comprehension corpus (list/set/dict comprehensions, generator
expressions, nested and multi-line comprehensions, a comprehension that raises, lambdas made in one) gives the same
records on Python 3.11, 3.12 and 3.13, with both backends where the interpreter has sys.monitoring. Each interpreter
runs tests/tracer/comprehensions.py in a process of its own; the interpreters are the pyenv versions the Makefile's
test-tracer-versions uses (PYENV_ROOT, else ~/.pyenv) and this one."""
import glob
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def _interpreters():
    """{"3.11": path, ...}: this interpreter and the newest pyenv patch release of each of 3.11, 3.12, 3.13."""
    found = {"%d.%d" % sys.version_info[:2]: sys.executable}
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for minor in ("3.11", "3.12", "3.13"):
        if minor in found:
            continue
        for path in sorted(glob.glob(os.path.join(root, "versions", minor + ".*", "bin", "python3")), reverse=True):
            if os.access(path, os.X_OK):
                found[minor] = path
                break
    return found


def _records(python, backend, native=False):
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONHASHSEED="0")
    proc = subprocess.run([python, os.path.join(HERE, "comprehensions.py"), backend] + (["native"] if native else []),
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)["records"]


def _runs(native=False):
    runs = {}
    for minor, python in sorted(_interpreters().items()):
        backends = ["settrace"] + (["monitoring"] if minor >= "3.12" else [])
        for backend in backends:
            runs[f"{minor}/{backend}"] = _records(python, backend, native)
    return runs


def test_same_records_on_every_interpreter_and_backend():
    found = _interpreters()
    missing = sorted({"3.11", "3.12", "3.13"} - set(found))
    if len(found) < 2:
        pytest.skip(f"only Python {', '.join(found)} here (no pyenv 3.11-3.13 under PYENV_ROOT): "
                    "nothing to compare across interpreters")
    runs = _runs()
    names = list(runs)
    reference = runs[names[0]]
    assert len(reference) == 10 and all(reference.values())
    for name in names[1:]:
        for program in reference:
            assert runs[name][program] == reference[program], f"{program}: {name} differs from {names[0]}"
    if missing:
        print(f"not compared (not installed): Python {', '.join(missing)}")


def test_native_comprehensions_differ_across_interpreters():
    """The check has teeth: as each interpreter runs them, comprehensions give different frames on 3.11 and 3.12+
    (and multi-line ones on 3.12 and 3.13)."""
    found = _interpreters()
    if "3.11" not in found or "3.12" not in found:
        pytest.skip("needs Python 3.11 and 3.12 (pyenv) to compare")
    old, new = _records(found["3.11"], "settrace", native=True), _records(found["3.12"], "settrace", native=True)
    differ = [program for program in old if old[program] != new[program]]
    assert len(differ) >= 8, differ


def _comprehension_programs():
    import importlib.util
    spec = importlib.util.spec_from_file_location("cwm_tracer_test_comprehensions", os.path.join(HERE, "comprehensions.py"))
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module.PROGRAMS


@pytest.mark.parametrize("name", sorted(_comprehension_programs()))
def test_canonical_form_fast_equals_naive(name, backend, compare):
    """The canonical form skips snapshots inside a statement: the change detector must still show what the naive
    recorder (every local repr'd afresh) shows."""
    from tracer import TraceConfig, trace_call
    from tracer.naive import NaiveRecorder

    fn, arg = _comprehension_programs()[name]
    config = TraceConfig(root=HERE, backend=backend, depth=2, function_episodes=True)
    fast, naive = trace_call(fn, arg, config=config), trace_call(fn, arg, config=config, recorder=NaiveRecorder)
    assert fast and compare(fast) == compare(naive)
