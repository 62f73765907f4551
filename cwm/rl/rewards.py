"""Rewards for software engineering, as plain functions: SWE-RL's patch similarity, CWM's tests-then-similarity,
localisation overlap, composite verifiers, and the recipe's reward spec that picks among them.

## The answer format (SWE-RL's SEARCH/REPLACE edit blocks)

A reply may think first (free text, or a `<think>...</think>` section), then gives exactly one answer section:

    <solution>
    ```python
    ### path/to/file.py
    <<<<<<< SEARCH
    lines to find (exactly as in the file, indentation included)
    =======
    lines to put there instead
    >>>>>>> REPLACE
    ```
    </solution>

with one or more such fenced blocks (any fence language), several per file allowed, applied in order. A block
with an empty SEARCH creates a file that does not exist (its REPLACE is the whole content). As in SWE-RL's
released `apply_code_change`, a SEARCH text matches at the start of a line (it is looked up as "\\n" + SEARCH in
"\\n" + file), and every occurrence is replaced.

Malformed — reward -1, whatever the mode: no `<solution>` section or more than one, no edit block in it, a
SEARCH text not found in its file, a SEARCH equal to its REPLACE.

## similarity (SWE-RL, `src/swerl/core/reward.py`)

For every file an answer (or the oracle) changes: the unified diff of the original and new content with 3 lines
of context, its two header lines dropped. Per file in the union of predicted and oracle files:
`difflib.SequenceMatcher(None, pred_diff, oracle_diff, autojunk=False).ratio()`, 0 for a file only one side
changed. The reward is the mean over those files, in [0, 1]; 1.0 when both patches are empty (nothing to do,
nothing done); 0.0 for an empty prediction against a non-empty oracle (the empty-patch value).

## tests_then_similarity (CWM)

+1 when the tests pass. When they fail the similarity decides: with s the mean similarity over the *oracle's*
files only (a predicted file the oracle does not touch neither helps nor hurts), -1 + tau * s when s >= tau,
else -1. Always in [-1, 1]; a passing run always beats a failing one, and a failing one near the real fix beats
a failing one far from it.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

THINK_START, THINK_END = "<think>", "</think>"
ANSWER_START, ANSWER_END = "<solution>", "</solution>"
# SWE-RL's block pattern: a fence, `### PATH`, SEARCH text, `=======`, REPLACE text, the closing fence.
EDIT_BLOCK = re.compile(r"```.*?\n### (.*)\n<<<<<<< SEARCH\n([\s\S]*?)\n=======\n([\s\S]*?)\n>>>>>>> REPLACE\n```")
MALFORMED = -1.0


class MalformedAnswer(ValueError):
    """An answer the reward cannot use (see the module docstring); its reward is -1."""


def extract_answer(output: str) -> str:
    """The text inside the one `<solution>` section, or MalformedAnswer."""
    for tag in (ANSWER_START, ANSWER_END):
        n = output.count(tag)
        if n != 1:
            raise MalformedAnswer(f"expected exactly one {tag}, found {n}")
    start, end = output.index(ANSWER_START) + len(ANSWER_START), output.index(ANSWER_END)
    if end < start:
        raise MalformedAnswer(f"{ANSWER_END} comes before {ANSWER_START}")
    return output[start:end].strip()


def parse_edit_blocks(answer: str) -> dict[str, list[tuple[str, str]]]:
    """path -> [(search, replace), ...] in the order written; MalformedAnswer when there is none."""
    blocks: dict[str, list[tuple[str, str]]] = {}
    for path, search, replace in EDIT_BLOCK.findall(answer):
        blocks.setdefault(path.strip(), []).append((search, replace))
    if not blocks:
        raise MalformedAnswer("no SEARCH/REPLACE edit block in the answer")
    return blocks


def apply_edit_blocks(context: dict[str, str | None], blocks: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """The new content of every file the blocks touch. `context` maps path -> original content (None or absent:
    the file does not exist). MalformedAnswer for a SEARCH not found or equal to its REPLACE."""
    new: dict[str, str] = {}
    for path, edits in blocks.items():
        content = "\n" + (context.get(path) or "")
        for search, replace in edits:
            if search == replace:
                raise MalformedAnswer(f"{path}: a SEARCH text equals its REPLACE text")
            if ("\n" + search) not in content:
                raise MalformedAnswer(f"{path}: SEARCH text not found: {search[:80]!r}")
            content = content.replace("\n" + search, "\n" + replace)
        new[path] = content[1:]
    return new


def unified_diff(old: str, new: str, n_context: int = 3) -> str:
    """The unified diff of two texts, header lines dropped ("" when they are the same)."""
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), fromfile="old", tofile="new",
                                      lineterm="", n=n_context))
    return "\n".join(lines[2:])


def normalized_patch(context: dict[str, str | None], new_content: dict[str, str | None]) -> dict[str, str]:
    """path -> unified diff for every file whose content changes (a deleted file: new content None or "")."""
    patch = {}
    for path, content in new_content.items():
        diff = unified_diff(context.get(path) or "", content or "")
        if diff:
            patch[path] = diff
    return patch


def change_similarities(pred_patch: dict[str, str], oracle_patch: dict[str, str]) -> dict[str, float]:
    """SWE-RL's per-file similarity over the union of files: the diffs' SequenceMatcher ratio, 0 where one
    side is empty."""
    out = {}
    for path in sorted(set(pred_patch) | set(oracle_patch)):
        pred, oracle = pred_patch.get(path, ""), oracle_patch.get(path, "")
        out[path] = 0.0 if not pred or not oracle else \
            difflib.SequenceMatcher(None, pred, oracle, autojunk=False).ratio()
    return out


def patch_similarity(context: dict[str, str | None], oracle_new: dict[str, str | None],
                     pred_new: dict[str, str | None]) -> tuple[float, dict[str, float]]:
    """(mean similarity in [0, 1], per-file similarities) of a predicted change against the oracle's, both
    given as new file contents over `context`. Both empty: 1.0."""
    sims = change_similarities(normalized_patch(context, pred_new), normalized_patch(context, oracle_new))
    if not sims:
        return 1.0, {}
    return sum(sims.values()) / len(sims), sims


def oracle_file_similarity(context: dict[str, str | None], oracle_new: dict[str, str | None],
                           pred_new: dict[str, str | None]) -> float:
    """Mean similarity over the oracle's files only (CWM's s): predicted files the oracle leaves alone do not
    count. 1.0 when the oracle changes nothing."""
    oracle = normalized_patch(context, oracle_new)
    pred = normalized_patch(context, pred_new)
    if not oracle:
        return 1.0
    sims = change_similarities({p: d for p, d in pred.items() if p in oracle}, oracle)
    return sum(sims.values()) / len(sims)


def parse_answer(context: dict[str, str | None], output: str) -> dict[str, str]:
    """The new file contents a reply asks for (MalformedAnswer when it is not a well-formed answer)."""
    return apply_edit_blocks(context, parse_edit_blocks(extract_answer(output)))


def similarity_reward(context: dict[str, str | None], oracle_new: dict[str, str | None],
                      output: str) -> tuple[float, dict]:
    """SWE-RL's reward of a reply: the patch similarity of its edit blocks, or -1 when it is malformed."""
    try:
        pred_new = parse_answer(context, output)
    except MalformedAnswer as e:
        return MALFORMED, {"malformed": str(e)}
    reward, per_file = patch_similarity(context, oracle_new, pred_new)
    return reward, {"similarity": reward, "files": per_file}


