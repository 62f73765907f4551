"""SWE rewards as plain functions: SWE-RL's patch similarity against hand-written diffs and hand-counted ratios,
CWM's tests-then-similarity on its three branches, malformed answers, reward specs."""
import pytest

from cwm.rl.rewards import (MalformedAnswer, RewardSpec, RewardSpecError, apply_edit_blocks, composite_reward,
                            format_edit_blocks, localization_reward, oracle_answer, oracle_file_similarity,
                            normalized_patch, parse_answer, patch_similarity, similarity_reward, unified_diff)
from cwm.rl.rewards import tests_then_similarity as mixed  # (a name pytest would collect)

OLD = {"calc.py": "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n",
       "util.py": "X = 1\n"}
FIXED = {"calc.py": OLD["calc.py"].replace("a - b", "a + b"), "util.py": "X = 2\n"}


def reply(blocks: dict) -> str:
    return format_edit_blocks(blocks, think="the operator is wrong")


def test_the_diff_is_written_by_hand_the_same():
    # header lines dropped, three lines of context: written out by hand, not by difflib
    assert unified_diff(OLD["calc.py"], FIXED["calc.py"]) == (
        "@@ -1,5 +1,5 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n \n \n def mul(a, b):")
    assert unified_diff("same\n", "same\n") == ""
    # and it is what the reward compares: per file, three lines of context
    assert normalized_patch(OLD, FIXED)["calc.py"] == unified_diff(OLD["calc.py"], FIXED["calc.py"])


def test_identical_patch_scores_one_and_disjoint_files_zero():
    right = reply({"calc.py": [("    return a - b", "    return a + b")], "util.py": [("X = 1", "X = 2")]})
    assert similarity_reward(OLD, FIXED, right)[0] == 1.0
    # the oracle changes calc.py and util.py, the answer only a third file: every file of the union scores 0
    other = reply({"new.py": [("", "print('hi')\n")]})
    reward, info = similarity_reward(OLD, FIXED, other)
    assert reward == 0.0 and info["files"] == {"calc.py": 0.0, "new.py": 0.0, "util.py": 0.0}


def test_one_of_two_files_right_is_the_mean():
    half = reply({"calc.py": [("    return a - b", "    return a + b")]})
    reward, info = similarity_reward(OLD, FIXED, half)
    assert info["files"] == {"calc.py": 1.0, "util.py": 0.0} and reward == 0.5


def test_a_near_miss_scores_the_hand_counted_ratio():
    # predicted diff "@@ -1 +1 @@\n-X = 1\n+X = 3" against the oracle's "... +X = 2": one character differs, so
    # SequenceMatcher matches everything but it: ratio = 2 * (L - 1) / (2 * L) with L the diff's length
    oracle_diff = "@@ -1 +1 @@\n-X = 1\n+X = 2"
    L = len(oracle_diff)
    reward, _ = similarity_reward({"util.py": "X = 1\n"}, {"util.py": "X = 2\n"}, reply({"util.py": [("X = 1", "X = 3")]}))
    assert reward == pytest.approx((L - 1) / L)
    # two files, one right and one near: the mean of 1 and that ratio
    both = reply({"calc.py": [("    return a - b", "    return a + b")], "util.py": [("X = 1", "X = 3")]})
    assert similarity_reward(OLD, FIXED, both)[0] == pytest.approx((1 + (L - 1) / L) / 2)


def test_both_empty_is_one_and_the_empty_prediction_is_zero():
    assert patch_similarity(OLD, {}, {}) == (1.0, {})
    assert patch_similarity(OLD, {"util.py": "X = 1\n"}, {}) == (1.0, {})  # an oracle that changes nothing
    assert patch_similarity(OLD, FIXED, {})[0] == 0.0                       # the no-op's value


@pytest.mark.parametrize("text, why", [
    ("I would change the minus to a plus.", "exactly one <solution>"),
    ("<solution></solution>", "no SEARCH/REPLACE edit block"),
    ("<solution>\n```python\n### calc.py\n<<<<<<< SEARCH\n    return a * a\n=======\n    return 0\n"
     ">>>>>>> REPLACE\n```\n</solution>", "SEARCH text not found"),
    ("<solution>\n```python\n### calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a - b\n"
     ">>>>>>> REPLACE\n```\n</solution>", "equals its REPLACE"),
    (reply({"util.py": [("X = 1", "X = 2")]}) * 2, "exactly one <solution>"),
    ("</solution> <solution>", "comes before"),
])
def test_malformed_answers_score_minus_one(text, why):
    reward, info = similarity_reward(OLD, FIXED, text)
    assert reward == -1.0 and why in info["malformed"]


