"""The openai policy against a server with a small context (a loopback stand-in speaking vLLM's routes): the reply
budget fits what /v1/models reports, a flag caps it, and a context overflow or a server error ends that episode
with an outcome while the collection goes on."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cwm.forager.collect import CollectConfig, collect
from cwm.forager.episode import ContextOverflow, EpisodeConfig
from cwm.forager.policies import OpenAIPolicy
from cwm.forager.tasks import Task
from stand_ins import null_sandbox

CONTEXT = 1024


class SmallContextServer(BaseHTTPRequestHandler):
    """/v1/models with max_model_len, /tokenize counting 1 token per 4 characters, chat completions that
    refuse (400, vLLM's wording) a prompt + max_tokens over the context, and a 500 for a statement saying FAIL."""
    requests: list[dict] = []

    def _send(self, code: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self._send(200, {"object": "list", "data": [{"id": "tiny", "object": "model", "max_model_len": CONTEXT}]})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        count = sum(len(m["content"]) for m in body.get("messages", [])) // 4
        if self.path == "/tokenize":
            return self._send(200, {"count": count, "max_model_len": CONTEXT})
        type(self).requests.append(body)
        if "FAIL" in json.dumps(body["messages"]):
            return self._send(500, {"error": "engine dead"})
        if count + body["max_tokens"] > CONTEXT:
            return self._send(400, {"object": "error", "message": f"This model's maximum context length is {CONTEXT} "
                                    f"tokens. However, you requested {count + body['max_tokens']} tokens."})
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": "I am not sure."}}],
                         "usage": {"total_tokens": count + 5}})

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    SmallContextServer.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SmallContextServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


NullSandbox = null_sandbox()


def task(name: str, statement: str) -> Task:
    return Task(id=name, kind="mutate-fix", repo="r", commit=None, image="none", statement=statement,
                fail_to_pass=[], pass_to_pass=[], mutation=None)


def test_reply_budget_fits_the_servers_context(server):
    messages = [{"role": "user", "content": "x" * 400}]          # 100 tokens by the server's count
    assert OpenAIPolicy(server, "tiny").reply_budget(messages) == CONTEXT // 4
    assert OpenAIPolicy(server, "tiny", max_reply_tokens=50).reply_budget(messages) == 50
    assert OpenAIPolicy(server, "tiny", max_reply_tokens=5000).reply_budget(messages) == CONTEXT - 100
    with pytest.raises(ContextOverflow):
        OpenAIPolicy(server, "tiny").reply_budget([{"role": "user", "content": "x" * 4 * CONTEXT}])
    OpenAIPolicy(server, "tiny", max_reply_tokens=5000).act(messages)
    assert SmallContextServer.requests[-1]["max_tokens"] == CONTEXT - 100
    # the server's own refusal (vLLM's 400 wording) is a context overflow too, not a crash
    with pytest.raises(ContextOverflow, match="maximum context length"):
        OpenAIPolicy(server, "tiny")._request("POST", "/chat/completions", {"messages": messages, "max_tokens": 2048})


def test_overflow_and_server_errors_end_their_episode_and_collection_goes_on(server, tmp_path):
    tasks = [task("long", "y" * 4 * CONTEXT), task("broken", "FAIL please"), task("fine", "Fix the bug.")]
    summary = collect(tasks, lambda: OpenAIPolicy(server, "tiny", retries=0, max_reply_tokens=2048),
                      lambda t: NullSandbox(), tmp_path / "out",
                      CollectConfig(workers=2, episode=EpisodeConfig(max_turns=3)), show_progress=False)
    assert summary["episodes"] == 3
    # the long statement never fits: token_limit; the 500: policy_error; the chatty reply: format_error
    assert summary["outcomes"] == {"token_limit": 1, "policy_error": 1, "format_error": 1}, summary
    # no request ever asked for more than the context leaves
    for body in SmallContextServer.requests:
        assert sum(len(m["content"]) for m in body["messages"]) // 4 + body["max_tokens"] <= CONTEXT