def tests_then_similarity(tests_passed: bool, s: float, tau: float = 0.5) -> float:
    """CWM's mixed reward: +1 when the tests pass; else -1 + tau*s when s >= tau, else -1."""
    if tests_passed:
        return 1.0
    return -1.0 + tau * s if s >= tau else -1.0


def localization_reward(named: list[str], oracle_files: list[str]) -> float:
    """Overlap of the files a localisation turn names with the files the oracle changes: their F1 in [0, 1]
    (0 when either is empty)."""
    a, b = set(named), set(oracle_files)
    hit = len(a & b)
    return 0.0 if not hit else 2 * hit / (len(a) + len(b))


# ---------------------------------------------------------------------------------------------- edit writer

def format_edit_blocks(blocks: dict[str, list[tuple[str, str]]], *, think: str = "") -> str:
    """A well-formed reply holding `blocks` (the inverse of parse_answer's parsing)."""
    parts = [f"{THINK_START}{think}{THINK_END}\n"] if think else []
    parts.append(ANSWER_START + "\n")
    for path, edits in blocks.items():
        for search, replace in edits:
            parts.append(f"```python\n### {path}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n"
                         f">>>>>>> REPLACE\n```\n")
    parts.append(ANSWER_END)
    return "".join(parts)


def _count_anchored(content: str, search: str) -> int:
    text, needle = "\n" + content, "\n" + search
    n, i = 0, text.find(needle)
    while i != -1:
        n, i = n + 1, text.find(needle, i + 1)
    return n


