"""`.ci/setup.sh` (what `make demo` and `make test` run first), on a machine made of stubs: PATH holds only the
commands each case gives it, so the real engine, packages and root are never touched. Where something cannot be had
the script must stop at once with one line naming what is missing and the command that fixes it; where everything is
there it must say so, showing the base-image builder's progress but not its tag twice."""
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASH = shutil.which("bash")
REAL = ("dirname", "mktemp", "tee", "sed", "tail", "rm", "cat")


def stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(0o755)


def machine(tmp_path: Path, *, root: bool, present: tuple[str, ...], docker_up: bool, apt: bool = True) -> dict:
    """The environment of a stub machine: `present` are the installed tools, `docker_up` whether `docker info` works."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in REAL:
        os.symlink(shutil.which(name), bin_dir / name)
    stub(bin_dir, "id", f'echo {0 if root else 1000}')
    stub(bin_dir, "sudo", "exit 1")
    stub(bin_dir, "pgrep", "exit 1")
    stub(bin_dir, "docker", f'[ "$1" = version ] && echo 99.0 && exit 0; exit {0 if docker_up else 1}')
    for name in present:
        stub(bin_dir, name, "exit 0")
    if apt:
        stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {tmp_path}/apt.log; exit 1')
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    stub(venv / "bin", "cwm-forager", 'echo "bootstrapping the base image"; echo cwm-forager-base:0123abcd')
    return {"env": {"PATH": str(bin_dir), "HOME": str(tmp_path), "USER": "someone"}, "venv": str(venv)}


def setup(m: dict) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, str(ROOT / ".ci" / "setup.sh"), m["venv"]], env=m["env"], capture_output=True,
                          text=True, timeout=60)


def test_missing_tools_without_root_stop_with_the_install_command(tmp_path):
    proc = setup(machine(tmp_path, root=False, present=(), docker_up=False))
    # the script also looks for /usr/sbin/debootstrap, outside PATH
    missing = "docker.io bubblewrap" if os.path.exists("/usr/sbin/debootstrap") else "docker.io debootstrap bubblewrap"
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"setup: missing {missing} (not root, no passwordless sudo): run "
                                        f"`sudo apt-get install -y {missing} && sudo bash .ci/setup.sh`"]
    assert not (tmp_path / "apt.log").exists()


def test_no_package_manager_says_so(tmp_path):
    proc = setup(machine(tmp_path, root=True, present=("dockerd",), docker_up=False, apt=False))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["setup: missing bubblewrap and no apt-get here: install them with your "
                                        "package manager, then rerun"]


def test_root_runs_apt_get_for_what_is_missing_and_stops_when_it_fails(tmp_path):
    proc = setup(machine(tmp_path, root=True, present=("dockerd",), docker_up=False))
    assert (tmp_path / "apt.log").read_text().splitlines()[0] == "apt-get update -qq"
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["setup: apt-get update failed (no network to the Debian mirror?): run "
                                        "`sudo apt-get install -y bubblewrap && sudo bash .ci/setup.sh` and read its error"]


def test_engine_down_without_root_names_the_command(tmp_path):
    proc = setup(machine(tmp_path, root=False, present=("dockerd", "bwrap", "debootstrap"), docker_up=False))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["setup: no Docker engine running (not root, no passwordless sudo): run "
                                        "`sudo bash .ci/setup.sh`"]


def test_everything_there_builds_or_finds_the_base_image_and_says_ready(tmp_path):
    proc = setup(machine(tmp_path, root=False, present=("dockerd", "bwrap", "debootstrap"), docker_up=True))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "bootstrapping the base image",
        "setup: Docker 99.0, debootstrap, bubblewrap, base image cwm-forager-base:0123abcd: ready"]
