"""Committee of AI reviewers (cwm/rl/committee.py): the agreement-weighted aggregate by hand, failure modes against
a local fake server (timeouts, garbage, HTTP errors dropped with a logged reason), and real responses from two
reviewers (one small model under two prompts) on a local vLLM server."""
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cwm.rl.committee import Committee, ReviewerSpec, Verdict, aggregate, parse_verdict


def test_aggregate_by_hand():
    v = [Verdict("a", 0.9, [], []), Verdict("b", 0.8, [], []), Verdict("c", 0.1, [], [])]
    score, agreement = aggregate(v, {})
    # agreements 0.55, 0.6, 0.25 weigh the scores: (0.55·0.9 + 0.6·0.8 + 0.25·0.1) / 1.4
    assert score == pytest.approx(1.0 / 1.4)
    assert agreement == pytest.approx(1 - (0.1 + 0.8 + 0.7) / 3)
    assert aggregate(v[:1], {}) == (0.9, None) and aggregate([], {}) == (None, None)
    # a recipe weight counts: b twice as heavy
    s2, _ = aggregate(v[:2], {"b": 2.0})
    assert s2 == pytest.approx((0.9 + 2 * 0.8) / 3)
    # full disagreement: every agreement is 0, the plain weighted mean
    assert aggregate([Verdict("a", 0.0, [], []), Verdict("b", 1.0, [], [])], {})[0] == 0.5


def test_parse_verdict():
    v = parse_verdict("r", 'Sure! {"note": 1} then {"score": 7, "tests": ["assert f(1) == 2", "f(1)", "assert ("],'
                           ' "issues": ["x"]} trailing')
    assert (v.score, v.tests, v.issues) == (0.7, ["assert f(1) == 2"], ["x"])
    for bad in ("no json here", '{"score": 11}', '{"score": "high"}', '{"score": true}', ""):
        with pytest.raises(Exception, match="garbage"):
            parse_verdict("r", bad)


