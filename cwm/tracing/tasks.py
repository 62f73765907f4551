"""Before/after traces of forager tasks (`cwm-trace tasks TASKS.jsonl -o DIR`).

For each task (mutate-fix, issue-fix, pr-history: any `cwm.forager.tasks.Task`), its fail-to-pass tests are traced
inside its image twice: on the buggy code (the task's start files, plus its test files) and on the fixed code (the
start files with the fix written over them, plus the test files). Every record's origin carries `task` (the task
id) and `side` ("buggy" or "fixed"), so a model can be shown what the bug does to the program's state: the same test,
the same inputs, the two executions side by side.

Invariant: a unit's group is `{task id}/{side}/{test node id}`, stable across runs: rerunning on the same output
directory resumes, per test and side, with no sample written twice.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Console

from cwm.forager.tasks import Task

from . import image as image_mod
from .child import TraceOptions
from .run import RunStats, trace_units
from .units import Unit

SIDES = ("buggy", "fixed")


def side_files(task: Task, side: str) -> dict:
    """The overlay written over the image's pristine source for one side of the task."""
    files = dict(task.start_files)
    if side == "fixed":
        files.update(task.fix_files)
    files.update(task.test_files)
    return files


def side_units(task: Task, side: str) -> list[Unit]:
    return [Unit(group=f"{task.id}/{side}/{nodeid}", job={"mode": "pytest", "nodeid": nodeid},
                 origin={"kind": "test", "path": nodeid.split("::", 1)[0], "qualname": nodeid.split("::", 1)[-1],
                         "input": None})
            for nodeid in dict.fromkeys(task.fail_to_pass)]


def trace_tasks(tasks: list[Task], *, out_dir: Path, options: TraceOptions, workers: int, shard_samples: int = 1000,
                console: Console | None = None, dc=None) -> list[RunStats]:
    """Trace every task's fail-to-pass tests on both sides; one RunStats per (task, side)."""
    console = console or Console(stderr=True)
    dc = dc or image_mod.docker_client()
    pythons: dict = {}
    runs = []
    for task in tasks:
        if not task.image:   # a pr-history task made from git history alone: no image to run it in
            console.print(f"[yellow]task {task.id}: no image (build one of {task.repo} with `cwm-forager "
                          "build-image` and make the tasks from it); skipped")
            continue
        if task.image not in pythons:
            image_mod.image_info(dc, task.image)    # a missing image: one line, before anything runs
            pythons[task.image] = image_mod.probe_image(dc, image_mod.ImageTarget(task.image), options)
        for side in SIDES:
            where = image_mod.ImageTarget(task.image, files=side_files(task, side))
            origin = {"repo": task.repo, "commit": task.commit, "image": task.image, "task": task.id, "side": side}
            runs.append(trace_units(side_units(task, side), out_dir=out_dir, target=pythons[task.image], root=None,
                                    options=options, workers=workers, origin=origin, shard_samples=shard_samples,
                                    console=console, server_class=image_mod.server_factory(where, dc),
                                    root_in_server=True, progress_label=f"{task.id[:8]} {side}"))
    return runs
