"""A real code base: toolz 1.0.0's sdist (pinned by sha256), part of its own test suite traced by cwm-trace;
traces are produced and every test's outcome matches an untraced pytest run."""
from __future__ import annotations

import pytest

from trace_cli_helpers import cli, records_by_group, unit_statuses, untraced_outcomes

# 8 tests of its curried namespace (take, merge, sorted, reduce, ...; not the two that walk the whole namespace):
# the full suite (180 tests) is too long for `make test`
SELECT = ("toolz/tests/test_curried.py::test_[!c]*",)


@pytest.mark.network
def test_toolz_test_suite_traced_with_unchanged_outcomes(tmp_path, target_python):
    from cwm.pypi import TOOLZ, RegistryUnreachable, fetch_sdist

    try:
        root = fetch_sdist(*TOOLZ)
    except RegistryUnreachable as e:
        pytest.skip(f"package registry unreachable: {e}")
    out = tmp_path / "traces"
    args = [root, "-o", out, "--python", target_python, "--workers", "2"]
    for glob in SELECT:
        args += ["--tests", glob]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = unit_statuses(out)
    assert len(statuses) == 8
    assert statuses == untraced_outcomes(target_python, root, sorted(statuses))
    records = records_by_group(out)
    traced_toolz = {r["origin"]["qualname"] for rs in records.values() for r in rs if r["origin"]["kind"] != "test"}
    assert sum(len(r["frames"]) for rs in records.values() for r in rs) > 100
    assert traced_toolz, "no function episode from toolz itself"
