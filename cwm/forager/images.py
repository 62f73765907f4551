"""Docker images for episodes: a registry-free base image and one image per repository.

The base is a Debian minbase root filesystem made by `debootstrap` and loaded with `docker import`, so no
registry is needed. Its tag carries a hash of the recipe, and the root filesystem is also kept as a tarball in
the cache directory: a wiped Docker store re-imports in seconds instead of re-bootstrapping.

A repository image is the base plus a venv with the repository installed (editable) and pytest, the pristine
source at `SOURCE_DIR`, a pytest plugin that reports per-test outcomes, and `/opt/cwm/image.json` (also the
`cwm-forager.image` label) naming the test command and the tests that pass. Episodes copy the source into a
fresh tmpfs at `REPO_DIR`, so the editable install points at the copy the agent edits.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import docker

from cwm.forager import testrun

CACHE_DIR = Path(os.environ.get("CWM_CACHE", Path.home() / ".cache" / "cwm-toolkit")) / "forager"
REPO_DIR = "/repo"
SOURCE_DIR = "/opt/cwm/repo"
CWM_DIR = "/opt/cwm"
VENV = "/opt/venv"
AGENT = "agent"
AGENT_UID = 1000
IMAGE_LABEL = "cwm-forager.image"
BUILD_LABEL = "cwm-forager.build"
BUILD_CA = "/tmp/cwm-build-ca.crt"
OWNER_LABEL = "cwm-forager.owner"   # as sandbox.py's: `sweep_containers` keeps a live builder's container
PATH = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXCLUDE_DIRS = {".git", ".hg", ".tox", ".nox", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache",
                "build", "dist", "node_modules"}


CHECKERS = ("ruff", "mypy", "pyright")   # what a composite reward may read; installed at build time only


class ImageError(RuntimeError):
    """An image could not be built; the message names the input and what to do."""


@dataclass(frozen=True)
class BaseRecipe:
    """Everything that decides the base root filesystem; its hash is the image tag."""
    suite: str = "bookworm"
    variant: str = "minbase"
    packages: tuple[str, ...] = ("python3", "python3-venv", "python3-pip", "git", "ca-certificates")
    mirror: str = "http://deb.debian.org/debian"
    user: str = AGENT
    venv_packages: tuple[str, ...] = ("pytest",)   # preinstalled in VENV: saves ~30 s per repository build
    revision: int = 2  # bump when the post-bootstrap steps below change

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True, default=list).encode()).hexdigest()[:16]

    @property
    def tag(self) -> str:
        return f"cwm-forager-base:{self.digest}"


@dataclass
class ImageInfo:
    """What `build-image` learned about a repository, stored in the image."""
    repo: str
    test_command: list[str]
    passing: list[str]
    failing: list[str] = field(default_factory=list)
    python: str = ""
    base: str = ""
    commit: str | None = None
    flaky: list[str] = field(default_factory=list)      # outcome flipped across the build's runs of the suite
    flaky_runs: int = 1                                 # how many times the suite ran at build time
    checkers: list[str] = field(default_factory=list)   # ruff / mypy / pyright installed in the venv

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def client() -> docker.DockerClient:
    """A Docker client, or ImageError saying how to start an engine."""
    try:
        c = docker.from_env(timeout=300)
        c.ping()
        return c
    except Exception as exc:  # noqa: BLE001 - docker raises several kinds here
        raise ImageError(f"no Docker engine reachable ({exc}); start one (see .ci/docker-up.sh) or use --sandbox local")


def ensure_base_image(dc: docker.DockerClient, recipe: BaseRecipe = BaseRecipe(), *,
                      log: Callable[[str], None] = print) -> str:
    """The tag of the base image, importing it from the cached tarball or bootstrapping it first."""
    try:
        dc.images.get(recipe.tag)
        return recipe.tag
    except docker.errors.ImageNotFound:
        pass
    tarball = CACHE_DIR / f"base-{recipe.digest}.tar"
    if not tarball.exists():
        _bootstrap_tarball(recipe, tarball, log)
    log(f"importing {tarball} as {recipe.tag}")
    t0 = time.monotonic()
    proc = subprocess.run(["docker", "import", "-c", f"ENV PATH={PATH}", "-c", "ENV LANG=C.UTF-8",
                           str(tarball), recipe.tag], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"docker import {tarball} failed: {proc.stderr.strip()}; delete it to rebuild")
    log(f"imported in {time.monotonic() - t0:.1f}s")
    return recipe.tag


def _bootstrap_tarball(recipe: BaseRecipe, tarball: Path, log: Callable[[str], None]) -> None:
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise ImageError("debootstrap not found: `apt-get install -y debootstrap`, or pass --base with any image "
                         "that has python3 and git")
    if os.geteuid() != 0:
        raise ImageError("debootstrap needs root: run `cwm-forager base-image` as root, or pass --base IMAGE")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cwm-base-", dir=tarball.parent) as tmp:
        root = Path(tmp) / "rootfs"
        log(f"debootstrap {recipe.suite} ({recipe.variant}) into {root}: takes 1-3 minutes")
        t0 = time.monotonic()
        proc = subprocess.run([debootstrap, f"--variant={recipe.variant}", f"--include={','.join(recipe.packages)}",
                               recipe.suite, str(root), recipe.mirror], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ImageError(f"debootstrap failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-800:]}")
        _add_user(root, recipe.user)
        _make_venv(root, recipe.venv_packages)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (root / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
        os.replace(partial, tarball)
        log(f"bootstrapped in {time.monotonic() - t0:.0f}s -> {tarball} ({tarball.stat().st_size >> 20} MiB)")


def _make_venv(root: Path, packages: tuple[str, ...]) -> None:
    """The venv repositories are installed into, with the test runner already in it (chroot, host network)."""
    env, ca_tar = _pip_passthrough()
    if ca_tar:
        with tarfile.open(fileobj=io.BytesIO(ca_tar)) as tf:
            tf.extractall(root, filter="data")
    env = {**env, "PATH": PATH, "HOME": "/root", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    cmd = f"python3 -m venv {VENV} && {VENV}/bin/pip install -q {' '.join(packages)}"
    proc = subprocess.run(["chroot", str(root), "bash", "-c", cmd], env=env, capture_output=True, text=True)
    (root / BUILD_CA.lstrip("/")).unlink(missing_ok=True)
    shutil.rmtree(root / "root/.cache", ignore_errors=True)
    if proc.returncode != 0:
        raise ImageError(f"installing {' '.join(packages)} into the base image failed: {proc.stderr[-800:]}")


def _add_user(root: Path, name: str) -> None:
    """The unprivileged user episodes run as (uid/gid AGENT_UID), written directly: no chroot needed."""
    with open(root / "etc/passwd", "a") as f:
        f.write(f"{name}:x:{AGENT_UID}:{AGENT_UID}::/home/{name}:/bin/bash\n")
    with open(root / "etc/group", "a") as f:
        f.write(f"{name}:x:{AGENT_UID}:\n")
    home = root / "home" / name
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, AGENT_UID, AGENT_UID)


def image_info(dc: docker.DockerClient, image: str) -> ImageInfo:
    """The ImageInfo recorded by `build_image`, or ImageError when `image` is not a repository image."""
    try:
        labels = dc.images.get(image).labels or {}
    except docker.errors.ImageNotFound:
        raise ImageError(f"image {image!r} not found: build it with `cwm-forager build-image REPO --tag {image}`")
    if IMAGE_LABEL not in labels:
        raise ImageError(f"image {image!r} has no {IMAGE_LABEL} label: build it with `cwm-forager build-image`")
    return ImageInfo(**json.loads(labels[IMAGE_LABEL]))


def _repo_tar(repo: Path) -> bytes:
    """The repository as a tar (owned by the agent), without VCS folders, caches and build outputs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        def keep(ti: tarfile.TarInfo) -> tarfile.TarInfo | None:
            if set(Path(ti.name).parts) & EXCLUDE_DIRS or ti.name.endswith(".pyc"):
                return None
            ti.uid = ti.gid = AGENT_UID
            ti.uname = ti.gname = ""
            return ti
        tf.add(str(repo), arcname="repo", filter=keep)
    return buf.getvalue()


