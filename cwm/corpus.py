"""Corpus runs: build and trace whole lists of repositories, locally or on a Ray cluster.

    cwm-forager build-images LIST [--ray auto|ADDRESS]       one repository image per list item
    cwm-trace corpus LIST -o DIR [--ray auto|ADDRESS]        build (or find) each image, trace its tests inside it

A list has one repository per line: a local source folder or a git folder (relative to the list's own folder), or
a PyPI sdist `name==version`, optionally followed by `--hash=sha256:HEX` as pip writes it; `#` starts a comment.
Every line is checked before anything runs; a bad one stops the run naming its line number.

Layout of a corpus directory:
    DIR/items/{slug}/       one `cwm-trace` output per item (shards, its own manifest.json and units.jsonl)
    DIR/corpus.jsonl        the run log: one row per finished item, traced or failed (with its cause)
    DIR/running/{slug}.json which worker (host, pid) runs an item now; gone when the item's row is written
    DIR/manifest.json       every item's shards, merged (names relative to DIR): `shard_paths(DIR)` reads them all

Invariants:
- An item is the unit of work, locally (a thread pool of `--jobs`) and on Ray (one task per item). Its shards are
  written atomically per test (cwm.data.shards), under its own folder, with keys that name the item: a unit that
  is retried after its worker died resumes in its folder, and no sample is written twice or lost.
- A failure (the sdist cannot be fetched, the package does not install, its tests do not run) is a row with its
  cause, never the end of the run. An item with a row is done: a rerun skips it (delete its row to retry it).
- The merged manifest is rewritten at the end of every run and at the start of a resumed one, from the items'
  own manifests, so it never lists a shard that is not complete.
- Docker-based units need a Docker engine on every Ray worker node: checked on each node before any unit starts.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console

RUN_LOG = "corpus.jsonl"
ITEMS = "items"
RUNNING = "running"
_SDIST = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")
_HASH = re.compile(r"^--hash=sha256:([0-9a-fA-F]{64})$")
CAUSES = ("fetch", "install", "tests", "collect", "trace", "docker", "error", "worker")


class CorpusInputError(Exception):
    """A user error in a corpus run (a list line, a Ray address): one line, exit 2."""


class ItemFailure(Exception):
    """An item that cannot be built or traced: a row with `cause` (one of CAUSES), not the end of the run."""

    def __init__(self, cause: str, detail: str):
        super().__init__(f"{cause}: {detail}")
        self.cause, self.detail = cause, detail


@dataclass(frozen=True)
class Item:
    """One list line: an sdist (name, version, sha256 or None) or a folder (path; git when it has .git)."""
    line: int
    kind: str                # sdist | folder | git
    spec: str                # the line as written
    name: str
    version: str | None = None
    sha256: str | None = None
    path: str | None = None

    @property
    def slug(self) -> str:
        """The item's stable name: its folder under DIR/items and the prefix of its record groups."""
        if self.kind == "sdist":
            return f"{self.name}-{self.version}".lower()
        digest = hashlib.sha256(self.path.encode()).hexdigest()[:8]
        return f"{re.sub(r'[^A-Za-z0-9_-]+', '-', self.name)}-{digest}"


