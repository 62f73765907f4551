"""Mutation operators, checked by running the mutated code (the interpreter is the oracle), and the seeded order."""
from __future__ import annotations

import difflib
import textwrap

import pytest

from cwm.forager import mutate
from cwm.forager.tasks import ordered_candidates

SOURCE = textwrap.dedent('''\
    """Module doc."""
    import math
    from functools import reduce


    def area(w, h):
        """Rectangle area."""
        return w * h


    def total(xs, start=0):
        acc = start  # running sum
        for x in xs:
            acc += x
        return acc


    def between(x, lo, hi):
        return lo <= x and x < hi


    def norm(a, b):
        return math.sqrt(pow(a, 2) + pow(b, 2))


    def product(xs):
        return reduce(lambda p, q: p * q, xs, 1)


    def diff(a, b):
        d = a - b
        return d
    ''')

CALLS = [("area", (3, 4)), ("total", ([1, 2, 3], 10)), ("between", (2, 1, 3)), ("between", (3, 1, 3)),
         ("norm", (3, 4)), ("product", ([2, 3, 4],)), ("diff", (7, 2))]


def _results(source: str) -> list:
    ns: dict = {}
    try:
        exec(compile(source, "m.py", "exec"), ns)
    except Exception as exc:  # noqa: BLE001 - a mutation may break the import
        return [type(exc).__name__] * len(CALLS)
    out = []
    for name, args in CALLS:
        try:
            out.append(ns[name](*args))
        except Exception as exc:  # noqa: BLE001
            out.append(type(exc).__name__)
    return out


def _changed(old: str, new: str) -> list[str]:
    return [line for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_every_operator_has_candidates_that_compile_and_keep_the_rest_of_the_file():
    cands = mutate.candidates("m.py", SOURCE)
    assert {m.operator for m in cands} == set(mutate.OPERATORS)
    for m in cands:
        compile(m.source, "m.py", "exec")
        changed = _changed(SOURCE, m.source)
        assert changed, m
        removed = [line for line in changed if line.startswith("-")]
        # a mutation touches only its own statement's lines (plus an inserted `pass`), comments elsewhere survive
        assert len(removed) <= 4 or m.operator == "remove_body", (m.operator, changed)
        assert "# running sum" in m.source or m.function == "total"
        assert SOURCE.splitlines()[m.line - 1].strip() in "\n".join(removed) or m.operator == "remove_body"


def test_most_mutations_change_behaviour():
    """The interpreter decides: most candidates compute something different (equivalent ones are what the
    test-based validation in tasks.py filters out)."""
    base = _results(SOURCE)
    cands = mutate.candidates("m.py", SOURCE)
    changed = [m for m in cands if _results(m.source) != base]
    assert len(changed) >= 0.7 * len(cands)
    by_op = {m.operator for m in changed}
    assert by_op == set(mutate.OPERATORS)


@pytest.mark.parametrize("operator, function, before, after", [
    ("replace_operator", "area", "return w * h", "return w + h"),
    ("swap_variables", "diff", "d = a - b", "d = b - a"),
    ("remove_return", "diff", "return d", "d"),
    ("reorder_arguments", "norm", "pow(a, 2)", "pow(2, a)"),
    ("replace_operator", "total", "acc += x", "acc -= x"),
    ("replace_operator", "between", "lo <= x and x < hi", "lo <= x or x < hi"),
])
def test_specific_mutations(operator, function, before, after):
    found = [m for m in mutate.candidates("m.py", SOURCE) if m.operator == operator and m.function == function
             and any(after in line for line in _changed(SOURCE, m.source) if line.startswith("+"))]
    assert found, (operator, function, after)
    assert any(before in line for line in _changed(SOURCE, found[0].source) if line.startswith("-"))


def test_remove_import_and_body_keep_the_file_parseable():
    cands = mutate.candidates("m.py", SOURCE)
    imports = [m for m in cands if m.operator == "remove_import"]
    assert {m.line for m in imports} == {2, 3}
    assert all(m.function == "" for m in imports)
    body = [m for m in cands if m.operator == "remove_body" and m.function == "area"][0]
    assert '"""Rectangle area."""' in body.source and _results(body.source)[0] is None


def test_order_is_seeded_and_interleaves_operators():
    files = {"m.py": SOURCE}
    a = ordered_candidates(files, seed=1)
    b = ordered_candidates(files, seed=1)
    c = ordered_candidates(files, seed=2)
    assert [m.source for m in a] == [m.source for m in b]
    assert [m.source for m in a] != [m.source for m in c]
    assert len({m.operator for m in a[:len(mutate.OPERATORS)]}) == len(mutate.OPERATORS)


def test_syntax_error_file_has_no_candidates():
    assert mutate.candidates("bad.py", "def f(:\n") == []


def test_near_identical_tasks_are_detected():
    from cwm.forager.tasks import Task, _near_duplicate

    def task(function: str, line: str, f2p: list[str]) -> Task:
        original = "def f(a, b):\n    return a + b\n"
        return Task(id=line, kind="mutate-fix", repo="r", commit=None, image="i", statement="", fail_to_pass=f2p,
                    pass_to_pass=[], mutation={"operator": "x", "path": "m.py", "line": 2, "function": function},
                    start_files={"m.py": f"def f(a, b):\n    {line}\n"}, fix_files={"m.py": original})

    a = task("f", "return a - b", ["t1"])
    assert _near_duplicate(a, task("f", "return a  -  b", ["t1"]))      # same change, other spacing
    assert not _near_duplicate(a, task("f", "return a * b", ["t1", "t2"]))  # other failing tests
    assert not _near_duplicate(a, task("g", "return a - b", ["t1"]))       # other function
