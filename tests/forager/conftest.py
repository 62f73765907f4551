"""Fixtures for the forager tests: a Docker engine (or a printed skip), the base image, a small demo repository
and its image, and sandbox factories for both backends."""
from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cwm.forager import images
from cwm.forager.demo import ensure_demo_image, write_demo_repo
from cwm.forager.sandbox import DockerSandbox, LocalSandbox

@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory) -> Path:
    return write_demo_repo(tmp_path_factory.mktemp("demo") / "calc")


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    """Built on first use (debootstrap, 2-5 min) and found by its recipe hash afterwards. Failing to build it
    is a failure, not a skip: only a missing Docker engine skips the Docker tests."""
    return images.ensure_base_image(docker_client)


@pytest.fixture(scope="session")
def demo_image(docker_client, base_image, demo_repo) -> str:
    """The demo repository's image, built once and found again by its content hash."""
    return ensure_demo_image(docker_client, demo_repo, base_image)


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
