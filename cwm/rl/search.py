"""Search with the executor as judge: best-of-n with CodeT's dual agreement, reranking by a scorer, and a tree
search over agent turns. At inference: `cwm-eval codegen --search best-of-n|rerank` (`eval_codegen_search`
below) and `cwm-eval swe --search tree`; in RL, the recipe's `search: {mode: tree}` (`tree_rollout_groups`).

Best-of-n (CodeT, Chen et al. 2022): sample n candidate programs and m tests (the tests are the policy's too, so
some are wrong); run every candidate on every test in the jail (`cwm.jail`), giving a pass matrix. Candidates
that pass exactly the same tests form a consensus set; a set's score is (number of candidates in it) × (number of
tests they pass), and the answer is a candidate of the best set. A wrong program rarely agrees with many others
on many tests; right ones agree with each other on the right tests. Invariant: the choice depends only on the
pass matrix (ties go to the earliest candidate), never on the hidden tests.

Reranking: order candidates by any scorer (the learned reward model, `cwm.rl.reward_model`, or a committee,
`cwm.rl.committee`); the first of the order is the answer.

Tree search over turns (`SearchTree`, `tree_search`): an episode of a multi-turn environment (`cwm.rl.env.Env`)
is a path of assistant turns and a node is the list of turns so far, valued by `value(messages, info)` — by
default the fraction of tests that passed in the last test run the episode saw (or a reward model's score).
Best-first with progressive widening: one child per expansion, the most valuable open node first and the deepest
among equals, so the search follows a line while its value holds and backtracks to the best earlier state when a
turn makes things worse. The budget is the number of policy turns sampled, the same unit as `budget` turns of
independent episodes, so the two compare at equal cost. As an RL rollout generator (`tree_rollout_groups`, the
recipe's `search: {mode: tree}`), a GRPO group is the episodes one tree ended.
"""
from __future__ import annotations

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
        for n, kind in _PYTEST_SUMMARY.findall(m.get("content") or ""):
            counts["passed" if kind == "passed" else "failed"] += int(n)
        if sum(counts.values()):
            return counts["passed"] / sum(counts.values())
    return None


def reward_model_value(rm) -> Callable[[list[dict], dict], float]:
    """A value function from a reward model (`cwm.rl.reward_model.RewardModel`, or anything with `score_texts`):
    its score in [0, 1] of the conversation so far, read as the reward model was trained to read episodes (chat
    scaffolding special, every message's text ordinary); a finished episode is valued by its outcome. Calls are
    serialized: trees expand in a thread pool and one model serves them all."""
    import threading

    from cwm.data.documents import chat_prompt_segments

    lock = threading.Lock()

    def value(messages: list[dict], info: dict) -> float:
        if info.get("done"):
            return 1.0 if info.get("passed") else 0.0
        with lock:
            return float(rm.score_texts([chat_prompt_segments(messages)])[0])

    return value


@dataclass(eq=False)
class SearchNode:
    """A state of an episode: the assistant turns that reach it from the task's start.

    Invariants: `messages` is the conversation a fresh environment shows after `turns`; `env`, when set, is a live
    environment in exactly this state that nothing has stepped further (the node owns it and closes it)."""
    turns: list[str]
    messages: list[dict]
    parent: "SearchNode | None"
    own: float | None            # value(messages, info) of this state; None: nothing known yet (no test has run)
    done: bool = False           # the environment ended the episode here
    passed: bool = False         # ... and its check passed
    result: object = None        # the StepResult that led here (None at the root)
    children: list["SearchNode"] = field(default_factory=list)
    tried: set = field(default_factory=set)   # turns sampled here
    open: bool = True            # may still get children
    env: object = None
    data: object = None          # the caller's per-node state (the RL rollout keeps the token path here)

    @property
    def depth(self) -> int:
        return len(self.turns)

    def score(self, unknown: float) -> float:
        """Its own value; `unknown` (a prior) while no test has judged this state. Children's values are not
        backed up into an untested parent: a bad first turn would then hide that the start was better."""
        return unknown if self.own is None else self.own


