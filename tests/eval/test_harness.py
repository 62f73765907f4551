"""pass@k against hand-computed values, resume, and bad input (one line each, results already written kept)."""
import json
import socket
from math import comb

import pytest

from cwm.eval.backends import OracleBackend, SamplingParams
from cwm.eval.cli import SAMPLES, main
from cwm.eval.harness import ks_for, pass_at_k, pass_at_k_table, run_suite


@pytest.mark.parametrize("n,c,k,expected", [
    (1, 1, 1, 1.0), (1, 0, 1, 0.0),
    (5, 0, 1, 0.0), (5, 0, 5, 0.0),            # c = 0: never
    (5, 1, 5, 1.0), (5, 2, 5, 1.0),            # n = k: right when any sample is
    (5, 2, 1, 2 / 5),                          # pass@1 = c / n
    (5, 2, 2, 1 - 3 / 10),                     # 1 - C(3,2)/C(5,2)
    (10, 3, 5, 1 - 21 / 252),                  # 1 - C(7,5)/C(10,5)
    (4, 4, 2, 1.0), (6, 5, 2, 1.0),            # n - c < k
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_k_table_and_ks():
    assert ks_for(1) == [1] and ks_for(3) == [1, 2, 3] and ks_for(10) == [1, 2, 5, 10]
    assert ks_for(25) == [1, 2, 5, 10, 20, 25]
    table = pass_at_k_table([(4, 0), (4, 2), (4, 4)])
    assert table["pass@1"] == pytest.approx((0 + 0.5 + 1) / 3)
    assert table["pass@4"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


class CountingOracle(OracleBackend):
    def __init__(self):
        super().__init__()
        self.asked = []

    def generate(self, prompts, params):
        self.asked += [p.id for p in prompts]
        return super().generate(prompts, params)


def test_resume_skips_examples_already_scored(tmp_path):
    from cwm.eval.cruxeval import OutputPrediction, load_examples

    examples = load_examples(SAMPLES / "cruxeval.jsonl")
    suite, params = OutputPrediction(), SamplingParams(stop=("\n",))
    first = CountingOracle()
    run_suite(suite, examples[:5], first, params, tmp_path, input_name="s", progress=False)
    # a killed run leaves a torn last line: it is ignored and that example runs again
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"id": "cx-5", "sco')
    second = CountingOracle()
    summary = run_suite(suite, examples, second, params, tmp_path, input_name="s", progress=False)
    assert first.asked == [e["id"] for e in examples[:5]]
    assert second.asked == [e["id"] for e in examples[5:]]
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert lines[5] == '{"id": "cx-5", "sco'   # the torn line stays on its own line
    rows = [json.loads(line) for i, line in enumerate(lines) if i != 5]
    assert sorted(r["id"] for r in rows) == sorted(e["id"] for e in examples)
    assert summary["examples"] == len(examples) and summary["accuracy"] == 1.0


def _bad_file(tmp_path, text):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    return path


@pytest.mark.parametrize("suite,text,says", [
    ("output-prediction", '{"id": "a", "code": "def f(): pass", "input": "", "output": "None"}\nnot json\n',
     "bad.jsonl:2: not JSON"),
    ("output-prediction", '{"id": "a", "code": "def f(): pass", "input": ""}\n', "bad.jsonl:1: no field 'output'"),
    ("input-prediction", '[1, 2]\n', "bad.jsonl:1: a JSON list, not an object"),
    ("codegen", '{"task_id": "t", "prompt": "def f():"}\n', "bad.jsonl:1: no field 'test', 'entry_point'"),
    ("trace-prediction", '{"id": "x", "code": 3, "input": "", "output": "1"}\n', "field 'code' must be a string"),
])
def test_a_file_in_the_wrong_format_is_named_by_line(suite, text, says, tmp_path, capsys):
    assert main([suite, str(_bad_file(tmp_path, text)), "--model", "oracle", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1 and "expected" in err


def test_shards_that_are_not_shards(tmp_path, capsys):
    assert main(["trace-prediction", str(tmp_path / "nowhere"), "--model", "oracle", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nowhere" in err and len(err.splitlines()) == 1


def test_a_folder_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["output-prediction", "--model", str(tmp_path), "-o", str(tmp_path / "o"), "--limit", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a model folder" in err and str(tmp_path) in err and len(err.splitlines()) == 1


def test_a_server_that_does_not_answer_keeps_results(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["output-prediction", "--model", "oracle", "-o", str(out), "--limit", "3", "--no-progress"]) == 0
    before = (out / "results.jsonl").read_text()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    capsys.readouterr()
    assert main(["output-prediction", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m",
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not answer" in err and str(port) in err and len(err.splitlines()) == 1
    assert (out / "results.jsonl").read_text() == before


def test_a_results_folder_of_other_settings_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["output-prediction", "--model", "oracle", "-o", str(out), "--limit", "2", "--no-progress"]) == 0
    before = (out / "results.jsonl").read_text()
    capsys.readouterr()
    assert main(["output-prediction", "--model", "wrong", "-o", str(out), "--limit", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "other settings" in err and "model" in err and len(err.splitlines()) == 1
    assert (out / "results.jsonl").read_text() == before


def test_a_retrained_model_is_another_model_and_fresh_starts_over(tiny_model_dir, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    out = tmp_path / "o"
    common = ["output-prediction", "--model", str(model), "-o", str(out), "--limit", "1", "--max-tokens", "4",
              "--no-progress"]
    assert main(common) == 0
    assert main(common) == 0                 # same model: resumes, nothing to do
    (model / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes())   # "retrained"
    capsys.readouterr()
    assert main(common) == 2
    assert "model_fingerprint" in capsys.readouterr().err
    assert main([*common, "--fresh"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 1
