"""Sandboxes an episode runs in: a fresh Docker container, or a local process jail (weaker) without Docker.

Both give the same surface: `exec(command, timeout_s)` runs one shell command as the unprivileged agent in the
repository (`/repo`), `read_file` / `write_file` for the edit tools, `close()`. Each command is a fresh `bash -c`
(as in mini-swe-agent): no shell state carries over, and no process outlives its action — when the command
ends or its timeout expires, every process the agent started is killed inside the sandbox, not just the client
that waits for it (Docker: `kill -9 -1` as the agent, and from the host if that fails; local: the action's PID
namespace ends with it).

Docker containers: `--network none`, memory/CPU/pids limits, read-only root filesystem, size-limited tmpfs at
/repo, /tmp and the home directory (so filling the disk fills a tmpfs), non-root user, `no-new-privileges`,
labels `cwm-forager=1` plus the owning host pid. `sweep_containers()` removes the containers of collectors
that are no longer alive (a collector killed with SIGKILL cannot clean up after itself).
"""
from __future__ import annotations

import abc

import base64
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cwm.forager import images, testrun
from cwm.jail import Jail, Limits

REPO = images.REPO_DIR
LABEL = "cwm-forager"
OWNER_LABEL = "cwm-forager.owner"   # "{hostname}:{pid}" of the process that started the container
AGENT_ENV = {"PATH": images.PATH, "HOME": "/home/agent", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
             "GIT_AUTHOR_NAME": "agent", "GIT_AUTHOR_EMAIL": "agent@localhost",
             "GIT_COMMITTER_NAME": "agent", "GIT_COMMITTER_EMAIL": "agent@localhost", "TERM": "dumb"}
# PID 1 of a container: a bash loop, because it reaps orphans (a fork bomb's zombies would otherwise hold the
# pids limit) and, as PID 1, survives `kill -9 -1`, which is how every other process in the container is killed.
INIT = ["bash", "-c", "trap 'exit 0' TERM; while :; do sleep 86400 & wait $!; done"]
KILL_ALL = "kill -9 -1 2>/dev/null; true"
# One action: the command under `timeout`, then SIGKILL to whatever it left behind (background jobs, setsid
# escapees, a fork bomb): `kill -1` needs no fork, so it works even when the pids limit is exhausted.
# stderr joins stdout inside the container: docker's non-tty exec reads the two pipes separately and may deliver
# them out of order, so an observation would not show what the command printed in the order it printed it.
ACTION = 'timeout -s KILL {timeout} bash -c "$1" 2>&1; code=$?; kill -9 -1 2>/dev/null; exit $code'

GIT_START = ("git init -q . && printf '__pycache__/\\n*.pyc\\n.pytest_cache/\\n' > .git/info/exclude && "
             "git add -A && git commit -q -m start --no-gpg-sign")


@dataclass(frozen=True)
class SandboxLimits:
    memory_mb: int = 2048
    cpus: float = 1.0
    pids: int = 256
    repo_mb: int = 512       # tmpfs holding the repository copy
    tmp_mb: int = 256
    max_output_bytes: int = 1 << 20   # kept per command (head); a command printing past 16x this is killed


@dataclass
class ExecResult:
    output: str
    exit_code: int | None
    timed_out: bool
    seconds: float


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the agent's command): the episode ends with outcome sandbox_error."""


