"""Search with the executor as judge: best-of-n with CodeT's dual agreement, reranking by a scorer, and a tree
search over agent turns. At inference: `cwm-eval codegen --search best-of-n|rerank` (`eval_codegen_search`
below); the functions take any policy, so the same code can generate rollouts.

Best-of-n (CodeT, Chen et al. 2022): sample n candidate programs and m tests (the tests are the policy's too, so
some are wrong); run every candidate on every test in the jail (`cwm.jail`), giving a pass matrix. Candidates
that pass exactly the same tests form a consensus set; a set's score is (number of candidates in it) × (number of
tests they pass), and the answer is a candidate of the best set. A wrong program rarely agrees with many others
on many tests; right ones agree with each other on the right tests. Invariant: the choice depends only on the
pass matrix (ties go to the earliest candidate), never on the hidden tests.

Reranking: order candidates by any scorer (the learned reward model, `cwm.rl.reward_model`, or a committee,
`cwm.rl.committee`); the first of the order is the answer.

Tree search over turns (`tree_search`): an episode of a multi-turn environment (`cwm.rl.env.Env`) is a path of
assistant turns. A node is the list of turns so far; it is expanded by sampling up to `branch` next turns from the
policy one at a time (stopping when the policy repeats a turn: a forced move is not paid for `branch` times),
each child evaluated by re-running its turns in a fresh environment (environments are deterministic
given their turns: a forager sandbox starts from the task's image every time) and valued by `value(messages,
info)` — by default the fraction of tests that passed in the last test run the episode saw, or a reward model.
The frontier's most valuable unfinished node is expanded next (best-first). The budget is the number of policy
turns sampled, the same unit as `budget` turns of independent episodes, so the two compare at equal cost.
"""
from __future__ import annotations

import heapq
import json
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from cwm.jail import Limits, run_jailed

# One jailed process per candidate: define it, then run each test in a copy of its namespace under a per-test
# alarm; print one JSON list of booleans. A candidate that does not even define cleanly passes nothing.
_MATRIX = """\
import json, signal
class _Timeout(BaseException):
    pass
def _alarm(*_):
    raise _Timeout()
signal.signal(signal.SIGALRM, _alarm)
per_test = float(open("per_test_s").read())
ns = {"__name__": "solution"}
try:
    signal.setitimer(signal.ITIMER_REAL, per_test)
    exec(compile(open("solution.py").read(), "solution.py", "exec"), ns)
    signal.setitimer(signal.ITIMER_REAL, 0)
    defined = True
except BaseException:
    defined = False
results = []
for test in json.load(open("tests.json")):
    ok = False
    if defined:
        try:
            signal.setitimer(signal.ITIMER_REAL, per_test)
            exec(compile(test, "test", "exec"), dict(ns))
            ok = True
        except BaseException:
            ok = False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    results.append(ok)
print("CWM_PASS_MATRIX " + json.dumps(results), flush=True)
"""
_MARK = "CWM_PASS_MATRIX "
_CODE_BLOCK = re.compile(r"```(?:python|py)?\n(.*?)```", re.S)


def extract_code(reply: str) -> str:
    """The first ```python block of a reply, else the whole reply (the codegen environment's rule)."""
    block = _CODE_BLOCK.search(reply)
    return block.group(1) if block else reply


def extract_tests(reply: str, entry: str) -> list[str]:
    """Assert statements about `entry` in a reply (one per line, the policy's proposed tests)."""
    tests = []
    for line in extract_code(reply).splitlines():
        line = line.strip()
        if line.startswith("assert ") and f"{entry}(" in line:
            try:
                compile(line, "test", "exec")
            except SyntaxError:
                continue
            tests.append(line)
    return tests