def parse_list(path: Path) -> list[Item]:
    """Every item of a list file; a line that does not parse raises CorpusInputError naming its number."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise CorpusInputError(f"{path}: no such file; give a list with one repository per line") from None
    except UnicodeDecodeError as e:
        raise CorpusInputError(f"{path}: not UTF-8 text ({e.reason}); give one repository per line") from None
    items, seen = [], {}
    for n, raw in enumerate(lines, 1):
        text = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not text:
            continue
        words = text.split()
        sdist = _SDIST.match(words[0])
        if sdist and not (Path(path).parent / words[0]).exists():
            hashes = [_HASH.match(w) for w in words[1:]]
            if len(words) > 2 or not all(hashes):
                raise CorpusInputError(f"{path}:{n}: {text!r}: after name==version only one "
                                       "--hash=sha256:<64 hex digits> may follow")
            item = Item(n, "sdist", text, sdist.group(1), sdist.group(2),
                        hashes[0].group(1).lower() if hashes else None)
        else:
            folder = (Path(path).parent / text).resolve()
            if not folder.is_dir():
                raise CorpusInputError(f"{path}:{n}: {text!r} is neither a folder nor name==version "
                                       "[--hash=sha256:HEX]; fix or remove that line")
            item = Item(n, "git" if (folder / ".git").exists() else "folder", text, folder.name, path=str(folder))
        if item.slug in seen:
            raise CorpusInputError(f"{path}:{n}: {text!r} repeats line {seen[item.slug]}; remove one of them")
        seen[item.slug] = n
        items.append(item)
    if not items:
        raise CorpusInputError(f"{path}: no items in it; give one repository per line")
    return items


# -- one item -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusConfig:
    """What every unit is told; plain data, so it travels to Ray workers."""
    mode: str                          # "build" (build-images) or "trace" (corpus)
    out: str | None = None             # corpus directory (trace mode)
    workers: int = 2                   # unit servers per item
    max_tests: int | None = None       # the first N collected tests of each item (None: all)
    options: dict = field(default_factory=dict)   # cwm.tracing.child.TraceOptions fields
    base: str | None = None            # base image for builds
    shard_samples: int = 1000


def source_of(item: Item) -> Path:
    """The item's source tree: the folder, or the sdist fetched (sha256 checked) and unpacked in the cache."""
    if item.kind != "sdist":
        return Path(item.path)
    from cwm.pypi import RegistryUnreachable, SdistHashMismatch, fetch_sdist
    try:
        return fetch_sdist(item.name, item.version, item.sha256)
    except (RegistryUnreachable, SdistHashMismatch) as e:
        raise ItemFailure("fetch", str(e)) from None


def image_tag(item: Item, source: Path, base: str, flaky_runs: int) -> str:
    """A tag naming the item's content, its base image, the image-building code and how many test runs found its
    flaky tests: found again, not rebuilt."""
    from cwm.forager import images
    h = hashlib.sha256(f"{base}\n{item.sha256 or ''}\nflaky_runs={flaky_runs}".encode())
    h.update(Path(images.__file__).read_bytes())
    if item.sha256 is None:
        for p in sorted(source.rglob("*")):
            rel = p.relative_to(source)
            if p.is_file() and not set(rel.parts) & images.EXCLUDE_DIRS:
                h.update(str(rel).encode() + b"\0" + p.read_bytes())
    name = re.sub(r"[^a-z0-9_.-]+", "-", item.name.lower()).strip("-._") or "repo"
    return f"cwm-corpus/{name}:{h.hexdigest()[:12]}"    # by content, not by path: a moved folder finds its image


def build_item(item: Item, config: CorpusConfig, dc, log: Callable[[str], None]) -> tuple[str, bool]:
    """The item's image tag, built unless it exists; and whether it was built now. Tracing reads only what passes,
    so a corpus build runs the suite once; build-images runs it 3 times to find the flaky tests the task grader
    re-runs (the image's tag says which, so a traced image is not taken for a graded one)."""
    from cwm.forager import images
    source = source_of(item)
    base = config.base or images.ensure_base_image(dc, log=log)
    runs = 3 if config.mode == "build" else 1
    tag = image_tag(item, source, base, runs)
    try:
        dc.images.get(tag)
        return tag, False
    except images.docker.errors.ImageNotFound:
        pass
    try:
        images.build_image(dc, source, tag, base=base, log=log, flaky_runs=runs)
    except images.ImageError as e:
        text = str(e).replace(f"{source}: ", "")
        cause = "install" if "installing it failed" in text else "tests"
        raise ItemFailure(cause, _last_line(text)) from None
    return tag, True


