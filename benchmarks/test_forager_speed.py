"""ForagerAgent speed: the sandbox (one container per episode, `docker exec` per action) against the naive way,
a plain `docker run` per command (a fresh container for every action, the repository on a bind mount), measured
in the same run on the demo repository (`cwm/forager/demo.py`):

- container start: a ready episode sandbox vs one `docker run ... true`
- action latency: `exec("true")` vs `docker run --rm ... true`
- episodes per minute of the oracle policy (run the failing test, edit, submit + scoring) on both
"""
from __future__ import annotations

import shutil
import statistics
import tempfile
import time

import pytest

from cwm.forager import images
from cwm.forager.agent import EpisodeConfig, run_episode
from cwm.forager.demo import ensure_demo_image
from cwm.forager.images import image_info
from cwm.forager.policies import OraclePolicy
from cwm.forager.sandbox import AGENT_ENV, REPO, DockerSandbox, ExecResult, Sandbox, SandboxLimits
from cwm.forager.tasks import generate_mutate_fix

ACTIONS = 20
EPISODES = 3


class RunPerCommand(Sandbox):
    """The baseline: every command is a new `docker run --rm` with the same limits, the repo bind-mounted."""
    isolation = "docker-run-per-command"

    def __init__(self, image: str, dc):
        self.dc, self.image, self.limits = dc, image, SandboxLimits()
        self.dir = tempfile.mkdtemp(prefix="cwm-forager-bench-")
        shutil.chown(self.dir, images.AGENT_UID, images.AGENT_UID)
        self.exec(f"cp -r {images.SOURCE_DIR}/. {REPO}/", 60)

    def exec(self, command: str, timeout_s: float = 120.0, *, root: bool = False) -> ExecResult:
        t0 = time.monotonic()
        c = self.dc.containers.run(self.image, ["timeout", "-s", "KILL", str(int(timeout_s)), "bash", "-c", command],
                                   detach=True, network_mode="none", user="agent", working_dir=REPO,
                                   mem_limit="2048m", pids_limit=256, environment=AGENT_ENV,
                                   volumes={self.dir: {"bind": REPO, "mode": "rw"}}, labels={"cwm-forager": "1"})
        try:
            code = c.wait()["StatusCode"]
            out = c.logs().decode(errors="replace")
        finally:
            c.remove(force=True)
        return ExecResult(out, code, False, time.monotonic() - t0)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    try:
        dc = images.client()
    except images.ImageError as exc:
        pytest.skip(f"no Docker engine: {exc}")
    image = ensure_demo_image(dc, tmp_path_factory.mktemp("demo") / "calc")
    info = image_info(dc, image)
    tasks = generate_mutate_fix(image, info.repo, None, info.passing, EPISODES, seed=0, workers=2,
                                open_sandbox=lambda: DockerSandbox(image, dc=dc))
    return dc, image, tasks


def _median_s(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        fn()
        times.append(time.monotonic() - t0)
    return statistics.median(times)


def test_forager_speed(setup, benchmark, show_table):
    dc, image, tasks = setup
    cfg = EpisodeConfig(bash_timeout_s=60, test_timeout_s=120)

    start_sandbox = _median_s(lambda: DockerSandbox(image, dc=dc).close(), 5)
    start_plain = _median_s(lambda: dc.containers.run(image, ["true"], remove=True, network_mode="none"), 5)

    box = DockerSandbox(image, dc=dc)
    try:
        benchmark.pedantic(lambda: box.exec("true", 10), rounds=ACTIONS, iterations=1)
        action_sandbox = benchmark.stats.stats.median
    finally:
        box.close()
    plain = RunPerCommand(image, dc)
    try:
        action_plain = _median_s(lambda: plain.exec("true", 10), 5)
    finally:
        plain.close()

    def episodes_per_min(open_box) -> float:
        t0 = time.monotonic()
        for task in tasks:
            record = run_episode(task, OraclePolicy(), open_box, cfg)
            assert record["reward"] == 1, record["stats"]
        return 60 * len(tasks) / (time.monotonic() - t0)

    epm_sandbox = episodes_per_min(lambda t: DockerSandbox(t.image, dc=dc))
    epm_plain = episodes_per_min(lambda t: RunPerCommand(t.image, dc))

    figures = {"start_s": (start_sandbox, start_plain), "action_s": (action_sandbox, action_plain),
               "episodes_per_min": (epm_sandbox, epm_plain)}
    benchmark.extra_info.update({f"{k}_{side}": round(v[i], 4) for k, v in figures.items()
                                 for i, side in enumerate(("sandbox", "docker_run"))})
    show_table("ForagerAgent: episode sandbox vs a plain `docker run` per command (demo repo, oracle policy)",
               ["measure", "sandbox (exec in one container)", "docker run per command", "ratio"],
               [["container start (s)", f"{start_sandbox:.3f}", f"{start_plain:.3f}", f"{start_plain / start_sandbox:.2f}x"],
                ["action latency `true` (s)", f"{action_sandbox:.3f}", f"{action_plain:.3f}",
                 f"{action_plain / action_sandbox:.1f}x faster"],
                ["oracle episodes / min", f"{epm_sandbox:.1f}", f"{epm_plain:.1f}",
                 f"{epm_sandbox / epm_plain:.2f}x"]])
    assert action_sandbox < action_plain