class FakeReviewers:
    """Chat-completions server whose model name picks a behaviour: good-N answers score N, slow sleeps, garbage
    answers prose, broken returns HTTP 500, notjson returns a non-JSON body."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                model = body["model"]
                if model == "slow":
                    time.sleep(3)
                if model == "broken":
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"engine died")
                    return
                if model == "notjson":
                    data = b"<html>proxy error</html>"
                else:
                    content = ("I think it is fine." if model == "garbage" else
                               json.dumps({"score": int(model.split("-")[1]) if "-" in model else 5,  # slow: 5
                                           "tests": [f"assert f({model[-1]})"]}))
                    data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_failing_reviewers_are_dropped_with_a_logged_reason(caplog):
    fake = FakeReviewers()
    try:
        names = ["good-8", "good-9", "slow", "garbage", "broken", "notjson"]
        reviewers = [ReviewerSpec(name=n, base_url=fake.url, model=n) for n in names]
        reviewers.append(ReviewerSpec(name="nobody", base_url="http://127.0.0.1:9/v1", model="x"))
        with caplog.at_level(logging.WARNING, logger="cwm.rl.committee"):
            t0 = time.monotonic()
            result = Committee(reviewers, timeout_s=1.0).review("write f", "def f(x): return x")
            wall = time.monotonic() - t0
    finally:
        fake.close()
    assert [v.reviewer for v in result.verdicts] == ["good-8", "good-9"]
    assert result.score == pytest.approx(0.85) and result.agreement == pytest.approx(0.9)
    reasons = dict(result.dropped)
    assert set(reasons) == {"slow", "garbage", "broken", "notjson", "nobody"}
    assert "timed out" in reasons["slow"] and "HTTP 500" in reasons["broken"]
    assert "garbage" in reasons["garbage"] and "garbage" in reasons["notjson"]
    assert "cannot reach" in reasons["nobody"]
    assert wall < 2.9  # the slow reviewer was not waited for
    assert all(f"reviewer {n} dropped" in caplog.text for n in reasons)
    assert result.tests == ["assert f(8)", "assert f(9)"]  # the proposed tests, for the executor's pool


def test_committee_config_bounds():
    from cwm.rl.committee import CommitteeConfig, load_term

    assert load_term(CommitteeConfig()) is None
    with pytest.raises(ValueError, match=">= 2"):
        load_term(CommitteeConfig(reviewers=[ReviewerSpec("a", "http://x", "m")], weight=1.0), other_weight=1.0)
    with pytest.raises(ValueError, match="no reviewers"):
        load_term(CommitteeConfig(weight=0.5))


@pytest.fixture(scope="module")
def reviewer_model(tmp_path_factory):
    """A small random Llama with a BPE tokenizer that can spell JSON verdicts (head_dim 32 for vLLM's CPU
    attention); the server constrains its replies to the verdict schema, so random weights still answer."""
    from stand_ins import save_tiny_llama

    texts = ['{"score": 7, "tests": ["assert add(1, 2) == 3"], "issues": ["none"]}\n',
             "def add(a, b):\n    return a + b\n", "0123456789 []{}:,\""] * 40
    return save_tiny_llama(tmp_path_factory.mktemp("reviewer"), texts, max_positions=1024)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_committee_of_two_prompts_on_a_real_vllm_server(reviewer_model, vllm_server_for, caplog):
    server = vllm_server_for(reviewer_model, max_model_len=1024)
    reviewers = [ReviewerSpec(name=p, base_url=server.base_url, model=server.model, prompt=p, api="completions",
                              structured=True, max_tokens=160) for p in ("correctness", "tests")]
    reviewers.append(ReviewerSpec(name="unconstrained", base_url=server.base_url, model=server.model,
                                  api="completions", max_tokens=8))  # random weights, free text: garbage
    committee = Committee(reviewers, timeout_s=120)
    candidates = ["def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n"]
    with caplog.at_level(logging.WARNING, logger="cwm.rl.committee"):
        results = [committee.review("Write add(a, b) returning the sum.", c) for c in candidates]
    for r in results:
        # a structured reply can still be cut at max_tokens mid-object: then that reviewer is dropped too
        names = {v.reviewer for v in r.verdicts}
        assert names <= {"correctness", "tests"} and "unconstrained" in dict(r.dropped)
        print(f"committee: score {r.score}, agreement {r.agreement}, verdicts "
              f"{[(v.reviewer, v.score) for v in r.verdicts]}, dropped {r.dropped}")
        if len(r.verdicts) == 2:
            assert r.score == pytest.approx(aggregate(r.verdicts, {})[0])
            assert r.agreement == pytest.approx(1 - abs(r.verdicts[0].score - r.verdicts[1].score))
    assert any(len(r.verdicts) == 2 for r in results), [r.dropped for r in results]
    assert "reviewer unconstrained dropped" in caplog.text


@pytest.mark.timeout(300)
def test_trainer_adds_the_committee_term_and_logs_it(tmp_path):
    import yaml

    from rl_helpers import output_prediction_recipe
    from cwm.rl.recipe import load_recipe
    from cwm.rl.train import train

    fake = FakeReviewers()
    try:
        recipe = output_prediction_recipe(
            tmp_path, 4, "def f(x):\n    return x % 2\n", steps=1, groups_per_step=2, group_size=2,
            committee={"weight": 0.5, "timeout_s": 5, "reviewers": [
                {"name": "a", "base_url": fake.url, "model": "good-8"},
                {"name": "b", "base_url": fake.url, "model": "good-6"},
                {"name": "c", "base_url": fake.url, "model": "garbage"}]})
        (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        train(load_recipe(str(tmp_path / "recipe.yaml")), progress=False)
    finally:
        fake.close()
    (m,) = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    # agreement 0.8 each: score (0.8 + 0.6) / 2; the garbage reviewer dropped on each of the 4 episodes
    assert m["committee/score"] == pytest.approx(0.7) and m["committee/agreement"] == pytest.approx(0.8)
    assert m["committee/dropped"] == 4.0


def test_committee_term_moves_each_reward_by_its_own_score():
    """The shaping itself, on a stand-in committee whose verdict depends on the episode: reward + w·(score − 0.5),
    no change where every reviewer was dropped, the originals untouched (they keep the sparse reward for logs)."""
    from types import SimpleNamespace

    from cwm.rl.committee import shape_trajectories
    from cwm.rl.rollout import Trajectory

    class Stand_in:
        def review(self, task, text):
            score = {"good": 0.9, "bad": 0.2}.get(text)
            return SimpleNamespace(score=score, agreement=None if score is None else 1.0,
                                   dropped=[] if score is not None else ["a: timed out"])

    tokenizer = SimpleNamespace(decode=lambda ids, **kw: {1: "good", 2: "bad", 3: "???"}[ids[0]])
    trajs = [Trajectory("e", 0, 0, [i], [1], [0.0], 0, reward=r) for i, r in ((1, 1.0), (2, -1.0), (3, -1.0))]
    shaped, m = shape_trajectories(Stand_in(), trajs, tokenizer, 0.5)
    assert [t.reward for t in shaped] == pytest.approx([1.0 + 0.5 * 0.4, -1.0 - 0.5 * 0.3, -1.0])
    assert [t.reward for t in trajs] == [1.0, -1.0, -1.0]
    assert m == {"committee/score": pytest.approx(0.55), "committee/agreement": 1.0, "committee/dropped": 1.0}