class SearchTree:
    """Best-first search over an episode's turns with progressive widening and backtracking.

    Each expansion adds ONE child to the open node with the best key (score, never expanded, depth): the most
    valuable state first; among equals a fresh node before one already widened, and the deepest one (the line
    that has made the most progress). So the search dives while the value holds, and when a turn lowers it (a
    wrong edit shows failing tests) it returns to the best earlier state and samples a different turn there,
    which an independent episode cannot do. A node takes at most `branch` children, and none after the policy
    repeats a turn there (a forced move such as "run the tests after an edit" is paid for once more, not
    `branch` times). A state no test has judged is valued `unknown_value`, a prior: 0.5, even odds on a pass
    fraction, sends the search back to an untested start only once the line it follows has fallen below that
    (benchmarks/RESULTS.md compares it with an optimistic 1.0, which widens every untested node first).

    Environments are assumed deterministic given their turns (a forager sandbox starts from the task's image
    every time). A child is reached by stepping its parent's live environment when the parent still holds one
    (the usual case while diving) and otherwise by replaying its turns in a fresh environment; at most
    `max_live` environments (containers) are kept open, those of the lowest-ranked nodes are closed first.
    Callers drive it: `select()` a node, sample a turn for `node.messages`, `expand(node, turn)`; `close()` at
    the end releases every environment (also after an exception)."""

    def __init__(self, make_env: Callable[[], object], *, branch: int = 3, max_depth: int = 8,
                 unknown_value: float = 0.5, max_live: int = 4,
                 value: Callable[[list[dict], dict], float | None] = value_from_tests_run):
        if branch < 1 or max_depth < 1 or max_live < 1:
            raise ValueError(f"tree search: branch ({branch}), max_depth ({max_depth}) and max_live ({max_live}) "
                             "must be at least 1")
        self.make_env, self.branch, self.max_depth = make_env, branch, max_depth
        self.unknown_value, self.max_live, self.value = unknown_value, max_live, value
        env = make_env()
        try:
            messages = list(env.reset())
        except BaseException:
            env.close()
            raise
        self.env_name = getattr(env, "name", None)
        self.root = SearchNode([], messages, None, value(messages, {"done": False}), env=env)
        self.nodes = [self.root]
        self.ended: list[SearchNode] = []   # leaves whose episode is over: done, or cut (turn or token limit)
        self.replays = 0                     # children reached by replaying in a fresh environment

    def _key(self, node: SearchNode) -> tuple:
        return node.score(self.unknown_value), not node.children, node.depth

    def select(self) -> SearchNode | None:
        """The open node to expand next; None when every node is closed."""
        candidates = [n for n in self.nodes if n.open]
        return max(candidates, key=self._key) if candidates else None

    @property
    def nodes_expanded(self) -> int:
        return sum(1 for n in self.nodes if n.tried)

    def expand(self, node: SearchNode, turn: str) -> SearchNode | None:
        """Take `turn` from `node`: the new child, or None when the policy repeated a turn already tried there."""
        if turn in node.tried:
            self._shut(node)
            return None
        node.tried.add(turn)
        env, node.env = node.env, None
        if len(node.tried) >= self.branch:
            self._shut(node)
        if env is None:
            env = self._replay(node.turns)
        try:
            result = env.step(turn)
        except BaseException:
            env.close()
            raise
        messages = node.messages + [{"role": "assistant", "content": turn}] + list(result.observation)
        passed = bool(result.done and result.info.get("passed", result.reward > 0))
        own = self.value(messages, {**result.info, "done": result.done, "passed": passed})
        child = SearchNode(node.turns + [turn], messages, node, own, done=result.done, passed=passed,
                           result=result, env=env)
        node.children.append(child)
        self.nodes.append(child)
        if result.done or child.depth >= self.max_depth:
            self.end(child)
        else:
            self._limit_live()
        return child

    def end(self, node: SearchNode) -> None:
        """`node`'s episode is over (done, or cut by the caller at a limit): a leaf, its environment closed."""
        self._shut(node)
        self.ended.append(node)

    def best(self) -> SearchNode:
        """The passing leaf if there is one, else the most valuable state seen (deepest among equals)."""
        return max(self.nodes, key=lambda n: (n.passed, -1.0 if n.own is None else n.own, n.depth))

    def close(self) -> None:
        for n in self.nodes:
            self._release(n)

    def _shut(self, node: SearchNode) -> None:
        node.open = False
        self._release(node)

    @staticmethod
    def _release(node: SearchNode) -> None:
        env, node.env = node.env, None
        if env is not None:
            env.close()

    def _limit_live(self) -> None:
        live = sorted((n for n in self.nodes if n.env is not None), key=self._key)
        for n in live[:max(0, len(live) - self.max_live)]:
            self._release(n)

    def _replay(self, turns: list[str]):
        self.replays += 1
        env = self.make_env()
        try:
            env.reset()
            for t in turns:
                if env.step(t).done:
                    raise RuntimeError(f"tree search: replaying {len(turns)} turns ended the episode early; the "
                                       "environment is not deterministic given its turns, so it cannot be searched")
        except BaseException:
            env.close()
            raise
        return env