def minimal_block(old: str, new: str) -> tuple[str, str]:
    """One (search, replace) pair turning `old` into `new` under apply_edit_blocks: the changed lines, widened
    until the search text is non-empty and occurs exactly once. `old` empty: ("", new) creates the file."""
    if not old:
        return "", new
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    ops = [op for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes() if op[0] != "equal"]
    i1, i2, j1, j2 = ops[0][1], ops[-1][2], ops[0][3], ops[-1][4]
    while True:
        search, replace = "".join(a[i1:i2]), "".join(b[j1:j2])
        # a trailing newline on both sides is implied by the block's layout; drop it when both have one
        if search.endswith("\n") and replace.endswith("\n") and i2 < len(a):
            search, replace = search[:-1], replace[:-1]
        if search and _count_anchored(old, search) == 1 and search != replace:
            return search, replace
        if i1 == 0 and i2 == len(a):
            return old, new
        if i1 > 0:
            i1, j1 = i1 - 1, j1 - 1
        if i2 < len(a):
            i2, j2 = i2 + 1, j2 + 1


def oracle_answer(context: dict[str, str | None], new_content: dict[str, str | None]) -> str | None:
    """A reply whose edit blocks turn `context` into `new_content` exactly (one block per changed file), or None
    when the change cannot be written as edit blocks (a text that the block pattern cannot carry)."""
    blocks = {}
    for path, content in new_content.items():
        old, new = context.get(path) or "", content or ""
        if old == new:
            continue
        blocks[path] = [minimal_block(old, new)]
    if not blocks:
        return None
    text = format_edit_blocks(blocks)
    try:
        got = parse_answer(context, text)
    except MalformedAnswer:
        return None
    want = {p: (c or "") for p, c in new_content.items() if (context.get(p) or "") != (c or "")}
    return text if got == want else None


# ---------------------------------------------------------------------------------------------- reward spec

REWARD_MODES = ("tests", "similarity", "tests_then_similarity", "composite")
CHECKERS = ("ruff", "mypy", "pyright")
COMPONENTS = ("tests", "lint", "types", "turn_cost", "similarity")


class RewardSpecError(ValueError):
    """A reward spec that cannot be used; the message names the key and what to do."""


