"""Rewards for software engineering, as plain functions: SWE-RL's patch similarity, CWM's tests-then-similarity,
localisation overlap, composite verifiers, and the recipe's reward spec that picks among them.

## The answer format

SWE-RL's SEARCH/REPLACE edit blocks, documented and parsed in `cwm/data/edits.py` (a shared format: the forager
checks at task generation that every oracle can be written in it). The edit helpers are re-exported here.
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
from dataclasses import dataclass, field

from cwm.data.edits import (ANSWER_END, ANSWER_START, MALFORMED, MalformedAnswer, apply_edit_blocks,  # noqa: F401
                            extract_answer, format_edit_blocks, minimal_block, oracle_answer, parse_answer,
                            parse_edit_blocks)


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
    localize: a first turn (Agentless' localisation) names the files to change, from the task's candidates; the
    named files' contents are the next observation; the final reward is (1 - localize) * answer reward +
    localize * (2 * F1(named, oracle files) - 1), so it stays in [-1, 1].
    """
    mode: str = "tests"
    tau: float = 0.5
    checkers: tuple[str, ...] = ()
    weights: dict = field(default_factory=lambda: {"tests": 1.0})
    clamp: tuple[float, float] = (-1.0, 1.0)
    flaky_credit: float = 0.0
    flaky_reruns: int = 2
    localize: float = 0.0        # > 0: a first turn names the files to change; this weight times their overlap

    @classmethod
    def from_dict(cls, raw, where: str = "reward") -> "RewardSpec":
        if raw is None:
            return cls()
        if isinstance(raw, str):
            raw = {"mode": raw}
        if not isinstance(raw, dict):
            raise RewardSpecError(f"{where}: expected a mapping like {{mode: similarity}}, got {raw!r}")
        known = {"mode", "tau", "checkers", "weights", "clamp", "flaky_credit", "flaky_reruns", "localize"}
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
        for key, lo, hi in (("tau", 0.0, 1.0), ("flaky_credit", -1.0, 1.0), ("localize", 0.0, 1.0)):
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