def pass_matrix(candidates: Sequence[str], tests: Sequence[str], *, limits: Limits | None = None,
                per_test_s: float = 2.0, workers: int = 2) -> list[list[bool]]:
    """passes[i][j]: candidate program i passes test j, run in the jail (one process per candidate)."""
    limits = limits or Limits(timeout_s=max(10.0, per_test_s * (len(tests) + 1) + 5), memory_mb=512, max_procs=16)

    def run(code: str) -> list[bool]:
        if not tests:
            return []
        with tempfile.TemporaryDirectory(prefix="cwm-search-") as work:
            Path(work, "solution.py").write_text(code)
            Path(work, "tests.json").write_text(json.dumps(list(tests)))
            Path(work, "per_test_s").write_text(str(per_test_s))
            Path(work, "matrix.py").write_text(_MATRIX)
            result = run_jailed([sys.executable, "-I", "matrix.py"], cwd=work, limits=limits)
        for line in reversed(result.stdout.splitlines()):  # the harness prints last; the verdict trusts the
            if line.startswith(_MARK):                      # candidate as far as the jail's exit code does
                row = json.loads(line[len(_MARK):])
                if isinstance(row, list) and len(row) == len(tests):
                    return [bool(x) for x in row]
        return [False] * len(tests)  # killed (time, memory) or printed over the marker: passes nothing

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(run, candidates))


def dual_agreement(passes: Sequence[Sequence[bool]]) -> list[float]:
    """CodeT's score of each candidate: |candidates passing exactly its tests| × |its tests|."""
    sets: dict[tuple[bool, ...], int] = {}
    for row in passes:
        sets[tuple(row)] = sets.get(tuple(row), 0) + 1
    return [float(sets[tuple(row)] * sum(row)) for row in passes]


