"""cwm-trace on the example project: outcomes unchanged by tracing, shards readable by webdataset and datasets,
render, and crash-and-resume (SIGKILL mid-run, rerun, same samples as an uninterrupted run)."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from cwm.tracing.run import sample_key
from trace_cli_helpers import CLI, REPO, SHOP, cli, shard_files, shard_samples, unit_statuses, untraced_outcomes


def test_tracing_keeps_every_test_outcome(traced_shop, target_python):
    oracle = untraced_outcomes(target_python, SHOP)
    assert len(oracle) >= 10
    assert unit_statuses(traced_shop) == oracle
    samples = [record for _, record in shard_samples(traced_shop)]
    entries = {r["origin"]["path"] + "::" + r["origin"]["qualname"] for r in samples if r["origin"]["kind"] == "test"}
    ran = {nodeid for nodeid, status in oracle.items() if status != "skipped"}
    assert ran <= entries, "a test that ran has no trace"
    assert all(r["frames"] for r in samples if r["origin"]["kind"] == "test" and r["outcome"] == "returned")


def test_shards_readable_by_webdataset(traced_shop):
    import webdataset as wds

    urls = [str(p) for p in shard_files(traced_shop)]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    expected = shard_samples(traced_shop)
    assert [s["__key__"] for s in samples] == [k for k, _ in expected]
    assert [json.loads(s["json"]) for s in samples] == [r for _, r in expected]
    assert all(json.loads(s["json"])["schema"] == "cwm.trace/1" for s in samples)


def test_shards_readable_by_datasets(traced_shop, tmp_path):
    import datasets

    urls = [str(p) for p in shard_files(traced_shop)]
    ds = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    expected = shard_samples(traced_shop)
    assert ds["__key__"] == [k for k, _ in expected]
    assert [row["id"] for row in ds["json"]] == [r["id"] for _, r in expected]


def test_render_prints_cwm_text(traced_shop, capsys):
    from cwm.trace_cli import main
    from tracer.format import START_MARKER, parse_trace, render_trace

    assert main(["render", str(traced_shop), "--first"]) == 0
    text = capsys.readouterr().out
    first = shard_samples(traced_shop)[0][1]
    assert text == render_trace(first) and START_MARKER in text
    parsed = parse_trace(text)
    assert [(f["kind"], f["source"]) for f in parsed["frames"]] == [(f["kind"], f["source"]) for f in first["frames"]]
    last = shard_samples(traced_shop)[-1][1]
    assert main(["render", str(traced_shop), "--key", last["id"]]) == 0
    assert capsys.readouterr().out == render_trace(last)


def test_sigkill_then_resume_gives_the_uninterrupted_samples(traced_shop, target_python, tmp_path):
    """Kill -9 mid-run, rerun: the samples are exactly those of the uninterrupted run (keys are a unit's
    nodeid and position, so the reference is the session run restricted to the same tests)."""
    out = tmp_path / "traces"
    select = ["--tests", "tests/test_pricing.py::test_percent_off*", "--tests", "tests/test_cart.py::*"]
    args = [str(SHOP), "-o", str(out), "--workers", "1", "--python", target_python, "--shard-samples", "8", *select]
    proc = subprocess.Popen([*CLI, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:   # kill as soon as one shard is complete: some tests done, most not
        while time.monotonic() < deadline and proc.poll() is None:
            manifest = out / "manifest.json"
            if manifest.exists() and json.loads(manifest.read_text())["shards"]:
                break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_keys = [k for k, _ in shard_samples(out)]
    reference_log = [json.loads(line) for line in (traced_shop / "units.jsonl").read_text().splitlines()]
    reference = {sample_key(e["group"], i) for e in reference_log for i in range(e["traces"])
                 if e["group"].startswith(("tests/test_pricing.py::test_percent_off", "tests/test_cart.py::"))}
    assert 0 < len(killed_keys) < len(reference)

    rerun = cli(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = re.search(r"(\d+) run, (\d+) already done", rerun.stdout)
    assert resumed and int(resumed[2]) > 0, rerun.stdout
    keys = [k for k, _ in shard_samples(out)]
    assert not [k for k, n in Counter(keys).items() if n > 1], "duplicate samples"
    missing, extra = reference - set(keys), set(keys) - reference
    log = (out / "units.jsonl").read_text()
    assert not missing and not extra, f"{len(missing)} missing, {len(extra)} extra; run log:\n{log}"
    assert set(killed_keys) <= set(keys)
    assert not list(out.glob("*.tmp"))
    assert not list(Path(tempfile.gettempdir()).glob(f"cwm-trace-{proc.pid}-*")), "the killed run's scratch is left"


def test_budgets_and_episode_switch_reach_the_tracer(traced_shop, target_python, tmp_path):
    """--no-function-episodes: one trace per test; --max-frames 20: the tests whose full trace (the session run) is
    longer come back cut at the budget with outcome frame_budget, the others unchanged."""
    select = "tests/test_categories.py::*"
    proc = cli(SHOP, "-o", tmp_path, "--python", target_python, "--workers", "2", "--tests", select,
               "--no-function-episodes", "--max-frames", "20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    full = {r["origin"]["qualname"]: r for _, r in shard_samples(traced_shop)
            if r["origin"]["kind"] == "test" and r["origin"]["path"] == "tests/test_categories.py"}
    cut = {r["origin"]["qualname"]: r for _, r in shard_samples(tmp_path)}
    assert len(shard_samples(tmp_path)) == len(cut) == len(full) == 3
    assert any(len(r["frames"]) > 20 for r in full.values())
    for name, record in cut.items():
        if len(full[name]["frames"]) > 20:
            assert record["outcome"] == "frame_budget" and len(record["frames"]) <= 20
        else:
            assert record["frames"] == full[name]["frames"]
