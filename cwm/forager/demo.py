"""A tiny repository (a calculator package and its tests) for demos, tests and benchmarks of the forager.

Small on purpose: its whole test suite runs in well under a second, so episode costs are the sandbox's own.
"""
from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

from cwm.forager import images

DEMO_FILES = {
    "calc/__init__.py": '''\
        """A tiny calculator package: the repository the sandbox and episode tests work on."""
        import math


        def add(a, b):
            return a + b


        def scale(values, factor=2):
            out = []
            for v in values:
                out.append(v * factor)
            return out


        def clamp(x, low, high):
            if x < low:
                return low
            if x > high:
                return high
            return x


        def hypot(a, b):
            return math.sqrt(a * a + b * b)
        ''',
    "tests/test_calc.py": '''\
        from calc import add, clamp, hypot, scale


        def test_add():
            assert add(2, 3) == 5


        def test_scale():
            assert scale([1, 2], 3) == [3, 6]


        def test_clamp():
            assert clamp(5, 0, 3) == 3
            assert clamp(-1, 0, 3) == 0
            assert clamp(2, 0, 3) == 2


        def test_hypot():
            assert hypot(3, 4) == 5.0
        ''',
    "pyproject.toml": '''\
        [project]
        name = "calc"
        version = "0.1"

        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [tool.setuptools]
        packages = ["calc"]
        ''',
}


def write_demo_repo(root: Path) -> Path:
    for rel, text in DEMO_FILES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return root


def demo_image_tag(base: str) -> str:
    """The demo image's tag: a hash of its files, the base image and the image-building code."""
    h = hashlib.sha256(base.encode())
    for rel in sorted(DEMO_FILES):
        h.update(rel.encode() + textwrap.dedent(DEMO_FILES[rel]).encode())
    for module in ("images.py", "cwm_pytest_report.py"):
        h.update((Path(images.__file__).parent / module).read_bytes())
    return f"cwm-forager-demo:{h.hexdigest()[:12]}"


def ensure_demo_image(dc, repo_dir: Path, base: str | None = None) -> str:
    """Build the demo image unless an image with its tag exists; returns the tag."""
    base = base or images.ensure_base_image(dc)
    tag = demo_image_tag(base)
    try:
        dc.images.get(tag)
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound: build it
        images.build_image(dc, write_demo_repo(repo_dir), tag, base=base)
    return tag


def repo_image_tag(repo: Path, base: str, name: str) -> str:
    """`name:HASH`, the hash of the repository's files (those an image build copies), the base image and the
    image-building code: a changed file, base or builder gives a new tag, an unchanged one finds the old image."""
    h = hashlib.sha256(base.encode())
    for path in sorted(p for p in Path(repo).rglob("*") if p.is_file()):
        rel = path.relative_to(repo)
        if images.EXCLUDE_DIRS.intersection(rel.parts[:-1]) or path.suffix == ".pyc":
            continue
        h.update(str(rel).encode() + b"\0" + path.read_bytes())
    for module in ("images.py", "cwm_pytest_report.py"):
        h.update((Path(images.__file__).parent / module).read_bytes())
    return f"{name}:{h.hexdigest()[:12]}"


def ensure_repo_image(dc, repo: Path, name: str, base: str | None = None) -> tuple[str, bool]:
    """The image of `repo` (built unless one with its content tag exists) and whether it was built now."""
    base = base or images.ensure_base_image(dc)
    tag = repo_image_tag(repo, base, name)
    try:
        dc.images.get(tag)
        return tag, False
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound: build it
        images.build_image(dc, repo, tag, base=base)
        return tag, True