@dataclass
class SearchResult:
    resolved: bool              # a finished episode passed (its reward was +1)
    best_turns: list[str]       # the turns of the passing episode, else of the most valuable state seen
    turns_sampled: int          # policy turns spent (the budget's unit)
    nodes_expanded: int
    episodes_finished: int      # episodes the environment ended (submitted, or a malformed turn)
    replays: int = 0            # children reached by replaying turns in a fresh environment
    outcomes: list[bool] = field(default_factory=list)  # passed, per ended episode (cut at max_depth: False)


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
                branch: int = 3, max_depth: int = 8, unknown_value: float = 0.5, max_live: int = 4,
                value: Callable[[list[dict], dict], float | None] = value_from_tests_run,
                episodes: int = 0) -> SearchResult:
    """Search (`SearchTree`) until an episode passes (or, with `episodes` > 0, until that many episodes ended: an
    RL group's worth) or `budget` policy turns have been sampled. `policy(messages, k)` returns k sampled next
    turns for a conversation."""
    tree = SearchTree(make_env, branch=branch, max_depth=max_depth, unknown_value=unknown_value,
                      max_live=max_live, value=value)
    sampled = 0
    try:
        while sampled < budget and (not episodes or len(tree.ended) < episodes) and (node := tree.select()):
            (turn,) = policy(node.messages, 1)
            sampled += 1
            child = tree.expand(node, turn)
            if not episodes and child is not None and child.passed:
                break
        best = tree.best()
        return SearchResult(best.passed, best.turns, sampled, tree.nodes_expanded, sum(n.done for n in tree.ended),
                            tree.replays, [n.passed for n in tree.ended])
    finally:
        tree.close()


def independent_episodes(make_env: Callable[[], object], policy: Callable[[list[dict], int], list[str]], *,
                         budget: int, max_depth: int = 8, episodes: int = 0) -> SearchResult:
    """The baseline at the same budget: whole episodes one after another, until one passes (or, with `episodes`
    > 0, until that many ended) or the budget of policy turns is spent."""
    sampled, outcomes, done, passing = 0, [], 0, []
    while sampled < budget and (len(outcomes) < episodes if episodes else not passing):
        env = make_env()
        try:
            messages, turns, result = list(env.reset()), [], None
            while len(turns) < max_depth and sampled < budget:
                (turn,) = policy(messages, 1)
                sampled += 1
                turns.append(turn)
                result = env.step(turn)
                messages += [{"role": "assistant", "content": turn}] + result.observation
                if result.done:
                    break
            if result is not None and result.done:
                done += 1
                outcomes.append(result.reward > 0)
                passing = passing or (turns if result.reward > 0 else [])
            elif len(turns) == max_depth:  # cut at max_depth: a failed episode
                outcomes.append(False)
        finally:
            env.close()
    return SearchResult(bool(passing), passing, sampled, done, done, 0, outcomes)


# -- tree search as an RL rollout generator ------------------------------------------------------------------

@dataclass
class TreeSearchConfig:
    """The RL recipe's `search:` switch. off: a GRPO group is `group_size` independent episodes of a task
    (`cwm.rl.rollout.rollout_groups`); tree: a group is the episodes one `SearchTree` over the task ended (at most
    `group_size`), sampled by the policy and sharing prefixes where the search branched."""
    mode: str = "off"            # off | tree
    branch: int = 3              # children per node at most
    budget: int = 0              # policy turns per tree; 0: group_size x rollout.max_turns (the independent group's)
    unknown_value: float = 0.5   # the value of a state no test has judged (a neutral prior on a pass fraction)
    max_live: int = 4            # environments (containers) a tree keeps open to step instead of replaying
    value: str = "tests"         # tests: pass fraction of the last test run; reward_model: the recipe's
    #                              reward_model.path scores every state (`reward_model_value`)

    def validate(self) -> None:
        if self.mode not in ("off", "tree"):
            raise ValueError(f"search.mode {self.mode!r}: use off or tree")
        if self.value not in ("tests", "reward_model"):
            raise ValueError(f"search.value {self.value!r}: use tests or reward_model")
        if self.branch < 1 or self.max_live < 1 or self.budget < 0:
            raise ValueError("search: branch and max_live must be at least 1, budget at least 0")


@dataclass
class _TokenPath:
    """A node's episode in token space (what `cwm.rl.rollout.rollout` builds turn by turn for one episode)."""
    tokens: list[int]
    mask: list[int]
    logprobs: list[float]
    version: int
    info: dict
    outcome: str | None = None   # set when the node's episode ends: done, turn_limit, token_limit, prompt_too_long