def trace_item(item: Item, tag: str, config: CorpusConfig, dc, console: Console) -> dict:
    """Trace the item's tests in its image into DIR/items/{slug}; the numbers of its row."""
    from cwm.tracing import image as image_mod
    from cwm.tracing.child import TraceOptions
    from cwm.tracing.run import trace_units
    from cwm.tracing.target import TraceInputError
    from cwm.tracing.units import Unit

    options = TraceOptions(**config.options)
    where = image_mod.ImageTarget(tag)
    try:
        python, units, _ = image_mod.probe_and_collect(dc, where, options)
    except TraceInputError as e:
        raise ItemFailure("collect", str(e)) from None
    units = units[: config.max_tests] if config.max_tests else units
    units = [Unit(group=f"{item.slug}/{u.group}", job=u.job, origin=u.origin) for u in units]
    info = image_mod.image_info(dc, tag)
    origin = {"repo": item.name, "commit": info.commit, "image": tag, "item": item.spec}
    try:
        stats = trace_units(units, out_dir=Path(config.out) / ITEMS / item.slug, target=python, root=None,
                            options=options, workers=config.workers, origin=origin,
                            shard_samples=config.shard_samples, console=console,
                            server_class=image_mod.server_factory(where, dc), root_in_server=True,
                            progress_label=item.slug)
    except Exception as e:  # noqa: BLE001 - one item's trouble is its row, not the run's end
        raise ItemFailure("trace", f"{type(e).__name__}: {e}") from None
    return {"python": python.version, "tests": stats.units, "tests_run": stats.units_run,
            "test_status": dict(stats.statuses), "traces": stats.traces, "frames": stats.frames}


def process_item(item: Item, config: CorpusConfig) -> dict:
    """One unit of work (build-images: build; corpus: build, then trace): its row, failures included. Runs in a
    thread of the driver, or as a Ray task on any worker node."""
    start = time.monotonic()
    row = {"item": item.slug, "line": item.line, "spec": item.spec, "status": "", "cause": None, "detail": "",
           "image": None, "built": False, "worker": f"{socket.gethostname()}:{os.getpid()}"}
    marker = Path(config.out) / RUNNING / f"{item.slug}.json" if config.out else None
    if marker:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}))
    console = Console(stderr=True, quiet=config.mode == "build")
    try:
        from cwm.forager import images
        from cwm.forager.sandbox import sweep_containers
        try:
            dc = images.client()
        except images.ImageError as e:
            raise ItemFailure("docker", str(e)) from None
        sweep_containers(dc)    # a retried unit: the containers its killed worker left
        tag, built = build_item(item, config, dc, log=lambda _: None)
        row.update(image=tag, built=built)
        if config.mode == "trace":
            row.update(trace_item(item, tag, config, dc, console))
        row["status"] = "built" if config.mode == "build" else "traced"
    except ItemFailure as e:
        row.update(status="failed", cause=e.cause, detail=e.detail[:500])
    except Exception as e:  # noqa: BLE001 - the engine or a tool failed on this item: its row, not the run's end
        row.update(status="failed", cause="error", detail=f"{type(e).__name__}: {str(e).splitlines()[0][:400]}")
    row["wall_s"] = round(time.monotonic() - start, 2)
    return row


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    telling = ([line for line in lines if line.startswith("error:")] or    # a build tool's own word (gcc missing)
               [line for line in lines if re.match(r"(ERROR|\w*Error)\b", line)] or
               [line for line in lines if re.search(r"error|Error|failed|FAILED", line)])
    head = lines[0] if lines else ""
    return f"{head} ... {telling[-1]}" if telling and telling[-1] != head else head


# -- runs ---------------------------------------------------------------------------------------------------------
def done_rows(log: Path) -> dict[str, dict]:
    """slug -> the last row of each finished item in a run log (a line cut by a kill is skipped)."""
    from cwm.tracing.run import last_rows

    return last_rows(log, "item")


def merge_manifests(out: Path, units: str = ITEMS) -> dict:
    """DIR/manifest.json from the units' own manifests under DIR/{units}/ (shard names relative to DIR, groups
    kept: a ShardWriter opened on DIR resumes from it), written atomically."""
    from cwm.data.shards import MANIFEST, SCHEMA
    shards = []
    for manifest in sorted((out / units).glob(f"*/{MANIFEST}")):
        rel = manifest.parent.relative_to(out)
        for entry in json.loads(manifest.read_text())["shards"]:
            shards.append({**entry, "name": f"{rel}/{entry['name']}"})
    merged = {"schema": SCHEMA, "shards": shards}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(merged, indent=1))
    os.replace(tmp, out / MANIFEST)
    return merged