def test_edit_semantics_are_swe_rls():
    # a SEARCH matches at a line start, and every occurrence is replaced
    assert apply_edit_blocks({"f": "x = 1\ny = x = 1\nx = 1\n"}, {"f": [("x = 1", "x = 2")]}) == \
        {"f": "x = 2\ny = x = 1\nx = 2\n"}
    # an empty SEARCH on a missing file creates it
    assert apply_edit_blocks({}, {"new.py": [("", "A = 1\n")]}) == {"new.py": "A = 1\n"}
    with pytest.raises(MalformedAnswer):
        parse_answer(OLD, "<solution>```\n### util.py\n<<<<<<< SEARCH\nX = 1\n=======\nX = 2\n>>>>>>> REPLACE\n</solution>")


def test_oracle_answer_round_trips_multi_hunk_new_and_deleted_files():
    old = {"a.py": "".join(f"line {i}\n" for i in range(30)), "gone.py": "print(1)\nprint(2)\n", "dup.py": "x\nx\ny\n"}
    new = {"a.py": old["a.py"].replace("line 3\n", "line three\n").replace("line 25\n", ""),
           "gone.py": None, "fresh.py": "def f():\n    return 1\n", "dup.py": "x\nx\nz\n"}
    text = oracle_answer(old, new)
    assert text is not None
    assert parse_answer(old, text) == {k: v or "" for k, v in new.items()}
    assert similarity_reward(old, new, text)[0] == 1.0


def test_tests_then_similarity_three_branches():
    tau = 0.5
    assert mixed(True, 0.0, tau) == 1.0                 # tests pass: +1 whatever the patch
    assert mixed(False, 0.8, tau) == pytest.approx(-1 + 0.5 * 0.8)   # near the fix
    assert mixed(False, 0.49, tau) == -1.0              # below tau: plain failure
    assert mixed(False, 0.5, tau) == pytest.approx(-1 + 0.25)   # at tau: partial credit already
    # s counts the oracle's files only: an extra file the oracle does not touch changes nothing
    pred = {"calc.py": FIXED["calc.py"], "extra.py": "junk\n"}
    assert oracle_file_similarity(OLD, {"calc.py": FIXED["calc.py"]}, pred) == 1.0
    assert patch_similarity(OLD, {"calc.py": FIXED["calc.py"]}, pred)[0] == 0.5


def test_localization_overlap():
    assert localization_reward(["a.py", "b.py"], ["a.py"]) == pytest.approx(2 / 3)
    assert localization_reward([], ["a.py"]) == 0.0 and localization_reward(["a.py"], ["a.py"]) == 1.0


def test_reward_specs_and_their_errors():
    spec = RewardSpec.from_dict({"mode": "composite", "checkers": ["ruff", "mypy"],
                                 "weights": {"tests": 1.0, "lint": 0.5, "types": 0.5, "turn_cost": 0.1}})
    reward, terms = composite_reward(spec, {"tests": 1.0, "lint": -1.0, "types": 1.0}, turns=3)
    assert terms == pytest.approx({"tests": 1.0, "lint": -0.5, "types": 0.5, "turn_cost": -0.3})
    assert reward == 0.7
    assert composite_reward(spec, {"tests": 1.0, "lint": 1.0, "types": 1.0}, turns=0)[0] == 1.0  # clamped
    for bad, message in [({"mode": "vibes"}, "mode: 'vibes' unknown"),
                         ({"mode": "composite", "checkers": ["eslint"]}, "unknown checker 'eslint'"),
                         ({"mode": "composite", "weights": {"lint": 1}}, "weights.lint needs `ruff`"),
                         ({"tau": 2}, "tau: expected a number in [0.0, 1.0]"),
                         ({"mode": "tests", "colour": 1}, "unknown key(s) colour"),
                         ([1, 2], "expected a mapping")]:
        with pytest.raises(RewardSpecError, match=None) as e:
            RewardSpec.from_dict(bad)
        assert message in str(e.value) and "\n" not in str(e.value)
