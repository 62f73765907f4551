"""The same sandbox tests against every backend: Docker, local with bubblewrap, local plain subprocess.

Hostile commands must end within their timeout, leave the sandbox usable or cleanly closed, and leave the
host untouched. What "the host" is gets checked from outside the sandbox (the host filesystem, `docker`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from cwm.forager.sandbox import LABEL, OWNER_LABEL, SandboxLimits, sweep_containers

pytestmark = pytest.mark.docker

# Processes in the sandbox other than its init, as seen from inside (/proc is the sandbox's own PID namespace).
LIST_PROCS = ("for d in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null); "
              "[ -n \"$c\" ] && echo \"${d#/proc/} $c\"; done")


def _leftover(box, needle: str) -> list[str]:
    out = box.exec(LIST_PROCS, 10).output
    return [line for line in out.splitlines() if needle in line and "LIST" not in line and "/proc" not in line]


def test_exec_runs_unprivileged_in_the_repo(open_box):
    with open_box() as box:
        box.begin()
        r = box.exec("id -u; pwd; ls calc; echo err >&2; exit 3", 30)
        lines = r.output.splitlines()
        assert r.exit_code == 3 and not r.timed_out
        assert lines[0] != "0"                       # not root
        assert lines[1].endswith("repo") and "__init__.py" in lines and "err" in lines
        assert lines[-1] == "err"                    # stdout and stderr in the order they were printed
        assert box.write_file("pkg/new.py", "x = 1\n") is None
        assert box.read_file("pkg/new.py") == "x = 1\n"
        assert "+x = 1" in box.patch()


def test_timeout_kills_the_processes_inside(open_box):
    with open_box() as box:
        t0 = time.monotonic()
        marker = f"sleep 3{uuid.uuid4().int % 100:02d}"
        r = box.exec(f"{marker} & setsid {marker} >/dev/null 2>&1 & setsid {marker} & {marker}", 1.0)
        assert r.timed_out and r.exit_code is None
        assert time.monotonic() - t0 < 8
        assert _leftover(box, marker) == []


def test_never_ending_loop_ends(open_box):
    with open_box() as box:
        t0 = time.monotonic()
        r = box.exec("while :; do :; done", 1.5)
        assert r.timed_out and time.monotonic() - t0 < 8
        assert box.exec("echo alive", 10).output.strip() == "alive"


def test_fork_bomb_is_contained(open_box):
    with open_box(limits=SandboxLimits(pids=64)) as box:
        t0 = time.monotonic()
        box.exec(":(){ :|:& };:", 3)
        assert time.monotonic() - t0 < 15
        assert box.exec("echo alive", 20).output.strip() == "alive"
        # nothing of the bomb is left: only init, its sleep and the listing shell remain
        assert len(box.exec(LIST_PROCS, 10).output.splitlines()) < 8


def test_output_flood_is_cut(open_box):
    with open_box(limits=SandboxLimits(max_output_bytes=10_000)) as box:
        r = box.exec("yes | head -c 200000", 20)
        assert len(r.output) < 11_000 and "not shown" in r.output


def test_filling_the_disk_fails_inside(open_box, tmp_path):
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with open_box(limits=SandboxLimits(repo_mb=64)) as box:
        r = box.exec("dd if=/dev/zero of=big bs=1M count=4096 2>&1; ls -la big | awk '{print $5}'", 60)
        assert r.exit_code is not None
        size = int(r.output.strip().splitlines()[-1])
        assert size <= (64 << 20) + (1 << 20), r.output
        assert box.exec("echo alive", 10).output.strip() == "alive"
    assert os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize > free - (256 << 20)


def test_writes_outside_the_repo_fail(open_box, tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("host")
    target = f"/etc/cwm-forager-{uuid.uuid4().hex[:8]}"
    with open_box() as box:
        r = box.exec(f"echo x > {target}; echo x > {canary}; echo x >> /usr/bin/env; echo done", 10)
        assert r.output.count("denied") + r.output.count("Read-only") + r.output.count("No such file") >= 3, r.output
    assert not Path(target).exists()
    assert canary.read_text() == "host"


def test_network_is_unreachable(open_box):
    with open_box() as box:
        probe = ("import socket\n"
                 "for host in [('1.1.1.1', 80), ('pypi.org', 443)]:\n"
                 "    try:\n"
                 "        socket.create_connection(host, timeout=3); print('CONNECTED', host)\n"
                 "    except OSError as e:\n"
                 "        print('blocked', type(e).__name__)\n")
        r = box.exec(f"python3 -c \"{probe}\"", 30)
        assert "CONNECTED" not in r.output and r.output.count("blocked") == 2, r.output


def test_rm_rf_root_leaves_host_untouched(open_box, backend, tmp_path, request):
    if backend == "subprocess":
        pytest.skip("plain-subprocess fallback has no filesystem isolation (permissions only): "
                    "`rm -rf /` is exercised under docker and bubblewrap only")
    canary = tmp_path / "canary.txt"
    canary.write_text("host")
    with open_box() as box:
        r = box.exec("rm -rf --no-preserve-root / 2>/dev/null; echo finished", 5)
        assert "finished" in r.output or r.timed_out
    assert canary.read_text() == "host"
    assert Path("/usr/bin/env").exists() and Path("/etc/passwd").exists()
    if backend == "docker":  # the image itself is intact: a new container still has its files
        with open_box() as box:
            assert box.exec("ls /usr/bin/python3 calc/__init__.py", 10).exit_code == 0


def test_docker_container_is_removed_and_labelled(docker_client, demo_image):
    dc = docker_client
    from cwm.forager.sandbox import DockerSandbox
    box = DockerSandbox(demo_image, dc=dc, run_id="label-test")
    cid = box.container.id
    attrs = dc.api.inspect_container(cid)
    assert attrs["Config"]["Labels"][LABEL] == "1"
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    assert attrs["HostConfig"]["ReadonlyRootfs"] and attrs["HostConfig"]["PidsLimit"] > 0
    assert attrs["Config"]["User"] == "agent"
    box.close()
    assert not dc.containers.list(all=True, filters={"id": cid})


def test_sweep_removes_containers_of_a_killed_collector(docker_client, demo_image):
    """A process holding a sandbox is SIGKILLed: its container survives it, and the next sweep removes it.
    (Local sandboxes die with their process: pid namespace, --die-with-parent.)"""
    dc, image = docker_client, demo_image
    code = ("import sys, time\nfrom cwm.forager.sandbox import DockerSandbox\n"
            f"box = DockerSandbox({image!r})\nprint(box.container.id, flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    cid = proc.stdout.readline().strip()
    proc.kill()
    proc.wait()
    left = dc.containers.list(all=True, filters={"id": cid})
    assert left and left[0].labels[OWNER_LABEL].endswith(f":{proc.pid}")
    assert sweep_containers(dc) >= 1
    assert not dc.containers.list(all=True, filters={"id": cid})


@pytest.mark.parametrize("bubblewrap", [True, False], ids=["bubblewrap", "subprocess"])
def test_local_sandbox_cleans_up(bubblewrap, demo_repo):
    from cwm.forager.sandbox import LocalSandbox
    if bubblewrap and not shutil.which("bwrap"):
        pytest.skip("bubblewrap not installed")
    box = LocalSandbox(demo_repo, bubblewrap=bubblewrap)
    workdir = box.workdir
    assert "weaker than docker" in box.isolation
    box.exec("sleep 100 &", 5)
    box.close()
    assert not workdir.exists()
