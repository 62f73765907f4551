"""`cwm-trace tasks`: a task's fail-to-pass tests traced on the buggy and the fixed code, linked by origin."""
from __future__ import annotations

import json
import re

import pytest
from trace_cli_helpers import cli, shard_samples, unit_statuses

from cwm.forager.tasks import load_tasks

pytestmark = [pytest.mark.docker, pytest.mark.slow]


ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def shown(frame: dict, field: str) -> str:
    """A frame's field as text, memory addresses taken out (they differ from one process to the next)."""
    return ADDRESS.sub(" at 0x", json.dumps(frame.get(field), sort_keys=True))


def first_difference(a: list[dict], b: list[dict]) -> int | None:
    """Index of the first frame where two traces differ (kind, place, source, locals or value)."""
    fields = ("kind", "path", "line", "source", "locals", "value")
    for i, (x, y) in enumerate(zip(a, b)):
        if any(shown(x, f) != shown(y, f) for f in fields):
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def test_before_after_traces_differ_where_the_mutation_is(shop_tasks, tmp_path):
    out = tmp_path / "ba"
    proc = cli("tasks", shop_tasks, "-o", out, "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    tasks = load_tasks(shop_tasks)
    statuses = unit_statuses(out)
    entries = {}
    for key, record in shard_samples(out):
        origin = record["origin"]
        assert origin["side"] in ("buggy", "fixed") and origin["image"] == tasks[0].image
        if origin["kind"] == "test":
            entries[(origin["task"], origin["side"], f"{origin['path']}::{origin['qualname']}")] = record
    for task in tasks:
        for nodeid in task.fail_to_pass:
            assert statuses[f"{task.id}/buggy/{nodeid}"] in ("failed", "error")   # the bug makes it fail
            assert statuses[f"{task.id}/fixed/{nodeid}"] == "passed"
            buggy, fixed = entries[(task.id, "buggy", nodeid)], entries[(task.id, "fixed", nodeid)]
            i = first_difference(buggy["frames"], fixed["frames"])
            assert i is not None, (task.id, nodeid)
            # the executions agree up to the mutated file, and part there (a frame of the mutated code)
            assert buggy["frames"][i]["path"] == task.mutation["path"] or \
                fixed["frames"][i]["path"] == task.mutation["path"], (task.mutation, buggy["frames"][i])
            assert buggy["context"] == fixed["context"]   # the test itself is the same on both sides

    again = cli("tasks", shop_tasks, "-o", out, "--workers", "2")
    assert again.returncode == 0 and " 0 run," in again.stdout, again.stdout
    keys = [k for k, _ in shard_samples(out)]
    assert len(keys) == len(set(keys))
