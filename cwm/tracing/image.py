"""Trace a repository inside its forager image (`cwm-trace --image IMAGE`), where its dependencies live.

A unit server (child.UnitServer's protocol) runs as `python -m tracer serve` inside a fresh container of the image,
started with the forager sandbox's isolation (cwm/forager/sandbox.py): `--network none`, memory/CPU/pids limits,
read-only root filesystem, tmpfs at /repo, /tmp and the home folder, the unprivileged agent user,
`no-new-privileges`, the `cwm-forager` labels (so `cwm-forager sweep` removes what a killed run left).
The standard-library tracer is bind-mounted read-only; the server's own folder (its job, each unit's work dir,
HOME and records file) is bind-mounted read-write at the same path as on the host, so the parent reads the
records exactly as it does for a local run: same records, outcomes, resume and summary.

Invariants: one container per server, removed when the server closes (a server that died or hung is closed, its
unit recorded as crashed/timeout, as locally); the repository is copied from the image's pristine source
(`images.SOURCE_DIR`) into the container's /repo, then `files` are written over it (a task's buggy side), so the
editable install imports the code being traced.
"""
from __future__ import annotations

import base64
import json
import shlex
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cwm.forager import images
from cwm.forager.sandbox import INIT, LABEL, OWNER_LABEL, owner_id

from .child import TraceOptions, UnitServer, _pythonpath
from .target import _PROBE, TargetPython, TraceInputError
from .units import COLLECT_TIMEOUT_S, Unit, units_from_collection

REPO = images.REPO_DIR
PYTHON = f"{images.VENV}/bin/python"


@dataclass(frozen=True)
class ImageTarget:
    """Where units run: a repository image, the file overlay written over its source (None: delete), limits."""
    image: str
    files: dict = field(default_factory=dict, hash=False)
    cpus: float = 1.0
    tmp_mb: int = 512
    repo_mb: int = 1024

    def run_container(self, dc, options: TraceOptions, mounts: dict[str, tuple[str, str]]):
        """A started container of the image with the sandbox's isolation; `mounts`: host path -> (path, mode)."""
        memory = options.memory_mb or 2048
        uid = images.AGENT_UID
        try:
            container = dc.containers.run(
                self.image, INIT, detach=True, user=images.AGENT, working_dir=REPO, network_mode="none",
                mem_limit=f"{memory}m", memswap_limit=f"{memory}m", nano_cpus=int(self.cpus * 1e9),
                pids_limit=options.max_procs or 256, read_only=True, security_opt=["no-new-privileges"],
                environment={"PATH": images.PATH, "HOME": "/home/agent", "LANG": "C.UTF-8"},
                tmpfs={REPO: f"size={self.repo_mb}m,uid={uid},gid={uid},mode=0755,exec",
                       "/tmp": f"size={self.tmp_mb}m,mode=1777,exec",
                       "/home/agent": f"size=64m,uid={uid},gid={uid},mode=0755"},
                volumes={host: {"bind": path, "mode": mode} for host, (path, mode) in mounts.items()},
                labels={LABEL: "1", OWNER_LABEL: owner_id(), f"{LABEL}.run": "cwm-trace"})
        except images.docker.errors.ImageNotFound:
            raise TraceInputError(f"--image {self.image}: no such image; build it with "
                                  f"`cwm-forager build-image REPO --tag {self.image}`") from None
        try:
            code, out = container.exec_run(["bash", "-c", f"cp -r {images.SOURCE_DIR}/. {REPO}/"], user=images.AGENT)
            if code != 0:
                raise RuntimeError(f"preparing {REPO} in {self.image} failed: {out.decode(errors='replace')[-500:]}")
            for path, content in self.files.items():
                _write_file(container, path, content)
        except BaseException:
            container.remove(force=True)
            raise
        return container


def _write_file(container, path: str, content: str | None) -> None:
    """Write (None: delete) one file under /repo through exec: the engine refuses archives into a container whose
    root is read-only, even onto its tmpfs."""
    q = shlex.quote(path)
    if content is None:
        commands = [f"rm -f -- {q}"]
    else:
        data = base64.b64encode(content.encode()).decode()
        commands = [f"mkdir -p -- \"$(dirname -- {q})\" && : > {q}"]
        commands += [f"printf %s {data[i:i + 65536]} | base64 -d >> {q}" for i in range(0, len(data), 65536)]
    for command in commands:
        code, out = container.exec_run(["bash", "-c", command], user=images.AGENT, workdir=REPO)
        if code != 0:
            raise RuntimeError(f"writing {path} in a container of {container.image} failed: "
                               f"{out.decode(errors='replace')[-300:]}")


def docker_client():
    """The Docker client, or the one line saying how to get an engine."""
    try:
        return images.client()
    except images.ImageError as exc:
        raise TraceInputError(f"--image needs a Docker engine: {exc}") from None