def tree_rollout_groups(sampler, n_groups: int, group_size: int, generator, chat, cfg, search: TreeSearchConfig,
                        first_group_id: int = 0,
                        value: Callable[[list[dict], dict], float | None] = value_from_tests_run) -> list:
    """`n_groups` GRPO groups, each the ended episodes of one tree search over a drawn task (`TreeSearchConfig`).

    Every round expands one node per live tree and samples all their turns in one batch, as `rollout` does for
    independent episodes; a tree stops at `group_size` ended episodes or its budget of policy turns. Trajectories
    are `cwm.rl.rollout.Trajectory`s with the same token/mask/log-prob invariants; a sampled turn the tree had
    already tried at that node is dropped (it adds no episode). `info["search"]` holds the tree's statistics."""
    from cwm.rl.rollout import Trajectory

    budget = search.budget or group_size * cfg.max_turns
    drawn = [sampler.draw() for _ in range(n_groups)]
    trees: list[SearchTree] = []
    fits = lambda path: len(path.tokens) + cfg.sampling.max_new_tokens <= cfg.max_len  # noqa: E731
    out: list = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, cfg.env_workers)) as pool:
            futures = [pool.submit(SearchTree, lambda f=factory, i=index: f.make(i), branch=search.branch,
                                   max_depth=cfg.max_turns, unknown_value=search.unknown_value,
                                   max_live=search.max_live, value=value) for factory, index in drawn]
            errors = []
            for f in futures:  # keep every tree that was built, so the finally below closes it
                try:
                    trees.append(f.result())
                except Exception as e:
                    errors.append(e)
            if errors:
                raise errors[0]
            for tree in trees:
                ids = chat.encode(tree.root.messages, first=True)
                tree.root.data = _TokenPath(ids, [0] * len(ids), [0.0] * len(ids), generator.version, {})
                if not fits(tree.root.data):
                    tree.root.data.outcome = "prompt_too_long"  # never sampled: not the policy's doing
                    tree.end(tree.root)
            spent = [0] * len(trees)
            while True:
                picks = []
                for k, tree in enumerate(trees):
                    if spent[k] < budget and len(tree.ended) < group_size:
                        node = tree.select()
                        if node is not None:
                            picks.append((k, node))
                if not picks:
                    break
                version = generator.version
                samples = generator.generate([node.data.tokens for _, node in picks], cfg.sampling)
                for k, _ in picks:
                    spent[k] += 1
                children = list(pool.map(lambda ks: trees[ks[0][0]].expand(ks[0][1], chat.reply_text(ks[1])),
                                         zip(picks, samples)))
                for (k, node), s, child in zip(picks, samples, children):
                    if child is None:
                        continue
                    p = node.data
                    path = _TokenPath(p.tokens + s.tokens, p.mask + [1] * len(s.tokens), p.logprobs + s.logprobs,
                                      min(p.version, version), {**p.info, **child.result.info})
                    child.data = path
                    if child.done:
                        path.outcome = "done"
                    elif not child.open:  # expand ended it at max_depth
                        path.outcome = "turn_limit"
                    else:
                        obs = chat.encode(child.result.observation, first=False, close_turn=not s.stopped)
                        path.tokens += obs
                        path.mask += [0] * len(obs)
                        path.logprobs += [0.0] * len(obs)
                        if not fits(path):
                            path.outcome = "token_limit"
                            trees[k].end(child)
            for k, (tree, (factory, index)) in enumerate(zip(trees, drawn)):
                stats = {"turns_sampled": spent[k], "nodes_expanded": tree.nodes_expanded,
                         "episodes": len(tree.ended), "replays": tree.replays}
                for leaf in tree.ended:
                    p = leaf.data
                    t = Trajectory(env=tree.env_name or factory.name, task=index, group=first_group_id + k,
                                   tokens=p.tokens, mask=p.mask, logprobs=p.logprobs, version=p.version,
                                   turns=leaf.depth, info={**p.info, "outcome": p.outcome, "search": stats})
                    if leaf.done:
                        t.reward = leaf.result.reward
                        t.passed = bool(leaf.result.info.get("passed", leaf.result.reward > 0))
                    out.append(t)
    finally:
        for tree in trees:
            tree.close()
    return out


# -- code generation with a chat policy ----------------------------------------------------------------------------------------

TEST_PROMPT = ("Write {m} different assert statements, one per line, that test a correct `{entry}` for this "
               "task. Only the asserts, in one ```python block.\n\n{prompt}")


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
                        scorer: Callable[[Sequence[str]], Sequence[float]] | None = None) -> None:
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
        if scorer is None:
            raise ValueError("--search rerank needs --reward-model DIR (python -m cwm.rl.reward_model train)")
        for ex, row in zip(examples, rows):
            chosen, scores = rerank([ex["prompt"] + s["completion"] for s in row["samples"]], scorer)
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
