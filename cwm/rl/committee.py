"""A committee of AI reviewers (RLAIF): several models behind OpenAI-compatible endpoints review a candidate, and
their verdicts are aggregated, weighted by how much each agrees with the others, into one score in [0, 1].

Each reviewer is asked (its own prompt: a correctness reviewer, a test writer, …) for one JSON object:
`{"score": 0-10, "tests": ["assert ...", ...], "issues": ["...", ...]}`. Its score is score / 10.

Aggregation, for the reviewers that answered with a usable verdict (scores s_i, recipe weights b_i):
- agreement of reviewer i with the others: a_i = 1 − Σ_{j≠i} b_j |s_i − s_j| / Σ_{j≠i} b_j;
- committee score = Σ b_i a_i s_i / Σ b_i a_i (the plain weighted mean if every a_i is 0): a lone dissenter
  counts less than the reviewers who agree;
- committee agreement = 1 − weighted mean over pairs of |s_i − s_j| (1: unanimous); None with fewer than two.
The proposed tests of every usable verdict (deduplicated, compiled) are returned, to join the executor's test
pool (`cwm.rl.search.best_of_n`).

Invariant: a reviewer that times out, fails (HTTP error, refused connection) or answers garbage (no JSON object
with a number score in 0..10) is dropped from that review with its reason logged (logger `cwm.rl.committee`,
and in `CommitteeVerdict.dropped`); it never raises. With nobody left the score is None, and the RL shaping term
is 0 for that episode.

In RL (recipe `committee:`, off by default), the score is a shaping term like the reward model's:
reward + weight × (score − 0.5), and reward_model.weight + committee.weight < 2, so no pair of terms can rank
an unsolved episode above a solved one.
"""
from __future__ import annotations

import json
import logging
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger("cwm.rl.committee")

PROMPTS = {
    "correctness": ("You are a strict code reviewer. Judge whether the candidate correctly solves the task: "
                    "check edge cases and flag undefined behaviour. Reply with one JSON object only: "
                    '{"score": <integer 0-10, 10 = surely correct>, "issues": [<short strings>], '
                    '"tests": [<Python assert statements a correct solution passes>]}'),
    "tests": ("You write tests. Propose assert statements that a correct solution to the task must pass, state "
              "the invariants it must keep, then judge the candidate against them. Reply with one JSON object "
              'only: {"score": <integer 0-10>, "tests": [<assert statements>], "issues": [<short strings>]}'),
}
# What `structured` constrains a reply to (vLLM's `structured_outputs.regex`): a verdict object with no free
# whitespace (a weak model given a JSON schema pads the object with blank lines until max_tokens) and at most two
# short proposed tests.
VERDICT_REGEX = (r'\{"score": (10|[0-9])(, "tests": \["assert [A-Za-z0-9_(), =+\-*<>.\[\]]{1,60}"'
                 r'(, "assert [A-Za-z0-9_(), =+\-*<>.\[\]]{1,60}")?\])?\}')


@dataclass
class ReviewerSpec:
    name: str
    base_url: str                    # e.g. http://127.0.0.1:8000/v1
    model: str                       # the served model name
    prompt: str = "correctness"      # a key of PROMPTS, or the system prompt itself
    weight: float = 1.0
    api: str = "chat"                # chat: /chat/completions; completions: /completions with a plain-text prompt
    structured: bool = False         # constrain the reply to VERDICT_REGEX (vLLM's `structured_outputs`)
    max_tokens: int = 256


@dataclass
class CommitteeConfig:
    """The recipe's `committee:` section (off by default)."""
    reviewers: list[ReviewerSpec] = field(default_factory=list)
    weight: float = 0.0              # shaping weight; reward_model.weight + this < 2
    timeout_s: float = 60.0          # per reviewer and candidate; a reviewer slower than this is dropped


@dataclass
class Verdict:
    reviewer: str
    score: float                     # in [0, 1]
    tests: list[str]
    issues: list[str]


@dataclass
class CommitteeVerdict:
    score: float | None              # None: no reviewer gave a usable verdict
    agreement: float | None          # None: fewer than two usable verdicts
    verdicts: list[Verdict]
    dropped: list[tuple[str, str]]   # (reviewer, reason)
    tests: list[str]


class ReviewError(Exception):
    """One reviewer's answer cannot be used; the message is the logged reason."""


def parse_verdict(reviewer: str, text: str) -> Verdict:
    """The first JSON object in `text` that has a numeric score in 0..10."""
    decoder = json.JSONDecoder()
    i = text.find("{")
    while i != -1:
        try:
            obj, _ = decoder.raw_decode(text, i)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("score"), (int, float)) and not isinstance(
                obj["score"], bool) and 0 <= obj["score"] <= 10:
            tests = [t for t in obj.get("tests") or [] if isinstance(t, str) and _compiles(t)]
            issues = [str(x) for x in obj.get("issues") or []]
            return Verdict(reviewer, float(obj["score"]) / 10.0, tests, issues)
        i = text.find("{", i + 1)
    raise ReviewError(f"garbage: no JSON object with a score 0-10 in the reply {text[:120]!r}")


def _compiles(test: str) -> bool:
    try:
        compile(test, "test", "exec")
        return test.lstrip().startswith("assert")
    except SyntaxError:
        return False


