"""The jail holds against hostile children, and leaves nothing running."""
import os
import subprocess
import sys

import pytest

from cwm.jail import Jail, Limits, run_jailed

LIMITS = Limits(timeout_s=3, memory_mb=512, max_procs=64, file_size_mb=16)


def py(code):
    return [sys.executable, "-c", code]


def test_ordinary_command_runs(tmp_path):
    r = run_jailed(py("import os; print(os.getcwd())"), cwd=tmp_path, limits=LIMITS)
    assert (r.returncode, r.stdout.strip(), r.timed_out) == (0, str(tmp_path), False)


def test_infinite_loop_is_killed_at_the_timeout(tmp_path):
    r = run_jailed(py("while True: pass"), cwd=tmp_path, limits=Limits(timeout_s=1))
    assert r.timed_out and r.returncode != 0 and 1 <= r.wall_s < 5


def test_escaped_daemon_dies_with_the_jail(tmp_path):
    marker = tmp_path / "alive"
    code = (f"import os, time, subprocess; subprocess.Popen(['sh', '-c', 'while true; do touch {marker}; sleep 0.1; "
            "done'], start_new_session=True); print('spawned')")
    r = run_jailed(py(code), cwd=tmp_path, limits=LIMITS)
    assert r.stdout.strip() == "spawned"
    marker.unlink(missing_ok=True)
    subprocess.run(["sleep", "0.5"])
    assert not marker.exists(), "a setsid'd grandchild outlived the jail"


def test_memory_bomb_fails_inside(tmp_path):
    r = run_jailed(py("x = bytearray(4 << 30); print('allocated')"), cwd=tmp_path, limits=LIMITS)
    assert r.returncode != 0 and "allocated" not in r.stdout


def test_fork_bomb_is_contained(tmp_path):
    tag = f"forkbomb-{os.getpid()}"
    r = run_jailed(["sh", "-c", "f(){ f | f & }; f; sleep 1", tag], cwd=tmp_path, limits=LIMITS)
    assert r.wall_s < 10
    left = subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True).stdout.split()
    assert left == [], f"fork-bomb processes left running: {left}"


def test_no_network(tmp_path):
    with Jail(LIMITS) as jail:
        if "no-network" not in jail.isolation:
            pytest.skip(f"this kernel allows no network namespace here ({jail.isolation})")
    r = run_jailed(py("import socket; socket.create_connection(('127.0.0.1', 9), timeout=2)"), cwd=tmp_path,
                   limits=LIMITS)
    assert r.returncode != 0 and ("unreachable" in r.stderr or "refused" in r.stderr.lower())


def test_large_file_is_cut(tmp_path):
    r = run_jailed(py("open('big', 'wb').write(b'x' * (64 << 20))"), cwd=tmp_path, limits=LIMITS)
    assert r.returncode != 0
    assert not (tmp_path / "big").exists() or (tmp_path / "big").stat().st_size <= 16 << 20


def test_jail_dies_with_its_owner(tmp_path):
    """A parent killed with SIGKILL (no cleanup runs) takes its jailed processes with it."""
    tag = f"orphan-{os.getpid()}"
    owner = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from cwm.jail import Jail, Limits\n"
        f"j = Jail(Limits()); j.popen(['sh', '-c', 'sleep 300', {tag!r}]); print('up', flush=True); time.sleep(300)")],
        stdout=subprocess.PIPE, text=True)
    assert owner.stdout.readline().strip() == "up"
    subprocess.run(["sleep", "0.3"])
    assert subprocess.run(["pgrep", "-f", tag], capture_output=True).stdout, "jailed process did not start"
    owner.kill()
    owner.wait()
    subprocess.run(["sleep", "0.5"])
    left = subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True).stdout.split()
    assert left == [], f"jailed processes outlived their owner: {left}"
