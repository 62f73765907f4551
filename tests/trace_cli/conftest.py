"""Fixtures for the cwm-trace tests; helpers live in trace_cli_helpers (importable: this folder is put on sys.path,
as --import-mode=importlib does not)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trace_cli_helpers import SHOP, cli, fast_python  # noqa: E402


@pytest.fixture(scope="session")
def target_python() -> str:
    return fast_python()


@pytest.fixture(scope="session")
def traced_shop(tmp_path_factory, target_python) -> Path:
    """examples/shop traced once, uninterrupted: the reference for several tests."""
    out = tmp_path_factory.mktemp("shop") / "traces"
    proc = cli(SHOP, "-o", out, "--workers", "2", "--python", target_python)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


MIXED_FILES = {
    "mixed/__init__.py": (
        "import sys\n\n\n"
        "def total(xs):\n    s = 0\n    for x in xs:\n        s += x\n    return s\n\n\n"
        "def where():\n    return sys.prefix\n"),
    "tests/test_mixed.py": (
        "import os, socket, pytest\nfrom mixed import total, where\n\n\n"
        "def test_total():\n    assert total([1, 2, 3]) == 6\n\n\n"
        "def test_total_wrong():\n    assert total([1, 2]) == 4\n\n\n"
        "@pytest.mark.skip(reason='not today')\ndef test_skipped():\n    pass\n\n\n"
        "@pytest.fixture\ndef broken():\n    raise RuntimeError('fixture broke')\n\n\n"
        "def test_error(broken):\n    pass\n\n\n"
        "def test_inside_the_image():\n    assert where() == '/opt/venv'\n\n\n"
        "def test_isolated():\n    assert os.getuid() != 0\n"
        "    assert [name for _, name in socket.if_nameindex()] == ['lo']\n"
        "    with pytest.raises(OSError):\n        open('/opt/venv/planted', 'w')\n"),
    "pyproject.toml": ('[project]\nname = "mixed"\nversion = "0.1"\n\n[build-system]\nrequires = ["setuptools"]\n'
                       'build-backend = "setuptools.build_meta"\n\n[tool.setuptools]\npackages = ["mixed"]\n'),
}


def build_tagged(docker_client, files: dict[str, str], name: str, root: Path) -> str:
    """A repository image of `files`, tagged by a hash of them, the base and the image code; built once."""
    import hashlib

    from cwm.forager import images

    base = images.ensure_base_image(docker_client)
    h = hashlib.sha256(base.encode())
    for rel in sorted(files):
        h.update(rel.encode() + files[rel].encode())
    h.update(Path(images.__file__).read_bytes())
    tag = f"cwm-test-{name}:{h.hexdigest()[:12]}"
    try:
        docker_client.images.get(tag)
    except Exception:  # noqa: BLE001 - not built yet
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        images.build_image(docker_client, root, tag, base=base, log=lambda _: None)
    return tag


@pytest.fixture(scope="session")
def mixed_image(docker_client, tmp_path_factory) -> str:
    """A fixture repository with passing, failing, skipped and erroring tests, and tests that pass only inside its
    image's venv and sandbox (non-root, no network interface but loopback, read-only root)."""
    return build_tagged(docker_client, MIXED_FILES, "mixed", tmp_path_factory.mktemp("mixed") / "mixed")


@pytest.fixture(scope="session")
def shop_image(docker_client, tmp_path_factory) -> str:
    """examples/shop (the demo repository) as a forager image."""
    files = {str(p.relative_to(SHOP)): p.read_text() for p in sorted(SHOP.rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")}
    return build_tagged(docker_client, files, "shop", tmp_path_factory.mktemp("shop") / "shop")


@pytest.fixture(scope="session")
def shop_tasks(docker_client, shop_image, tmp_path_factory) -> Path:
    """Two validated mutate-fix tasks of examples/shop, written as `cwm-forager tasks` writes them."""
    from cwm.forager import images
    from cwm.forager.sandbox import DockerSandbox
    from cwm.forager.tasks import generate_mutate_fix, write_tasks

    info = images.image_info(docker_client, shop_image)
    tasks = generate_mutate_fix(shop_image, info.repo, info.commit, info.passing, 2, seed=0, workers=2,
                                open_sandbox=lambda: DockerSandbox(shop_image, dc=docker_client))
    assert len(tasks) == 2
    path = tmp_path_factory.mktemp("tasks") / "tasks.jsonl"
    write_tasks(tasks, path)
    return path