class Sandbox(abc.ABC):
    """What the episode loop needs from a sandbox. Subclasses: DockerSandbox, LocalSandbox."""
    isolation = "none"
    limits: SandboxLimits

    @abc.abstractmethod
    def exec(self, command: str, timeout_s: float = 120.0) -> ExecResult:
        """Run a bash command in the repository; kill everything it started when `timeout_s` expires."""

    def read_file(self, path: str) -> str | None:
        """The file's text (relative paths are under the repo), or None when it cannot be read whole."""
        r = self.exec(f"cat -- {shlex.quote(path)}", 30)
        too_big = len(r.output.encode()) >= self.limits.max_output_bytes
        return r.output if r.exit_code == 0 and not too_big else None

    def write_file(self, path: str, content: str) -> str | None:
        """Write `content` (creating parent folders); None on success, else the error text."""
        data = base64.b64encode(content.encode()).decode()
        q = shlex.quote(path)
        first = f"mkdir -p -- \"$(dirname -- {q})\" && : > {q}"
        chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)]
        for cmd in [first] + [f"printf %s {c} | base64 -d >> {q}" for c in chunks]:
            r = self.exec(cmd, 30)
            if r.exit_code != 0:
                return r.output.strip() or f"exit code {r.exit_code}"
        return None

    def begin(self, files: dict[str, str | None] | None = None) -> None:
        """Put the task's starting files in place, then start a fresh git history there (`patch()` diffs
        against it). The history has one commit, so the agent cannot read the pristine code from git."""
        for path, content in (files or {}).items():
            err = self.write_file(path, content) if content is not None else None
            if content is None:
                r = self.exec(f"rm -f -- {shlex.quote(path)}", 30)
                err = None if r.exit_code == 0 else r.output
            if err:
                raise SandboxError(f"writing the task's {path} failed: {err}")
        r = self.exec(f"rm -rf .git && {GIT_START}", 120)
        if r.exit_code != 0:
            raise SandboxError(f"git init in the sandbox failed: {r.output[-500:]}")

    def run_tests(self, test_ids: list[str] | None = None, timeout_s: float = 900.0) -> testrun.TestRun:
        def run(cmd: str, t: float) -> tuple:
            r = self.exec(cmd, t)
            return r.exit_code, r.output
        return testrun.run_tests_exec(run, timeout_s=timeout_s, test_ids=test_ids)

    def patch(self) -> str:
        """Everything the agent changed since the episode started, as a git diff (new files included)."""
        r = self.exec("git add -A >/dev/null 2>&1; git diff --cached --no-color HEAD", 60)
        return r.output if r.exit_code == 0 else ""

    @abc.abstractmethod
    def close(self) -> None:
        """Remove the sandbox and everything running in it (safe to call twice)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class DockerSandbox(Sandbox):
    """One fresh container from a repository image; removed on close (and by `sweep_containers` after a crash)."""
    isolation = "docker"

    def __init__(self, image: str, *, limits: SandboxLimits = SandboxLimits(), run_id: str = "",
                 dc=None):
        import docker
        self.limits = limits
        self.dc = dc or images.client()
        self.api = self.dc.api
        self.container = None
        try:
            self.container = self.dc.containers.run(
                image, INIT, detach=True, user=images.AGENT, working_dir=REPO, network_mode="none",
                mem_limit=f"{limits.memory_mb}m", memswap_limit=f"{limits.memory_mb}m",
                nano_cpus=int(limits.cpus * 1e9), pids_limit=limits.pids, read_only=True,
                security_opt=["no-new-privileges"], environment=AGENT_ENV,
                tmpfs={REPO: f"size={limits.repo_mb}m,uid={images.AGENT_UID},gid={images.AGENT_UID},mode=0755,exec",
                       "/tmp": f"size={limits.tmp_mb}m,mode=1777,exec",
                       "/home/agent": f"size=64m,uid={images.AGENT_UID},gid={images.AGENT_UID},mode=0755"},
                labels={LABEL: "1", OWNER_LABEL: owner_id(), f"{LABEL}.run": run_id})
            r = self.exec(f"cp -r {images.SOURCE_DIR}/. {REPO}/", 120)
            if r.exit_code != 0:
                raise SandboxError(f"preparing /repo in {image} failed: {r.output[-500:]}")
        except docker.errors.ImageNotFound as exc:
            self.close()
            raise SandboxError(f"image {image!r} not found: build it with `cwm-forager build-image`") from exc
        except BaseException:
            self.close()
            raise

    def exec(self, command: str, timeout_s: float = 120.0) -> ExecResult:
        # `timeout` inside kills the command's process group; the watchdog on this side kills everything else
        # (processes that left the group with setsid, or kept our stdout open) when the command outlives it.
        t0 = time.monotonic()
        argv = ["bash", "-c", ACTION.format(timeout=f"{max(timeout_s, 0.1):.3f}"), "cwm-action", command]
        try:
            exec_id = self.api.exec_create(self.container.id, argv, user=images.AGENT,
                                           workdir=REPO, environment=AGENT_ENV)["Id"]
            stream = self.api.exec_start(exec_id, stream=True)
        except Exception as exc:  # noqa: BLE001 - the engine or container is gone
            raise SandboxError(f"docker exec failed: {exc}") from exc
        fired = threading.Event()

        def watchdog() -> None:
            fired.set()
            self._kill_all()
        timer = threading.Timer(timeout_s + 2.0, watchdog)
        timer.daemon = True
        timer.start()
        out, overflow = _collect(stream, self.limits.max_output_bytes, on_overflow=self._kill_all)
        timer.cancel()
        seconds = time.monotonic() - t0
        code = self.api.exec_inspect(exec_id).get("ExitCode")
        timed_out = fired.is_set() or (code == 137 and seconds >= timeout_s - 0.05)
        if timed_out:
            self._kill_all()
            out += f"\n[command killed after {timeout_s:g}s timeout]"
        elif overflow:
            out += "\n[command killed: output limit]"
        return ExecResult(out, None if timed_out else code, timed_out, seconds)

    def _kill_all(self) -> None:
        """SIGKILL every process in the container except PID 1 (the init loop).

        From the host when we can (root, same machine as the engine): freeze the container, SIGKILL its
        processes by host pid, thaw — this works even when a fork bomb holds every pid, where a `docker exec`
        cannot start. Otherwise `kill -9 -1` inside, as the agent: every process the agent started is its own
        (no-new-privileges), and root in the container holds no capabilities."""
        if os.geteuid() == 0 and self._kill_from_host():
            return
        try:
            exec_id = self.api.exec_create(self.container.id, ["bash", "-c", KILL_ALL], user=images.AGENT)["Id"]
            self.api.exec_start(exec_id)
        except Exception:  # noqa: BLE001 - the container may already be gone
            pass

    def _kill_from_host(self) -> bool:
        cid = self.container.id
        try:
            init = self.api.inspect_container(cid)["State"]["Pid"]
            self.api.pause(cid)
        except Exception:  # noqa: BLE001 - gone, or cannot pause
            return False
        try:
            top = self.api.top(cid)
            col = top["Titles"].index("PID")
            for row in top["Processes"] or []:
                pid = int(row[col])
                if pid == init:
                    continue
                try:  # only processes of this container's cgroup: never a host process on a pid mismatch
                    if cid not in Path(f"/proc/{pid}/cgroup").read_text():
                        return False
                    os.kill(pid, signal.SIGKILL)
                except (FileNotFoundError, ProcessLookupError):
                    continue
            return True
        except Exception:  # noqa: BLE001 - engine on another machine, or the container went away
            return False
        finally:
            try:
                self.api.unpause(cid)
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except Exception:  # noqa: BLE001 - already removed
                pass
            self.container = None


def _collect(chunks, limit: int, on_overflow) -> tuple[str, bool]:
    """Join a stream of byte chunks, keeping the first `limit` bytes; past 16x the limit call `on_overflow` once."""
    kept, total, overflow = [], 0, False
    for chunk in chunks:
        if total < limit:
            kept.append(chunk[: limit - total])
        total += len(chunk)
        if total > 16 * limit and not overflow:
            overflow = True
            on_overflow()
    text = b"".join(kept).decode(errors="replace")
    if total > limit:
        text += f"\n[{total - limit} bytes of output not shown]"
    return text, overflow


def sweep_containers(dc=None, *, all_owners: bool = False) -> int:
    """Remove leftover `cwm-forager` containers whose owning process is gone (or all of them); returns how many."""
    dc = dc or images.client()
    host = socket.gethostname()
    removed = 0
    for c in dc.containers.list(all=True, filters={"label": f"{LABEL}=1"}, ignore_removed=True):
        owner = c.labels.get(OWNER_LABEL, "")
        h, _, pid = owner.rpartition(":")
        if not all_owners and h == host and pid.isdigit() and _alive(int(pid)):
            continue
        try:
            c.remove(force=True)
            removed += 1
        except Exception:  # noqa: BLE001 - removed concurrently
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class LocalSandbox(Sandbox):
    """A throwaway copy of a repository, commands run through `cwm.jail` (and bubblewrap where present).

    Weaker than Docker and reported as such in `isolation`: with bubblewrap the host filesystem is visible
    read-only and only the copy is writable (mounted at /repo); without it, commands run as `nobody` in the
    copy on the host filesystem. The copy lives on the host disk, bounded per file by RLIMIT_FSIZE only.
    """

    def __init__(self, source: str | os.PathLike, *, limits: SandboxLimits = SandboxLimits(),
                 python: str | None = None, bubblewrap: bool | None = None):
        self.limits = limits
        self.workdir = Path(tempfile.mkdtemp(prefix="cwm-forager-local-"))
        self.jail: Jail | None = None
        try:
            self.repo = self.workdir / "repo"
            shutil.copytree(source, self.repo, symlinks=True,
                            ignore=shutil.ignore_patterns(*images.EXCLUDE_DIRS - {"build", "dist"}, "*.pyc"))
            plugin_dir = self.workdir / "cwm"
            plugin_dir.mkdir()
            shutil.copy(Path(testrun.__file__).with_name(f"{testrun.PLUGIN_MODULE}.py"), plugin_dir)
            # the pristine source, seen at images.SOURCE_DIR as in Docker (the grader restores test files from it)
            shutil.copytree(self.repo, plugin_dir / Path(images.SOURCE_DIR).name, symlinks=True)
            (self.workdir / "home").mkdir()
            self.python_bin = str(Path(python or sys.executable).parent)  # its python must have pytest
            self.bwrap = shutil.which("bwrap") if bubblewrap is not False else None
            if bubblewrap and not self.bwrap:
                raise SandboxError("bubblewrap requested but `bwrap` is not installed (apt-get install bubblewrap)")
            self.drop_to = "nobody" if os.geteuid() == 0 and not self.bwrap else None
            if self.drop_to:
                subprocess.run(["chown", "-R", "nobody:nogroup", str(self.workdir)], check=True)
            self.jail = Jail(Limits(timeout_s=0, memory_mb=limits.memory_mb, max_procs=limits.pids,
                                    file_size_mb=limits.repo_mb, network=False))
            tool = "bubblewrap" if self.bwrap else f"subprocess-as-{self.drop_to or 'self'}"
            self.isolation = f"local:{tool}+{self.jail.isolation} (weaker than docker)"
        except BaseException:
            self.close()
            raise

    def _argv(self, command: str) -> list[str]:
        shell = ["bash", "-c", command]
        if self.bwrap:  # the agent is uid 1000 in a user namespace, over read-only host mounts, no capabilities
            w = str(self.workdir)
            return [self.bwrap, *_host_binds(), "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                    *self._python_bind(), "--bind", f"{w}/repo", REPO, "--ro-bind", f"{w}/cwm", testrun.PLUGIN_DIR, "--chdir", REPO,
                    "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                    "--unshare-user", "--uid", str(images.AGENT_UID), "--gid", str(images.AGENT_UID), *shell]
        # Without bubblewrap, root drops to `nobody`: the host filesystem is then protected by permissions only.
        drop = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if self.drop_to else []
        return [*drop, *shell]

    def _python_bind(self) -> list[str]:
        """The python environment stays visible when it lives under /tmp (a checkout there), which the private
        /tmp would otherwise hide."""
        env_root = Path(self.python_bin).parent
        return ["--ro-bind", str(env_root), str(env_root)] if env_root.is_relative_to("/tmp") else []

    def _env(self) -> dict[str, str]:
        env = dict(AGENT_ENV, PATH=f"{self.python_bin}:/usr/local/bin:/usr/bin:/bin")
        env["HOME"] = "/tmp" if self.bwrap else str(self.workdir / "home")
        return env

    def exec(self, command: str, timeout_s: float = 120.0) -> ExecResult:
        if not self.bwrap:  # paths in commands name /repo and /opt/cwm as in Docker: map them onto the copy
            command = re.sub(r"(?<![\w.-])/repo(?![\w.-])", str(self.repo),
                             command.replace(testrun.PLUGIN_DIR, str(self.workdir / "cwm")))
        t0 = time.monotonic()
        with tempfile.TemporaryFile() as out:
            proc = self.jail.popen(self._argv(command), cwd=self.repo, env=self._env(), stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                proc.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            self.jail.kill(proc) if timed_out else None
            proc.wait()
            size = out.seek(0, os.SEEK_END)
            out.seek(0)
            text = out.read(self.limits.max_output_bytes).decode(errors="replace")
        if size > self.limits.max_output_bytes:
            text += f"\n[{size - self.limits.max_output_bytes} bytes of output not shown]"
        if timed_out:
            text += f"\n[command killed after {timeout_s:g}s timeout]"
        return ExecResult(text, None if timed_out else proc.returncode, timed_out, time.monotonic() - t0)

    def close(self) -> None:
        if self.jail is not None:
            self.jail.close()
            self.jail = None
        shutil.rmtree(self.workdir, ignore_errors=True)


def _host_binds() -> list[str]:
    """bubblewrap arguments showing the host's folders read-only, leaving room for /repo and /opt/cwm."""
    args: list[str] = []
    for parent in ("/", "/opt/"):
        if parent != "/":
            args += ["--dir", parent]
        for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
            path = parent + name
            if parent == "/" and name in ("proc", "dev", "sys", "tmp", "opt", REPO.strip("/")):
                continue
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
    return args


def open_sandbox(backend: str, *, image: str | None = None, source: str | os.PathLike | None = None,
                 limits: SandboxLimits = SandboxLimits(), run_id: str = "", dc=None) -> Sandbox:
    """`docker` (needs `image`) or `local` (needs `source`, a repository folder)."""
    if backend == "docker":
        return DockerSandbox(image, limits=limits, run_id=run_id or uuid.uuid4().hex[:8], dc=dc)
    if backend == "local":
        if source is None:
            raise SandboxError("the local sandbox needs the repository folder (--repo DIR)")
        return LocalSandbox(source, limits=limits)
    raise SandboxError(f"unknown sandbox backend {backend!r}: use docker or local")
