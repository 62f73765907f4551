"""Run untrusted commands (traced programs, agent actions) with time, memory, process and network limits.

Every limit is applied through the command line of the child (`unshare`, `prlimit`, a cgroup join by `sh`), never
through `preexec_fn`, so jails can be started from worker threads safely. What holds depends on the kernel and
the user; `Jail.isolation` names it, and callers report it:

- a new PID namespace (`unshare --pid --kill-child`): killing the jail's first process kills every process in it,
  including ones that called `setsid` or double-forked;
- a new network namespace (`--net`): no interface but a downed loopback, so no network at all;
- a cgroup (v1 or v2) with `pids.max` and a memory limit over the whole process tree, where /sys/fs/cgroup is
  writable; otherwise `RLIMIT_NPROC` (which does not hold for root) and per-process `RLIMIT_AS` only;
- `RLIMIT_FSIZE` against filling the disk, `RLIMIT_CORE=0`;
- with `Limits.writable`, every mount read-only in the jail's mount namespace except those paths (and a private
  /dev/shm), CAP_SYS_ADMIN dropped so it stays that way ("read-only-fs").
"""
from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 60.0
    memory_mb: int | None = 2048
    max_procs: int | None = 256
    file_size_mb: int | None = 1024
    network: bool = False
    writable: tuple[str, ...] | None = None   # set: every mount is read-only inside the jail except these paths


# Runs inside the jail's mount namespace (as root): bind each writable path onto itself (a mount of its own, left
# writable), give the jail a private /dev/shm, remount every other mount read-only, then exec the command without
# CAP_SYS_ADMIN in its bounding set, so nothing inside can remount anything writable again.
_READ_ONLY_SCRIPT = r"""
n=$1; shift; keep=""
while [ "$n" -gt 0 ]; do mount --bind "$1" "$1" || exit 125; keep="$keep|$1|"; shift; n=$((n-1)); done
mount -t tmpfs -o size=64m tmpfs /dev/shm 2>/dev/null && keep="$keep|/dev/shm|"
awk '{print $2}' /proc/self/mounts | while read -r m; do
  case "$keep" in *"|$m|"*) ;; *) mount -o remount,bind,ro "$m" 2>/dev/null ;; esac
done
exec setpriv --bounding-set=-sys_admin -- "$@"
"""


@dataclass
class JailResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    wall_s: float
    isolation: str


@functools.lru_cache(maxsize=None)
def _namespace_prefix() -> tuple[str, ...]:
    """The `unshare` invocation that works here (root, or user namespaces), or () when none does."""
    if not shutil.which("unshare"):
        return ()
    for prefix in (
        ("unshare", "--fork", "--pid", "--kill-child", "--mount-proc", "--net"),
        ("unshare", "--user", "--map-root-user", "--fork", "--pid", "--kill-child", "--mount-proc", "--net"),
    ):
        try:
            ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return prefix
    return ()


@functools.lru_cache(maxsize=None)
def _can_confine_writes() -> bool:
    """Read-only mounts need the root namespace prefix (a mount namespace we may remount in) and setpriv."""
    prefix = _namespace_prefix()
    return bool(prefix) and "--user" not in prefix and all(shutil.which(t) for t in ("setpriv", "mount", "awk"))


@functools.lru_cache(maxsize=None)
def _cgroup_layout() -> str | None:
    """'v2' or 'v1' when this process may create cgroups with pids and memory limits, else None."""
    probe = f"cwm-jail-probe-{os.getpid()}"
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        controllers = (CGROUP_ROOT / "cgroup.subtree_control").read_text().split() if (
            CGROUP_ROOT / "cgroup.subtree_control").exists() else []
        candidates = [("v2", CGROUP_ROOT / probe)] if {"pids", "memory"} <= set(controllers) else []
    else:
        candidates = [("v1", CGROUP_ROOT / "pids" / probe)]
    for layout, path in candidates:
        try:
            path.mkdir()
            path.rmdir()
            return layout
        except OSError:
            continue
    return None


