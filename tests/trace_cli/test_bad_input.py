"""Bad input: one clear error line, exit code != 0, no traceback, nothing already written lost."""
from __future__ import annotations

import json
import stat

import pytest

from cwm.trace_cli import main


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(code, err, *needles):
    lines = [line for line in err.splitlines() if line.startswith("cwm-trace: error:")]
    assert code == 2 and len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


def test_path_that_does_not_exist(capsys, tmp_path, target_python):
    code, _, err = run_main(capsys, tmp_path / "nowhere", "-o", tmp_path / "out", "--python", target_python)
    assert_one_error_line(code, err, "nowhere", "no such directory")


def test_project_with_no_tests(capsys, tmp_path, target_python):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "lib.py").write_text("def f():\n    return 1\n")
    code, _, err = run_main(capsys, tmp_path / "proj", "-o", tmp_path / "out", "--python", target_python)
    assert_one_error_line(code, err, "no pytest tests found")


@pytest.mark.parametrize("body", ["#!/bin/sh\necho hello\n", "not even a script\n"])
def test_interpreter_that_is_not_python(capsys, tmp_path, body):
    fake = tmp_path / "python"
    fake.write_text(body)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "f.jsonl").write_text('{"code": "def f():\\n    return 1\\n"}\n')
    code, _, err = run_main(capsys, "functions", tmp_path / "f.jsonl", "-o", tmp_path / "out", "--python", fake)
    assert_one_error_line(code, err, str(fake), "not a Python interpreter")


def test_render_without_shards(capsys, tmp_path):
    code, _, err = run_main(capsys, "render", tmp_path)
    assert_one_error_line(code, err, str(tmp_path), "no shards")
    code, _, err = run_main(capsys, "render", tmp_path / "nowhere", "--first")
    assert_one_error_line(code, err, "nowhere", "no shards")


def test_missing_interpreter(capsys, tmp_path):
    (tmp_path / "f.jsonl").write_text('{"code": "def f():\\n    return 1\\n"}\n')
    code, _, err = run_main(capsys, "functions", tmp_path / "f.jsonl", "-o", tmp_path / "o",
                            "--python", tmp_path / "py")
    assert_one_error_line(code, err, "no such file")


def test_bad_jsonl_line_loses_nothing_written(capsys, tmp_path, target_python):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"code": "def f(x):\n    return x * 2\n", "input": "21"}) + "\n")
    out = tmp_path / "out"
    code, _, err = run_main(capsys, "functions", good, "-o", out, "--python", target_python)
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"code": "def f():\n    return 1\n"}) + "\n" + '{"code": "def f(:\n' + "\n")
    code, _, err = run_main(capsys, "functions", bad, "-o", out, "--python", target_python)
    assert_one_error_line(code, err, f"{bad}:2:", "not valid JSON")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    bad.write_text('{"entry": "g"}\n')
    code, _, err = run_main(capsys, "functions", bad, "-o", out, "--python", target_python)
    assert_one_error_line(code, err, f"{bad}:1:", '"code"')
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