@dataclass(frozen=True)
class RewardSpec:
    """How an SWE episode is scored (the recipe's `reward:` mapping of an env).

        reward: {mode: similarity}                          # SWE-RL, offline
        reward: {mode: tests_then_similarity, tau: 0.5}     # CWM
        reward: {mode: composite, checkers: [ruff, mypy],
                 weights: {tests: 1.0, lint: 0.25, types: 0.25, turn_cost: 0.02}}
        reward: {mode: tests, flaky_credit: 0.5, flaky_reruns: 2}

    composite: tests (+1/-1) + lint (+1 clean / -1 new ruff findings) + types (+1 / -1 new type errors), each
    times its weight, minus turn_cost per assistant turn, clamped to `clamp`. Checker components compare the
    patched files against the same files before the change, so a repository's old findings are not charged.
    flaky_credit: a required test that fails, is known flaky and still fails after `flaky_reruns` re-runs
    leaves the tests component at flaky_credit (instead of -1) when every other required test passes.
    """
    mode: str = "tests"
    tau: float = 0.5
    checkers: tuple[str, ...] = ()
    weights: dict = field(default_factory=lambda: {"tests": 1.0})
    clamp: tuple[float, float] = (-1.0, 1.0)
    flaky_credit: float = 0.0
    flaky_reruns: int = 2

    @classmethod
    def from_dict(cls, raw, where: str = "reward") -> "RewardSpec":
        if raw is None:
            return cls()
        if isinstance(raw, str):
            raw = {"mode": raw}
        if not isinstance(raw, dict):
            raise RewardSpecError(f"{where}: expected a mapping like {{mode: similarity}}, got {raw!r}")
        known = {"mode", "tau", "checkers", "weights", "clamp", "flaky_credit", "flaky_reruns"}
        unknown = set(raw) - known
        if unknown:
            raise RewardSpecError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                                  f"known: {', '.join(sorted(known))}")
        mode = raw.get("mode", "tests")
        if mode not in REWARD_MODES:
            raise RewardSpecError(f"{where}.mode: '{mode}' unknown; use one of {', '.join(REWARD_MODES)}")
        checkers = raw.get("checkers", ())
        if isinstance(checkers, str) or not isinstance(checkers, (list, tuple)):
            raise RewardSpecError(f"{where}.checkers: expected a list such as [ruff, mypy], got {checkers!r}")
        for c in checkers:
            if c not in CHECKERS:
                raise RewardSpecError(f"{where}.checkers: unknown checker '{c}'; use {', '.join(CHECKERS)}")
        weights = raw.get("weights", {"tests": 1.0})
        if not isinstance(weights, dict):
            raise RewardSpecError(f"{where}.weights: expected a mapping component -> number, got {weights!r}")
        for k, v in weights.items():
            if k not in COMPONENTS:
                raise RewardSpecError(f"{where}.weights: unknown component '{k}'; use {', '.join(COMPONENTS)}")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise RewardSpecError(f"{where}.weights.{k}: expected a number, got {v!r}")
        if mode == "composite":
            if "lint" in weights and "ruff" not in checkers:
                raise RewardSpecError(f"{where}: weights.lint needs `ruff` in checkers")
            if "types" in weights and not {"mypy", "pyright"} & set(checkers):
                raise RewardSpecError(f"{where}: weights.types needs `mypy` or `pyright` in checkers")
        clamp = raw.get("clamp", (-1.0, 1.0))
        if (not isinstance(clamp, (list, tuple)) or len(clamp) != 2
                or not all(isinstance(x, (int, float)) for x in clamp) or clamp[0] > clamp[1]):
            raise RewardSpecError(f"{where}.clamp: expected [low, high] with low <= high, got {clamp!r}")
        numbers = {}
        for key, lo, hi in (("tau", 0.0, 1.0), ("flaky_credit", -1.0, 1.0)):
            value = raw.get(key, getattr(cls, key))
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise RewardSpecError(f"{where}.{key}: expected a number in [{lo}, {hi}], got {value!r}")
            numbers[key] = float(value)
        reruns = raw.get("flaky_reruns", 2)
        if isinstance(reruns, bool) or not isinstance(reruns, int) or reruns < 0:
            raise RewardSpecError(f"{where}.flaky_reruns: expected a count >= 0, got {reruns!r}")
        return cls(mode=mode, checkers=tuple(checkers), weights={k: float(v) for k, v in weights.items()},
                   clamp=(float(clamp[0]), float(clamp[1])), flaky_reruns=reruns, **numbers)


def composite_reward(spec: RewardSpec, components: dict[str, float], turns: int) -> tuple[float, dict[str, float]]:
    """The weighted sum of the measured components (each in [-1, 1]) minus the per-turn cost, clamped.
    Returns (reward, the terms that made it) so every component can be logged."""
    terms = {k: spec.weights.get(k, 0.0) * v for k, v in components.items() if k in spec.weights}
    if "turn_cost" in spec.weights:
        terms["turn_cost"] = -spec.weights["turn_cost"] * turns
    total = sum(terms.values())
    return min(spec.clamp[1], max(spec.clamp[0], total)), terms