def choose(scores: Sequence[float]) -> int:
    """Index of the best score, the earliest among equals."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def best_of_n(candidates: Sequence[str], tests: Sequence[str], **kw) -> tuple[int, list[float]]:
    """(index of the chosen candidate, every candidate's dual-agreement score). With no tests every score is 0
    and the first candidate is chosen: best-of-n never does worse than taking the first sample for lack of
    tests."""
    scores = dual_agreement(pass_matrix(candidates, tests, **kw)) if tests else [0.0] * len(candidates)
    return choose(scores), scores


def rerank(candidates: Sequence[str], scorer: Callable[[Sequence[str]], Sequence[float]]) -> tuple[int, list[float]]:
    """(index of the best candidate by `scorer`, the scores); e.g. a reward model's `score_texts`."""
    scores = [float(s) for s in scorer(candidates)]
    return choose(scores), scores


# -- tree search over turns -----------------------------------------------------------------------------------

_PYTEST_SUMMARY = re.compile(r"(\d+) (passed|failed|error|errors)\b")


def value_from_tests_run(messages: list[dict], info: dict) -> float | None:
    """Value of a partial episode from the tests it has run: the pass fraction in the last observation that
    holds a pytest summary ("3 passed, 1 failed"); None (unknown) when no test has run yet. A finished episode
    is valued by its reward (1 passed, 0 failed)."""
    if info.get("done"):
        return 1.0 if info.get("passed") else 0.0
    for m in reversed(messages):
        if m.get("role") != "tool":
            continue
        counts = {"passed": 0, "failed": 0}
        for n, kind in _PYTEST_SUMMARY.findall(m.get("content", "")):
            counts["passed" if kind == "passed" else "failed"] += int(n)
        if sum(counts.values()):
            return counts["passed"] / sum(counts.values())
    return None


@dataclass(order=True)
class _Node:
    priority: tuple
    turns: list[str] = field(compare=False)
    messages: list[dict] = field(compare=False)


@dataclass
class SearchResult:
    resolved: bool              # a finished episode passed (its reward was +1)
    best_turns: list[str]       # the turns of the passing episode, else of the most valuable one seen
    turns_sampled: int          # policy turns spent (the budget's unit)
    nodes_expanded: int
    episodes_finished: int


def replay(make_env: Callable[[], object], turns: list[str]):
    """Run `turns` in a fresh environment: (messages seen, last StepResult or None). The environment is closed."""
    env = make_env()
    try:
        messages = list(env.reset())
        result = None
        for t in turns:
            messages.append({"role": "assistant", "content": t})
            result = env.step(t)
            messages += result.observation
            if result.done:
                break
        return messages, result
    finally:
        env.close()


def tree_search(make_env: Callable[[], object], policy: Callable[[list[dict], int], list[str]], *, budget: int,
                branch: int = 3, max_depth: int = 8, unknown_value: float = 1.0, tie: str = "shallow",
                value: Callable[[list[dict], dict], float | None] = value_from_tests_run) -> SearchResult:
    """Best-first search over assistant turns, stopping at the first passing episode or when `budget` policy
    turns have been sampled. `policy(messages, k)` returns k sampled next turns for a conversation.

    A node the value function knows nothing about (no test has run on its path) is valued `unknown_value`:
    optimistic by default, so untried openings are tried before a line that has shown failing tests is pushed
    deeper. Among equal values the shallower node goes first (`tie="shallow"`: the same progress in fewer turns
    has spent fewer chances to break something), or the deeper one (`tie="deep"`)."""
    root_msgs, _ = replay(make_env, [])
    frontier = [_Node((0.0, 0, 0), [], root_msgs)]
    counter = sampled = expanded = finished_count = 0
    best = (-1.0, [])
    while frontier and sampled < budget:
        node = heapq.heappop(frontier)
        expanded += 1
        seen = set()
        for _ in range(branch):
            if sampled >= budget:
                break
            (turn,) = policy(node.messages, 1)
            sampled += 1
            if turn in seen:  # the policy repeats itself here (a forced move): stop widening this node
                break
            seen.add(turn)
            turns = node.turns + [turn]
            messages, result = replay(make_env, turns)
            done = result is not None and result.done
            info = {**(result.info if result else {}), "done": done,
                    "passed": bool(result and result.done and result.reward > 0)}
            v = value(messages, info)
            v = unknown_value if v is None else v
            if v > best[0]:
                best = (v, turns)
            if done:
                finished_count += 1
                if info["passed"]:
                    return SearchResult(True, turns, sampled, expanded, finished_count)
            elif len(turns) < max_depth:
                counter += 1
                depth_key = len(turns) if tie == "shallow" else -len(turns)
                heapq.heappush(frontier, _Node((-v, depth_key, counter), turns, messages))
    return SearchResult(False, best[1], sampled, expanded, finished_count)


def independent_episodes(make_env: Callable[[], object], policy: Callable[[list[dict], int], list[str]], *,
                         budget: int, max_depth: int = 8) -> SearchResult:
    """The baseline at the same budget: whole episodes one after another, until one passes or the budget of
    policy turns is spent."""
    sampled = finished_count = 0
    while sampled < budget:
        env = make_env()
        try:
            messages = list(env.reset())
            turns = []
            for _ in range(max_depth):
                if sampled >= budget:
                    break
                (turn,) = policy(messages, 1)
                sampled += 1
                turns.append(turn)
                messages.append({"role": "assistant", "content": turn})
                result = env.step(turn)
                messages += result.observation
                if result.done:
                    finished_count += 1
                    if result.reward > 0:
                        return SearchResult(True, turns, sampled, finished_count, finished_count)
                    break
        finally:
            env.close()
    return SearchResult(False, [], sampled, finished_count, finished_count)


# -- code generation with a chat policy ----------------------------------------------------------------------------------------

TEST_PROMPT = ("Write {m} different assert statements, one per line, that test a correct `{entry}` for this "
               "task. Only the asserts, in one ```python block.\n\n{prompt}")


def chat_sampler(base_url: str, model: str, *, temperature: float = 0.8, max_tokens: int = 512,
                 timeout_s: float = 120.0) -> Callable[[list[dict], int], list[str]]:
    """policy(messages, k): k completions from an OpenAI-compatible chat endpoint (vLLM, SGLang, …)."""
    from cwm.rl.generate import post_json

    url = base_url.rstrip("/")
    url = url if url.endswith("/v1") else url + "/v1"

    def sample(messages: list[dict], k: int) -> list[str]:
        reply = post_json(f"{url}/chat/completions", {"model": model, "messages": messages, "n": k,
                                                      "temperature": temperature, "max_tokens": max_tokens},
                          timeout_s)
        return [c["message"]["content"] or "" for c in reply["choices"]]

    return sample


def _grade(task, code: str, limits: Limits) -> bool:
    from cwm.rl.envs.codegen import CodeGenEnv

    return bool(CodeGenEnv(task, limits).step(f"```python\n{code}```").info.get("passed"))


def search_codegen(tasks, policy, *, n: int, m: int, mode: str, scorer=None, limits: Limits | None = None,
                   progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Per task: n solutions and (best-of-n) m tests from `policy`, the chosen solution and the first sample
    graded by the hidden tests. Returns one dict per task: id, first_passed, chosen_passed, chosen, scores."""
    limits = limits or Limits(timeout_s=10.0, memory_mb=512, max_procs=32)
    rows = []
    for i, task in enumerate(tasks):
        replies = policy(task.messages(), n)
        codes = [extract_code(r) for r in replies]
        if mode == "best-of-n":
            tests_reply = policy([{"role": "user", "content": TEST_PROMPT.format(m=m, entry=task.entry,
                                                                                   prompt=task.prompt)}], 1)[0]
            tests = extract_tests(tests_reply, task.entry)[:m]
            chosen, scores = best_of_n(codes, tests)
        elif mode == "rerank":
            if scorer is None:
                raise ValueError("rerank needs a scorer (a reward model's score_texts)")
            chosen, scores = rerank(replies, scorer)
        elif mode == "first":
            chosen, scores = 0, [0.0] * len(codes)
        else:
            raise ValueError(f"search mode {mode}: use best-of-n, rerank or first")
        first_ok = _grade(task, codes[0], limits)
        chosen_ok = first_ok if chosen == 0 else _grade(task, codes[chosen], limits)
        rows.append({"id": task.id, "first_passed": first_ok, "chosen_passed": chosen_ok, "chosen": chosen,
                     "scores": scores})
        if progress:
            progress(i + 1, len(tasks))
    return rows


# -- cwm-eval codegen --search ----------------------------------------------------------------------------------

def eval_codegen_search(mode: str, backend, examples: list[dict], rows: list[dict], params, *, m: int = 8,
                        reward_model: str | None = None) -> None:
    """`cwm-eval codegen --search MODE`: choose one of each task's n samples (already graded by the hidden tests
    in `rows`) and record it as `row["search"] = {"mode", "chosen", "passed", "scores"}`.

    best-of-n: the backend also writes tests (the task's prompt continued into `assert ENTRY(` lines, one
    sample), and the samples are ranked by CodeT's dual agreement on them; rerank: ranked by a reward model."""
    from dataclasses import replace

    from cwm.eval.backends import Prompt

    if mode == "best-of-n":
        test_params = replace(params, n=1, max_tokens=max(256, params.max_tokens),
                              stop=("\n\n", "\ndef ", "\nclass ", "\nif "))
        prompts = [Prompt(f"{ex['id']}/search-tests", f"{ex['prompt']}    ...\n\n\n# tests of {ex['entry_point']}\n"
                          f"assert {ex['entry_point']}(", params=test_params) for ex in examples]
        replies = backend.generate(prompts, test_params)
        for ex, row, reply in zip(examples, rows, replies):
            tests = extract_tests(f"assert {ex['entry_point']}(" + (reply[0] if reply else ""), ex["entry_point"])[:m]
            codes = [ex["prompt"] + s["completion"] for s in row["samples"]]
            chosen, scores = best_of_n(codes, tests)
            row["search"] = {"mode": mode, "chosen": chosen, "passed": row["samples"][chosen]["passed"],
                             "tests": len(tests), "scores": scores}
    elif mode == "rerank":
        if not reward_model:
            raise ValueError("--search rerank needs --reward-model DIR (python -m cwm.rl.reward_model train)")
        from cwm.rl.reward_model import RewardModel

        rm = RewardModel.load(reward_model)
        for ex, row in zip(examples, rows):
            chosen, scores = rerank([ex["prompt"] + s["completion"] for s in row["samples"]], rm.score_texts)
            row["search"] = {"mode": mode, "chosen": chosen, "passed": row["samples"][chosen]["passed"],
                             "scores": scores}
    else:
        raise ValueError(f"--search {mode}: codegen takes best-of-n or rerank (tree search is over agent turns: "
                         "cwm.rl.search.tree_search)")


def search_summary(rows: list[dict]) -> dict:
    """pass@1 of the searched choice next to the first sample's, over the rows that were searched."""
    done = [r for r in rows if "search" in r]
    if not done:
        return {}
    return {"search": done[0]["search"]["mode"],
            "search_pass@1": sum(bool(r["search"]["passed"]) for r in done) / len(done),
            "first_sample_pass@1": sum(bool(r["samples"][0]["passed"]) for r in done) / len(done)}