@dataclass
class CorpusStats:
    items: int = 0
    resumed: int = 0
    rows: list[dict] = field(default_factory=list)       # rows of this run
    wall_s: float = 0.0


def run_corpus(items: list[Item], config: CorpusConfig, *, log_path: Path, ray_address: str | None = None,
               jobs: int = 1, console: Console | None = None) -> CorpusStats:
    """Run every item without a row in `log_path`; rows are appended as items finish (in any order)."""
    console = console or Console(stderr=True)
    stats = CorpusStats(items=len(items))
    done = done_rows(log_path)
    todo = [it for it in items if it.slug not in done]
    stats.resumed = len(items) - len(todo)
    out = Path(config.out) if config.out else None
    if out:
        merge_manifests(out)
    start = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        def write(row: dict) -> None:
            log.write(json.dumps(row) + "\n")
            log.flush()
            stats.rows.append(row)
            if out:
                (out / RUNNING / f"{row['item']}.json").unlink(missing_ok=True)
            how = row["status"] if row["status"] != "failed" else f"[red]failed ({row['cause']})"
            how += "" if row.get("built", True) or row["status"] == "failed" else " (image found)"
            console.print(f"{row['item']}: {how} {row.get('traces', '')} in {row['wall_s']} s")

        try:
            if todo and ray_address:
                _run_on_ray(todo, config, ray_address, write, console)
            elif todo:
                with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="cwm-corpus") as pool:
                    for future in as_completed([pool.submit(process_item, it, config) for it in todo]):
                        write(future.result())
        finally:
            stats.wall_s = time.monotonic() - start
            if out:
                merge_manifests(out)
    return stats