def _install_script(extras: tuple[str, ...] = ("test", "tests", "testing")) -> str:
    """Shell run as root with network: venv, pytest, the repo (editable, with a test extra if it has one)."""
    reqs = ["requirements-test.txt", "test-requirements.txt", "requirements-tests.txt", "requirements_test.txt",
            "requirements/test.txt", "requirements/tests.txt", "tests/requirements.txt", "requirements-dev.txt"]
    try_extras = " || ".join(f"pip install -q -e '.[{e}]' 2>/dev/null" for e in extras)
    return f"""set -e
if ! id -u {AGENT} >/dev/null 2>&1; then  # a base from elsewhere: add the unprivileged user episodes run as
  echo "{AGENT}:x:{AGENT_UID}:{AGENT_UID}::/home/{AGENT}:/bin/bash" >> /etc/passwd
  echo "{AGENT}:x:{AGENT_UID}:" >> /etc/group
  mkdir -p /home/{AGENT} && chown {AGENT_UID}:{AGENT_UID} /home/{AGENT}
fi
[ -x {VENV}/bin/python ] || python3 -m venv {VENV}
export PATH={PATH} PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
pip install -q pytest
cd {REPO_DIR}
for r in {' '.join(reqs)}; do if [ -f "$r" ]; then pip install -q -r "$r" || echo "warning: $r did not install"; fi; done
if [ -f pyproject.toml ] || [ -f setup.py ] || [ -f setup.cfg ]; then
  {try_extras} || pip install -q -e .
fi
mkdir -p {CWM_DIR}
chown -R {AGENT_UID}:{AGENT_UID} {REPO_DIR}
"""


