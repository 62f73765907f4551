"""Function mode: each line is traced as entry(input); the outcome agrees with running the code directly."""
from __future__ import annotations

import json

from trace_cli_helpers import cli, records_by_group, unit_statuses

FUNCTIONS = [
    {"code": "def f(n):\n    return 1 if n < 2 else n * f(n - 1)\n", "input": "5"},
    {"code": "def total(xs, k=1):\n    s = 0\n    for x in xs:\n        s += x * k\n    return s\n",
     "entry": "total", "input": "[1, 2, 3], k=3"},
    {"code": "def f(d):\n    return d['missing']\n", "input": "{}"},
    {"code": "class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n"
             "        self.items.append(x)\n        return len(self.items)\n\n"
             "def f(xs):\n    s = Stack()\n    for x in xs:\n        s.push(x)\n    return s.items\n",
     "input": "'abc'"},
]


def direct_outcome(line: dict) -> str:
    """The oracle: run entry(input) in this interpreter, untraced."""
    namespace = {}
    exec(line["code"], namespace)
    try:
        eval(f"{line.get('entry', 'f')}({line['input']})", namespace)
    except Exception:
        return "raised"
    return "returned"


def test_functions_file_traced_once_each_and_resumed(tmp_path, target_python):
    src = tmp_path / "functions.jsonl"
    src.write_text("\n".join(json.dumps(line) for line in FUNCTIONS) + "\n")
    out = tmp_path / "out"
    proc = cli("functions", src, "-o", out, "--python", target_python, "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = unit_statuses(out)
    groups = sorted(statuses, key=lambda g: int(g[4:].split("-")[0]))
    assert [statuses[g] for g in groups] == [direct_outcome(line) for line in FUNCTIONS]
    records = records_by_group(out)
    for group, line in zip(groups, FUNCTIONS):
        (record,) = records[group]
        assert record["outcome"] == direct_outcome(line)
        assert record["origin"]["kind"] == "function" and record["origin"]["input"] == line["input"]
        assert record["frames"][0]["kind"] == "call"
    manifest = (out / "manifest.json").read_bytes()

    again = cli("functions", src, "-o", out, "--python", target_python)
    assert again.returncode == 0 and "0 run, 4 already done" in again.stdout
    assert (out / "manifest.json").read_bytes() == manifest


def test_a_function_that_cannot_run_says_why(tmp_path, target_python):
    """Code that does not define the entry, or arguments that do not parse: status error, and the run log's detail
    says what went wrong (the child's own words), not an empty string."""
    src = tmp_path / "functions.jsonl"
    src.write_text(json.dumps({"code": "def g():\n    return 1\n", "input": ""}) + "\n"
                   + json.dumps({"code": "def f(x):\n    return x\n", "input": "1 +"}) + "\n")
    out = tmp_path / "out"
    proc = cli("functions", src, "-o", out, "--python", target_python)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = sorted((json.loads(line) for line in (out / "units.jsonl").read_text().splitlines()),
                 key=lambda entry: int(entry["group"][4:].split("-")[0]))
    assert [entry["status"] for entry in log] == ["error", "error"]
    assert "NameError" in log[0]["detail"] and "defines no 'f'" in log[0]["detail"]
    assert "SyntaxError" in log[1]["detail"]