def connect_ray(address: str):
    """ray.init on an existing cluster; an address that does not answer is one line, before anything runs."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")   # its retry warnings would bury that line
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    if address != "auto":
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise CorpusInputError(f"--ray {address}: give auto or HOST:PORT of a running Ray head")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as e:
            raise CorpusInputError(f"--ray {address}: no Ray head answers there ({e.strerror or e}); start one "
                                   "with `ray start --head` or give its address") from None
    try:
        with _stderr_to_nowhere():   # its native client prints each failed retry there
            ray.init(address=address, log_to_driver=False, logging_level="ERROR", configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise CorpusInputError(f"--ray {address}: cannot connect ({str(e).splitlines()[0][:200]}); start a cluster "
                               "with `ray start --head` or give its address") from None
    return ray


@contextlib.contextmanager
def _stderr_to_nowhere():
    """File descriptor 2 goes to /dev/null meanwhile (native code writes there, past sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _docker_on_node() -> str:
    try:
        from cwm.forager import images
        images.client()
        return ""
    except Exception as e:  # noqa: BLE001 - said in the check's one line
        return str(e).splitlines()[0][:200]


def check_docker_everywhere(ray) -> None:
    """Every alive worker node must reach a Docker engine (units build and trace in containers)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    probe = ray.remote(num_cpus=0, max_retries=0)(_docker_on_node)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    if not nodes:
        raise CorpusInputError("the Ray cluster has no worker node with CPUs; add one with `ray start --address`")
    answers = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                       .remote() for n in nodes], timeout=120)
    missing = [f"{n['NodeManagerAddress']} ({why})" for n, why in zip(nodes, answers) if why]
    if missing:
        raise CorpusInputError(f"no Docker engine on Ray node {missing[0]}: Docker-based units need an engine on "
                               "every worker node; start one there (.ci/docker-up.sh) or remove the node")


def _run_on_ray(todo: list[Item], config: CorpusConfig, address: str, write, console: Console) -> None:
    ray = connect_ray(address)
    try:
        check_docker_everywhere(ray)
        remote = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(process_item)
        pending = {remote.remote(it, config): it for it in todo}
        console.print(f"{len(pending)} units submitted to the Ray cluster at {address}")
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            item = pending.pop(ready[0])
            try:
                write(ray.get(ready[0]))
            except ray.exceptions.RayError as e:   # retries exhausted: the unit's row says so
                write({"item": item.slug, "line": item.line, "spec": item.spec, "status": "failed",
                       "cause": "worker", "detail": str(e).splitlines()[0][:300], "wall_s": 0.0})
    finally:
        ray.shutdown()


# -- trajectories on Ray (cwm-forager collect --ray) ----------------------------------------------------------------
CHUNKS = "chunks"


def collect_chunk(task_dicts: list[dict], out: str, policy: str, policy_kw: dict, limits_kw: dict,
                  episode_kw: dict, workers: int) -> dict:
    """One unit of `collect --ray`: a chunk of tasks collected into its own folder (resumable per episode, so a
    retried chunk redoes only the episodes its killed worker had not finished)."""
    from cwm.forager import images
    from cwm.forager.agent import EpisodeConfig
    from cwm.forager.collect import CollectConfig, collect
    from cwm.forager.policies import make_policy
    from cwm.forager.sandbox import SandboxLimits, open_sandbox, sweep_containers
    from cwm.forager.tasks import Task
    dc = images.client()
    sweep_containers(dc)
    tasks = [Task.from_dict(d) for d in task_dicts]
    limits = SandboxLimits(**limits_kw)
    return collect(tasks, lambda: make_policy(policy, **policy_kw),
                   lambda task: open_sandbox("docker", image=task.image, limits=limits, dc=dc), out,
                   CollectConfig(workers=workers, episode=EpisodeConfig(**episode_kw)), show_progress=False)


def collect_on_ray(tasks: list, *, address: str, out: Path, chunk: int, policy: str, policy_kw: dict,
                   limits_kw: dict, episode_kw: dict, workers: int = 1, console: Console | None = None) -> dict:
    """Episodes as Ray tasks, `chunk` tasks a unit, each unit into DIR/chunks/{chunk key}; the merged manifest
    (DIR/manifest.json) lists every unit's shards at the end and at the start of a resumed run."""
    from dataclasses import asdict

    from cwm.data.shards import record_key
    console = console or Console(stderr=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    merge_manifests(out, CHUNKS)
    units = [tasks[i:i + chunk] for i in range(0, len(tasks), max(1, chunk))]
    ray = connect_ray(address)
    start = time.monotonic()
    try:
        check_docker_everywhere(ray)
        remote = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(collect_chunk)
        refs = [remote.remote([asdict(t) for t in unit],
                              str(out / CHUNKS / f"chunk-{record_key([t.id for t in unit])[:12]}"),
                              policy, policy_kw, limits_kw, episode_kw, workers) for unit in units]
        console.print(f"{len(refs)} units of up to {chunk} tasks submitted to the Ray cluster at {address}")
        summaries = ray.get(refs)
    finally:
        ray.shutdown()
        merge_manifests(out, CHUNKS)
    rewards, outcomes = Counter(), Counter()
    for s in summaries:
        rewards.update(s.get("rewards") or {})
        outcomes.update(s.get("outcomes") or {})
    wall = time.monotonic() - start
    episodes = sum(s["episodes"] for s in summaries)
    summary = {"episodes": episodes, "skipped_done": sum(s.get("skipped_done", 0) for s in summaries),
               "rewards": dict(rewards), "outcomes": dict(outcomes), "units": len(units), "wall_s": round(wall, 2),
               "episodes_per_min": round(60 * episodes / wall, 2) if wall > 0 else None, "policy": policy}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# -- sandboxes on Ray (cwm-forager tasks --ray) --------------------------------------------------------------------
class SandboxHost:
    """A Ray actor holding one DockerSandbox on whichever worker node it was placed."""

    def __init__(self, image: str, limits_kw: dict):
        from cwm.forager.sandbox import DockerSandbox, SandboxLimits
        self.box = DockerSandbox(image, limits=SandboxLimits(**limits_kw))

    def exec(self, command: str, timeout_s: float):
        return self.box.exec(command, timeout_s)

    def close(self) -> None:
        self.box.close()


def ray_sandboxes(address: str, image: str, limits, workers: int) -> Callable:
    """`open_sandbox()` for task generation whose sandboxes live on the cluster's worker nodes (one Ray actor, one
    CPU, each): `generate_mutate_fix` then validates its candidates there, in the same seeded order, so the tasks
    are the ones a local run makes. Needs the image on every worker node."""
    from dataclasses import asdict

    from cwm.forager.sandbox import Sandbox, SandboxError
    ray = connect_ray(address)
    try:
        check_docker_everywhere(ray)
    except BaseException:
        ray.shutdown()
        raise
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if workers > cpus:
        ray.shutdown()
        raise CorpusInputError(f"--workers {workers} with --ray: the cluster has {cpus} CPUs, one a sandbox; "
                               f"use --workers {cpus} or add nodes")
    host = ray.remote(num_cpus=1, max_restarts=0)(SandboxHost)

    class RaySandbox(Sandbox):
        isolation = "docker (on a Ray worker node)"

        def __init__(self):
            self.limits = limits
            self.actor = host.remote(image, asdict(limits))

        def exec(self, command: str, timeout_s: float = 120.0):
            try:
                return ray.get(self.actor.exec.remote(command, timeout_s))
            except ray.exceptions.RayError as e:
                raise SandboxError(f"the sandbox on the Ray cluster failed: {str(e).splitlines()[0][:300]}") from e

        def close(self) -> None:
            if self.actor is not None:
                try:
                    ray.get(self.actor.close.remote(), timeout=60)
                except Exception:  # noqa: BLE001 - the actor is gone: sweep_containers removes its container
                    pass
                ray.kill(self.actor)
                self.actor = None

    return RaySandbox


def disconnect_ray() -> None:
    """End this process's connection to the cluster (after `ray_sandboxes` work is done)."""
    import ray
    ray.shutdown()


# -- the summary --------------------------------------------------------------------------------------------------
def summary_rows(stats: CorpusStats, log_path: Path) -> list[tuple[str, str]]:
    every = done_rows(log_path)
    rows = list(every.values())
    ok = [r for r in rows if r["status"] in ("traced", "built")]
    failed = Counter(r["cause"] for r in rows if r["status"] == "failed")
    this = stats.rows
    traces = sum(r.get("traces", 0) for r in this)
    out = [("items", f"{len(stats.rows)} run, {stats.resumed} already done (resumed), {stats.items} in all"),
           ("done", f"{len(ok)} {'traced' if any(r['status'] == 'traced' for r in ok) else 'ok'}, "
                    f"{sum(failed.values())} failed")]
    if any("tests" in r for r in rows):
        out += [("tests", f"{sum(r.get('tests', 0) for r in rows):,}"),
                ("traces", f"{sum(r.get('traces', 0) for r in rows):,}"),
                ("frames", f"{sum(r.get('frames', 0) for r in rows):,}")]
    out.append(("failures by cause", ", ".join(f"{c} {n}" for c, n in failed.most_common()) or "-"))
    rate = f"{len(this) / stats.wall_s * 60:.1f} items/min" if stats.wall_s else "-"
    if traces and stats.wall_s:
        rate += f", {traces / stats.wall_s:.1f} traces/s"
    out.append(("throughput (this run)", f"{rate} ({stats.wall_s:.1f} s wall)"))
    for r in rows:
        if r["status"] == "failed":
            out.append((f"failed: {r['item']} (line {r['line']})", f"{r['cause']}: {r['detail'][:100]}"))
    out.append(("run log", str(log_path)))
    return out


def print_summary(stats: CorpusStats, log_path: Path, title: str) -> None:
    from rich.table import Table
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in summary_rows(stats, log_path):
        table.add_row(name, value)
    Console(width=140).print(table)