def build_image(dc: docker.DockerClient, repo: str | os.PathLike, tag: str, *, base: str | None = None,
                test_timeout_s: float = 900.0, log: Callable[[str], None] = print, flaky_runs: int = 3,
                checkers: tuple[str, ...] = ()) -> ImageInfo:
    """Install `repo` and its test dependencies on `base`, run its tests `flaky_runs` times, record what passes
    and which tests flip between runs (flaky: the grader re-runs them and gives reduced credit), install the
    reward's `checkers` (ruff, mypy, pyright) into the venv, tag the image."""
    unknown = sorted(set(checkers) - set(CHECKERS))
    if unknown:
        raise ImageError(f"unknown checker {unknown[0]!r}: --checkers takes {', '.join(CHECKERS)}")
    if flaky_runs < 1:
        raise ImageError(f"--flaky-runs {flaky_runs}: the suite must run at least once")
    repo = Path(repo).resolve()
    if not repo.is_dir():
        raise ImageError(f"{repo}: not a directory; pass the root of a Python repository")
    base = base or ensure_base_image(dc, log=log)
    commit = _git_head(repo)
    env, ca_tar = _pip_passthrough()
    container = dc.containers.create(base, command=["sleep", "infinity"], network_mode="host", user="root",
                                     labels={"cwm-forager": "1", BUILD_LABEL: tag, OWNER_LABEL: _owner()},
                                     working_dir="/",
                                     environment=env)
    try:
        container.start()
        container.put_archive("/", _repo_tar(repo))
        if ca_tar:
            container.put_archive("/", ca_tar)
        container.put_archive("/", _plugin_tar())
        log(f"installing {repo.name} and pytest into {base}")
        code, out = container.exec_run(["bash", "-c", _install_script()], user="root")
        if code != 0:
            raise ImageError(f"{repo}: installing it failed:\n{out.decode(errors='replace')[-2000:]}")
        if checkers:
            log(f"installing checkers: {', '.join(checkers)}")
            code, out = container.exec_run(["bash", "-c", f"PATH={PATH} pip install -q {' '.join(checkers)}"],
                                           user="root")
            if code != 0:
                raise ImageError(f"installing {', '.join(checkers)} failed:\n{out.decode(errors='replace')[-1500:]}")
        runs = []
        for k in range(flaky_runs):
            log(f"running its tests ({k + 1}/{flaky_runs})")
            result = testrun.run_tests_exec(lambda cmd, t: _exec(container, cmd, t), timeout_s=test_timeout_s)
            if not result.ran:
                raise ImageError(f"{repo}: its tests do not run under `{' '.join(testrun.TEST_COMMAND)}` "
                                 f"({result.summary}):\n{result.output[-2000:]}")
            runs.append(result)
        passing, failing, flaky = flaky_split(runs)
        if not passing:
            raise ImageError(f"{repo}: no test passes ({result.summary}); mutate-fix tasks need passing tests")
        py = _exec(container, "python --version", 30)[1].strip()
        info = ImageInfo(repo=repo.name, test_command=list(testrun.TEST_COMMAND), passing=passing,
                         failing=failing, python=py, base=base, commit=commit, flaky=flaky,
                         flaky_runs=flaky_runs, checkers=list(checkers))
        _exec(container, f"rm -f {BUILD_CA} && mv {REPO_DIR} {SOURCE_DIR} && mkdir -m 0755 {REPO_DIR} "
                         f"&& chown {AGENT_UID} {REPO_DIR}", 60, user="root")
        container.put_archive("/", _tar_of({f"{CWM_DIR.lstrip('/')}/image.json": info.to_json().encode()}))
        container.stop(timeout=1)
        container.commit(repository=tag.split(":")[0], tag=tag.split(":")[1] if ":" in tag else "latest",
                         conf={"Labels": {IMAGE_LABEL: info.to_json()}, "User": AGENT, "WorkingDir": REPO_DIR,
                               "Env": [f"PATH={PATH}", "LANG=C.UTF-8"], "Cmd": ["sleep", "infinity"]})
        log(f"tagged {tag}: {len(info.passing)} passing tests, {len(info.failing)} not passing, "
            f"{len(info.flaky)} flaky over {flaky_runs} runs")
        return info
    finally:
        container.remove(force=True)