def aggregate(verdicts: list[Verdict], weights: dict[str, float]) -> tuple[float | None, float | None]:
    """(committee score, committee agreement) by the agreement-weighted rule in the module docstring."""
    if not verdicts:
        return None, None
    if len(verdicts) == 1:
        return verdicts[0].score, None
    s = [v.score for v in verdicts]
    b = [weights.get(v.reviewer, 1.0) for v in verdicts]
    agree = []
    for i in range(len(s)):
        others = sum(b[j] for j in range(len(s)) if j != i)
        agree.append(1.0 - sum(b[j] * abs(s[i] - s[j]) for j in range(len(s)) if j != i) / others)
    w = [bi * ai for bi, ai in zip(b, agree)]
    if sum(w) <= 0:
        w = b
    score = sum(wi * si for wi, si in zip(w, s)) / sum(w)
    pairs = [(b[i] * b[j], abs(s[i] - s[j])) for i in range(len(s)) for j in range(i + 1, len(s))]
    agreement = 1.0 - sum(pw * d for pw, d in pairs) / sum(pw for pw, _ in pairs)
    return score, agreement


class Committee:
    def __init__(self, reviewers: list[ReviewerSpec], timeout_s: float = 60.0):
        if not reviewers:
            raise ValueError("committee: no reviewers; add `reviewers: [{name, base_url, model}]`")
        names = [r.name for r in reviewers]
        if len(set(names)) != len(names):
            raise ValueError(f"committee: reviewer names {names} repeat; give each its own name")
        self.reviewers = reviewers
        self.timeout_s = timeout_s

    def review(self, task: str, candidate: str) -> CommitteeVerdict:
        """Every reviewer on one candidate, in parallel; never raises for a reviewer's failure."""
        with ThreadPoolExecutor(max_workers=len(self.reviewers)) as pool:
            outcomes = list(pool.map(lambda r: self._ask(r, task, candidate), self.reviewers))
        verdicts = [o for o in outcomes if isinstance(o, Verdict)]
        dropped = [(r.name, o) for r, o in zip(self.reviewers, outcomes) if isinstance(o, str)]
        for name, reason in dropped:
            log.warning("committee: reviewer %s dropped: %s", name, reason)
        score, agreement = aggregate(verdicts, {r.name: r.weight for r in self.reviewers})
        tests = list(dict.fromkeys(t for v in verdicts for t in v.tests))
        return CommitteeVerdict(score, agreement, verdicts, dropped, tests)

    def _ask(self, r: ReviewerSpec, task: str, candidate: str) -> Verdict | str:
        system = PROMPTS.get(r.prompt, r.prompt)
        user = f"Task:\n{task}\n\nCandidate:\n{candidate}\n\nYour JSON verdict:"
        url = r.base_url.rstrip("/")
        url = url if url.endswith("/v1") else url + "/v1"
        if r.api == "chat":
            body = {"model": r.model, "messages": [{"role": "system", "content": system},
                                                   {"role": "user", "content": user}]}
            route = "/chat/completions"
        else:
            body = {"model": r.model, "prompt": f"{system}\n\n{user}\n"}
            route = "/completions"
        body.update(max_tokens=r.max_tokens, temperature=0.0)
        if r.structured:
            body["structured_outputs"] = {"regex": VERDICT_REGEX}
        req = urllib.request.Request(url + route, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                reply = json.loads(resp.read())
            choice = reply["choices"][0]
            text = choice["message"]["content"] if r.api == "chat" else choice["text"]
            return parse_verdict(r.name, text or "")
        except ReviewError as e:
            return str(e)
        except (socket.timeout, TimeoutError):
            return f"timed out after {self.timeout_s:g}s"
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code} from {url + route}: {e.read()[:200]!r}"
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                return f"timed out after {self.timeout_s:g}s"
            return f"cannot reach {url + route}: {reason}"
        except (ValueError, KeyError, IndexError, TypeError) as e:  # not JSON, or not a completion's layout
            return f"garbage: {type(e).__name__}: {e}"[:300]
        except OSError as e:  # connection reset mid-reply and the like
            return f"connection failed: {e}"


def load_term(cfg: CommitteeConfig, other_weight: float = 0.0) -> Committee | None:
    """The recipe's committee, or None when the term is off; checks the joint weight bound."""
    if cfg.weight <= 0:
        return None
    if cfg.weight + other_weight >= 2.0:
        raise ValueError(f"committee.weight {cfg.weight} + reward_model.weight {other_weight} >= 2: the shaping "
                         "terms could rank a failed episode above a solved one; lower them")
    return Committee(cfg.reviewers, cfg.timeout_s)


def shape_trajectories(committee: Committee | None, trajs: list, tokenizer, weight: float) -> tuple[list, dict]:
    """Copies of the trajectories with reward + weight × (committee score − 0.5) (0 where no reviewer answered),
    and the step's metrics: mean committee score and agreement, reviewers dropped."""
    import dataclasses

    if committee is None or not trajs:
        return trajs, {}
    texts = [tokenizer.decode(t.tokens, skip_special_tokens=False) for t in trajs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda text: committee.review("(see the episode)", text), texts))
    shaped = [dataclasses.replace(t, reward=t.reward + weight * ((r.score if r.score is not None else 0.5) - 0.5))
              for t, r in zip(trajs, results)]
    scores = [r.score for r in results if r.score is not None]
    agreements = [r.agreement for r in results if r.agreement is not None]
    return shaped, {"committee/score": sum(scores) / len(scores) if scores else None,
                    "committee/agreement": sum(agreements) / len(agreements) if agreements else None,
                    "committee/dropped": float(sum(len(r.dropped) for r in results))}
