"""Every suite's scorer against independent answers: an oracle backend (each example's known solution) scores
100%, a wrong one 0%, through the same command a user runs."""
import json

import pytest

from cwm.eval.cli import main

CASES = [  # (suite, extra args, the metric that must be 1 for the oracle and 0 for the wrong backend)
    ("output-prediction", [], "accuracy"),
    ("output-prediction", ["--style", "trace"], "accuracy"),
    ("input-prediction", [], "accuracy"),
    ("trace-prediction", [], "next_state_accuracy"),
    ("codegen", ["--n", "3"], "pass@1"),
]


@pytest.mark.parametrize("backend,expected", [("oracle", 1.0), ("wrong", 0.0)])
@pytest.mark.parametrize("suite,extra,metric", CASES, ids=[" ".join([c[0], *c[1]]) for c in CASES])
def test_oracle_scores_all_and_wrong_scores_none(suite, extra, metric, backend, expected, tmp_path,
                                                 eval_tokenizer_dir):
    out = tmp_path / "out"
    args = [suite, "--model", backend, "-o", str(out), "--no-progress", *extra]
    if suite == "trace-prediction":
        args += ["--tokenizer", str(eval_tokenizer_dir)]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert summary[metric] == expected and summary["score"] == expected
    assert len(rows) == summary["examples"] >= 6 and all(r["score"] == expected for r in rows)
    assert all({"id", "prompt", "score"} <= set(r) for r in rows)
    if suite == "trace-prediction":
        for key in ("generation/prefix", "generation/exact_traces", "generation/result_accuracy",
                    "next_state/line", "next_state/return", "frame/call", "generation/prefix/exception"):
            assert summary[key] == expected, key
    if suite == "codegen":
        assert summary["pass@2"] == summary["pass@3"] == expected and (out / "pass_at_k.png").exists()
    assert (out / "summary.md").read_text().count("|") > 10


def test_bundled_sample_outputs_are_what_the_code_returns():
    """The sample's `output` fields against a fresh run of each function in the jail (not the oracle's answer)."""
    from cwm.data.value_match import reprs_match
    from cwm.eval.cli import SAMPLES
    from cwm.eval.cruxeval import load_examples
    from cwm.eval.execute import call_function

    for ex in load_examples(SAMPLES / "cruxeval.jsonl"):
        result = call_function(ex["code"], "f", ex["input"])
        assert result.status == "returned" and result.repr == ex["output"], ex["id"]
    assert not reprs_match(call_function("def f(x):\n    return x + 1\n", "f", "1").repr, "3")


def test_answers_are_parsed_leniently_and_scored_strictly():
    from cwm.eval.cruxeval import InputPrediction, OutputPrediction

    assert OutputPrediction.direct_answer(" 'ab'\nassert f(2) == 3") == "'ab'"
    assert OutputPrediction.direct_answer(" `[1, 2]`  \n") == "[1, 2]"
    assert InputPrediction.answer("[1, (2, 3)], 'x)') == 4  # trailing") == "[1, (2, 3)], 'x)'"
    assert InputPrediction.answer("1, 2") is None


def test_swe_reward_model_needs_a_tree_search_and_a_reward_model_folder(tmp_path, capsys):
    from cwm.eval.cli import main

    out = tmp_path / "out"
    assert main(["swe", "--model", "oracle", "--reward-model", str(tmp_path), "-o", str(out), "--no-progress"]) == 2
    assert main(["swe", "--model", "oracle", "--search", "tree", "--reward-model", str(tmp_path), "-o", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["cwm-eval swe: --reward-model values the states of a tree search: add --search tree",
                   f"cwm-eval swe: --reward-model {tmp_path}: not a reward model folder (make one with "
                   "`python -m cwm.rl.reward_model train`)"]
    assert not out.exists()