def flaky_split(runs: list[testrun.TestRun]) -> tuple[list[str], list[str], list[str]]:
    """(passing, failing, flaky) over several runs of one suite: flaky = passed in some run and failed or
    errored in another; passing = passed in at least one run (flaky ones included, marked); failing = never."""
    ids = set().union(*(r.outcomes for r in runs))
    passing = sorted(t for t in ids if any(r.outcomes.get(t) == "passed" for r in runs))
    flaky = sorted(t for t in passing if any(r.outcomes.get(t) in ("failed", "error") for r in runs))
    failing = sorted(t for t in ids if t not in passing and any(r.outcomes.get(t) in ("failed", "error") for r in runs))
    return passing, failing, flaky


def _pip_passthrough() -> tuple[dict[str, str], bytes | None]:
    """The host's package-index settings for the build step: its index URL and its CA bundle (a proxy that
    re-signs TLS needs it). The bundle is copied to BUILD_CA and deleted before the image is committed."""
    env = {k: v for k, v in os.environ.items()
           if k in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_DEFAULT_TIMEOUT") and "file:" not in v}
    for var in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        bundle = os.environ.get(var)
        if bundle and Path(bundle).is_file():
            env.update(PIP_CERT=BUILD_CA, SSL_CERT_FILE=BUILD_CA)
            return env, _tar_of({BUILD_CA.lstrip("/"): Path(bundle).read_bytes()})
    return env, None


def _tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _exec(container, command: str, timeout_s: float, user: str = AGENT) -> tuple[int, str]:
    code, out = container.exec_run(["timeout", "-s", "KILL", str(int(timeout_s)), "bash", "-c", command],
                                   user=user, workdir=REPO_DIR if user == AGENT else "/",
                                   environment={"PATH": PATH, "HOME": "/tmp"})
    return code, out.decode(errors="replace")


def _plugin_tar() -> bytes:
    module = f"{testrun.PLUGIN_MODULE}.py"
    return _tar_of({f"{CWM_DIR.lstrip('/')}/{module}": Path(testrun.__file__).with_name(module).read_bytes()})


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _git_head(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 and (repo / ".git").exists() else None
