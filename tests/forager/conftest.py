"""Fixtures for the forager tests: a Docker engine (or a printed skip), the base image, a small demo repository
and its image, and sandbox factories for both backends."""
from __future__ import annotations

import hashlib
import json
import shutil
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cwm.forager import images
from cwm.forager.sandbox import DockerSandbox, LocalSandbox

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


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory) -> Path:
    return write_demo_repo(tmp_path_factory.mktemp("demo") / "calc")


@pytest.fixture(scope="session")
def docker_client():
    try:
        return images.client()
    except images.ImageError as exc:
        pytest.skip(f"no Docker engine: {exc}")


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    """Built on first use (debootstrap, 1-3 min) and cached by recipe hash afterwards."""
    try:
        return images.ensure_base_image(docker_client)
    except images.ImageError as exc:
        pytest.skip(f"cannot build the forager base image: {exc}")


@pytest.fixture(scope="session")
def demo_image(docker_client, base_image, demo_repo) -> str:
    """The demo repository's image, tagged by a hash of its files, the base and the build code."""
    h = hashlib.sha256(base_image.encode())
    for rel in sorted(DEMO_FILES):
        h.update(rel.encode() + (demo_repo / rel).read_bytes())
    for module in ("images.py", "cwm_pytest_report.py"):
        h.update((Path(images.__file__).parent / module).read_bytes())
    tag = f"cwm-forager-test-demo:{h.hexdigest()[:12]}"
    try:
        docker_client.images.get(tag)
    except Exception:  # noqa: BLE001 - not built yet
        images.build_image(docker_client, demo_repo, tag, base=base_image)
    return tag


BACKENDS = ["docker", "bubblewrap", "subprocess"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    if request.param == "bubblewrap" and not shutil.which("bwrap"):
        pytest.skip("bubblewrap not installed (apt-get install bubblewrap): local sandbox tested without it")
    return request.param


@pytest.fixture
def open_box(backend, request, demo_repo):
    """A function opening a fresh sandbox of the parametrized backend on the demo repository."""
    if backend == "docker":
        image = request.getfixturevalue("demo_image")
        dc = request.getfixturevalue("docker_client")
        return lambda **kw: DockerSandbox(image, dc=dc, **kw)
    return lambda **kw: LocalSandbox(demo_repo, bubblewrap=backend == "bubblewrap", **kw)


class _ScriptedChat(BaseHTTPRequestHandler):
    """A loopback server speaking /v1/chat/completions, answering from a script and recording requests."""
    script: list[str] = []
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if len(type(self).requests) == 1 and body.get("model") == "flaky":
            self.send_response(503)
            self.end_headers()
            return
        text = type(self).script.pop(0)
        out = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": text}}],
                          "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    _ScriptedChat.script, _ScriptedChat.requests = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _ScriptedChat
    server.shutdown()