@functools.lru_cache(maxsize=None)
def _has_pdeathsig() -> bool:
    try:
        return subprocess.run(["setpriv", "--pdeathsig", "KILL", "--", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.lru_cache(maxsize=None)
def _sweep_orphan_cgroups() -> None:
    """Remove cgroups left by jail owners that died without closing them (their name carries the owner's pid)."""
    for parent in (CGROUP_ROOT, CGROUP_ROOT / "pids", CGROUP_ROOT / "memory"):
        for path in parent.glob("cwm-jail-*-*"):
            owner = path.name.split("-")[2]
            if not owner.isdigit() or _alive(int(owner)):
                continue
            try:
                for pid in (path / "cgroup.procs").read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
                path.rmdir()
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class Jail:
    """One jail: a cgroup (where possible) that every process started through it joins, plus namespaces and rlimits.

    Use as a context manager; `close()` kills whatever is still running inside and removes the cgroup.
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        self._cgroups: list[Path] = []
        layout = _cgroup_layout()
        if layout:
            _sweep_orphan_cgroups()
        name = f"cwm-jail-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        if layout == "v2":
            self._make_cgroup(CGROUP_ROOT / name, {"pids.max": limits.max_procs,
                                                  "memory.max": _mb(limits.memory_mb)})
        elif layout == "v1":
            self._make_cgroup(CGROUP_ROOT / "pids" / name, {"pids.max": limits.max_procs})
            self._make_cgroup(CGROUP_ROOT / "memory" / name, {"memory.limit_in_bytes": _mb(limits.memory_mb)})
        ns = _namespace_prefix()
        parts = ["pid-namespace" if ns else "process-group"]
        if ns and not limits.network:
            parts.append("no-network")
        elif not limits.network:
            parts.append("NETWORK-NOT-ISOLATED")
        parts.append("cgroup" if self._cgroups else "rlimits")
        if limits.writable is not None:
            parts.append("read-only-fs" if _can_confine_writes() else "FS-NOT-CONFINED")
        self.isolation = "+".join(parts)

    def _make_cgroup(self, path: Path, settings: dict[str, int | None]) -> None:
        try:
            path.mkdir()
        except OSError:
            return
        self._cgroups.append(path)
        for key, value in settings.items():
            if value is not None:
                (path / key).write_text(str(value))

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` wrapped so that it runs inside this jail."""
        lim = self.limits
        # The parent-death signal makes the jail die with the process that opened it, even by SIGKILL.
        wrapped = ["setpriv", "--pdeathsig", "KILL", "--"] if _has_pdeathsig() else []
        wrapped += _namespace_prefix()
        if lim.network and "--net" in wrapped:
            wrapped.remove("--net")
        rlimits = ["--core=0"]
        if lim.memory_mb:
            rlimits.append(f"--as={_mb(lim.memory_mb)}")
        if lim.file_size_mb:
            rlimits.append(f"--fsize={_mb(lim.file_size_mb)}")
        if lim.max_procs and not self._cgroups:
            rlimits.append(f"--nproc={lim.max_procs}")
        if lim.writable is not None and _can_confine_writes():
            wrapped += ["sh", "-c", _READ_ONLY_SCRIPT, "cwm-jail-fs", str(len(lim.writable)), *map(str, lim.writable)]
        wrapped += ["prlimit", *rlimits, "--", *argv]
        if self._cgroups:
            joins = "; ".join(f"echo $$ > {p}/cgroup.procs" for p in self._cgroups)
            wrapped = ["sh", "-c", f'{joins}; exec "$@"', "cwm-jail", *wrapped]
        return wrapped

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start `argv` inside the jail, in a new session (its own process group)."""
        return subprocess.Popen(self.argv(argv), start_new_session=True, **kwargs)

    def kill(self, proc: subprocess.Popen | None = None) -> None:
        """SIGKILL everything in the jail: the process group of `proc` and every process in the cgroup."""
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for cg in self._cgroups:
            try:
                pids = (cg / "cgroup.procs").read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def close(self) -> None:
        self.kill()
        for cg in self._cgroups:
            for _ in range(50):
                try:
                    cg.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # processes still exiting
                    self.kill()
                    time.sleep(0.02)
        self._cgroups = []

    def __enter__(self) -> "Jail":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_jailed(argv: list[str], *, cwd: str | os.PathLike, limits: Limits, env: dict[str, str] | None = None,
               input: str | None = None, max_output: int = 1 << 20) -> JailResult:
    """Run `argv` to completion inside a fresh jail; kill the whole process tree at the timeout.

    Output goes through temporary files (a child printing without end is cut by RLIMIT_FSIZE, not our memory);
    at most `max_output` bytes of each stream are kept, the tail.
    """
    start = time.monotonic()
    with Jail(limits) as jail, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = jail.popen(argv, cwd=cwd, env=env, stdout=out, stderr=err,
                          stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        timed_out = False
        try:
            if input is not None:
                try:
                    proc.stdin.write(input.encode())
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            jail.kill(proc)
            proc.wait()
        return JailResult(returncode=proc.returncode, stdout=_tail(out, max_output), stderr=_tail(err, max_output),
                          timed_out=timed_out, wall_s=time.monotonic() - start, isolation=jail.isolation)


def _tail(f, limit: int) -> str:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - limit))
    return f.read().decode("utf-8", errors="replace")


def _mb(mb: int | None) -> int | None:
    return None if mb is None else int(mb) << 20
