"""Random programs full of aliasing, in-place mutation, rebinding and deletion, straight-line and in loops (where
the recorder's verdicts on lines are cached and reused): the fast recorder must write exactly what the naive one
writes (its reuse of old reprs is never stale)."""
import importlib.util
import random
import sys

import pytest

from tracer import TraceConfig, trace_call
from tracer.naive import NaiveRecorder

HELPERS = '''
class Obj:
    def __init__(self, v):
        self.v = v

class Shown:
    def __init__(self, v):
        self.v = v
    def __repr__(self):
        return "Shown(%r)" % (self.v,)

class Dying:
    def __init__(self, sink):
        self.sink = sink
    def __del__(self):
        self.sink.append("died")

def grow(x):
    if isinstance(x, list):
        x.append(len(x))
    elif isinstance(x, dict):
        x[len(x)] = 0
    elif hasattr(x, "v"):
        x.v = [x.v]
    return x
'''

NAMES = ["a", "b", "c", "d"]
VALUES = ["[1, 2]", "{'k': 1}", "Obj(1)", "Shown([0])", "(1, 'x')", "7", "'s'", "[[0], [1]]", "Dying(sink)",
          "[Obj(2)]", "{'n': [1]}", "(a, 1)", "b", "None", "[0] * 80", "list(range(90))", "{0, 1}"]


def _statement(rng):
    x, y = rng.choice(NAMES), rng.choice(NAMES)
    return rng.choice([
        f"{x} = {rng.choice(VALUES)}",
        f"{x} = {y}",
        f"grow({x})",
        f"{x}.append({y}) if isinstance({x}, list) else None",
        f"{x}[0] = {y} if isinstance({x}, list) and {x} else None",
        f"{x}.v = {y} if hasattr({x}, 'v') else None",
        f"{x}.clear() if isinstance({x}, (list, dict)) else None",
        f"del {x}",
        f"{x} = 0",
        f"{x} = [{y}, {y}]",
        "sink.append(len(sink))",
        f"t = ({x}, {y})",
        f"{x}.append(7)",
        f"{x}[-1] = {y}",
        f"{x}[1] = 5",
        f"{x}.pop()",
        f"{x}.remove(0)",
        f"{x}.extend({y})",
        f"{x}.add(3)",
        f"n = len({x}) + {x}[0]",
    ])


def _program(rng, index, loop):
    lines = [f"def prog{index}():", "    sink = []", "    a = b = c = d = None"]
    indent = "    "
    if loop:
        lines.append("    for _ in range(4):")
        indent = "        "
    for _ in range(rng.randrange(10, 30)):
        lines.append(indent + "try:")
        lines.append(indent + "    " + _statement(rng))
        lines.append(indent + "except (NameError, UnboundLocalError, TypeError, AttributeError, IndexError, KeyError, "
                     "ValueError):")
        lines.append(indent + "    pass")
    lines.append("    return sink")
    return "\n".join(lines)


@pytest.fixture(scope="module", params=[False, True], ids=["straight", "looped"])
def programs(tmp_path_factory, request):
    rng = random.Random(669)
    root = tmp_path_factory.mktemp("fuzz")
    source = HELPERS + "\n\n" + "\n\n\n".join(_program(rng, i, request.param) for i in range(25)) + "\n"
    path = root / "fuzzed.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"cwm_tracer_fuzzed_{request.param}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return root, [getattr(module, f"prog{i}") for i in range(25)]


def test_fast_equals_naive_on_random_programs(programs, compare, backend):
    root, fns = programs
    config = TraceConfig(root=str(root), backend=backend, depth=2, function_episodes=True)
    for fn in fns:
        fast = trace_call(fn, config=config)
        naive = trace_call(fn, config=config, recorder=NaiveRecorder)
        assert compare(fast) == compare(naive), fn.__name__