def image_info(dc, image: str) -> images.ImageInfo:
    try:
        return images.image_info(dc, image)
    except images.ImageError as exc:
        raise TraceInputError(f"--image {image}: {str(exc).split(': ', 1)[-1]}") from None


def probe_and_collect(dc, target: ImageTarget, options: TraceOptions) -> tuple[TargetPython, list[Unit], str]:
    """The image's interpreter (version, pytest) and its tests, collected in a container of the image."""
    container = target.run_container(dc, options, {})
    try:
        python = _probe(container, target.image)
        cmd = ["timeout", "-s", "KILL", str(int(COLLECT_TIMEOUT_S)), PYTHON, "-m", "pytest", "--collect-only", "-q",
               "-p", "no:cacheprovider", "--continue-on-collection-errors", "--rootdir", REPO]
        result = container.exec_run(cmd, user=images.AGENT, workdir=REPO, demux=True,
                                    environment={"PYTHONDONTWRITEBYTECODE": "1", "HOME": "/home/agent"})
        stdout, stderr = (b.decode(errors="replace") if b else "" for b in result.output)
        units, note = units_from_collection(f"{target.image}:{REPO}", stdout, stderr, result.exit_code,
                                            result.exit_code == 137)
        return python, units, note
    finally:
        container.remove(force=True)


def _probe(container, image: str) -> TargetPython:
    code, out = container.exec_run([PYTHON, "-c", _PROBE], user=images.AGENT)
    words = out.decode(errors="replace").split()
    if code != 0 or len(words) != 4 or words[0] != "cwm-probe":
        raise TraceInputError(f"--image {image}: {PYTHON} does not run there; rebuild the image with "
                              "`cwm-forager build-image`")
    return TargetPython(PYTHON, words[2], None if words[3] == "-" else words[3])


def probe_image(dc, target: ImageTarget, options: TraceOptions) -> TargetPython:
    """The image's interpreter: its version and pytest's."""
    container = target.run_container(dc, options, {})
    try:
        return _probe(container, target.image)
    finally:
        container.remove(force=True)


class ImageUnitServer(UnitServer):
    """A UnitServer whose `python -m tracer serve` runs in a container of a repository image (`docker exec -i`)."""

    def __init__(self, *, mode: str, target: TargetPython, tracer_path: Path, root: Path | None,
                 options: TraceOptions, scratch: Path, paths: tuple[str, ...] = (), image: ImageTarget, dc=None):
        self.target, self.root, self.options = target, Path(REPO), options
        self.dir = Path(tempfile.mkdtemp(prefix="server-", dir=scratch))
        self.limits = options.limits(writable=self.dir)
        home = self.dir / "home"
        home.mkdir()
        job = self.dir / "serve.json"
        job.write_text(json.dumps({"mode": mode, "root": REPO, "paths": list(paths)}))
        _give_to_agent(self.dir)
        os.chmod(scratch, 0o755)
        self.log_path = self.dir.with_suffix(".log")
        self.dc = dc or images.client()
        tracer_dir = tracer_path / "tracer"
        try:
            self.container = image.run_container(self.dc, options, {str(tracer_dir): (str(tracer_dir), "ro"),
                                                                    str(self.dir): (str(self.dir), "rw")})
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.isolation = "docker:network-none+read-only-root+non-root+limits"
        env = {"PATH": images.PATH, "HOME": str(home), "TMPDIR": str(home), "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": _pythonpath(tracer_path, self.root)}
        argv = ["docker", "exec", "-i", "-u", images.AGENT, "-w", str(self.dir)]
        for k, v in env.items():
            argv += ["-e", f"{k}={v}"]
        argv += [self.container.id, PYTHON, "-m", "tracer", "serve", str(job)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, bufsize=0,
                                         start_new_session=True)
        self.pending = b""
        self.alive = True

    def _unit_dir(self) -> Path:
        tmp = super()._unit_dir()
        _give_to_agent(tmp)
        return tmp

    def close(self) -> None:
        if self.alive:
            self.alive = False
            try:
                self.container.remove(force=True)   # ends the server and all it started, whatever state it is in
            except Exception:  # noqa: BLE001 - already gone
                pass
            for pipe in (self.proc.stdin, self.proc.stdout):
                pipe.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            shutil.rmtree(self.dir, ignore_errors=True)
            self.log_path.unlink(missing_ok=True)


def _give_to_agent(path: Path) -> None:
    """The container's unprivileged user writes its records, HOME and work dir here."""
    for p in [path, *path.rglob("*")]:
        os.chown(p, images.AGENT_UID, images.AGENT_UID)


def server_factory(image: ImageTarget, dc=None):
    """What trace_units' ServerPool starts: an ImageUnitServer for `image`."""
    def make(**server_args) -> ImageUnitServer:
        return ImageUnitServer(**server_args, image=image, dc=dc)
    return make
