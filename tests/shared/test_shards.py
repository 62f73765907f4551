"""Shards: atomic, resumable, readable by webdataset and datasets (DESIGN.md §3)."""
import glob
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from cwm.data.shards import MANIFEST, ShardWriter, iter_records, record_key, shard_paths


def write_groups(out, groups, per_group=3, max_samples=4):
    with ShardWriter(out, "s", max_samples=max_samples) as w:
        for g in groups:
            w.add([(record_key([g, i]), {"g": g, "i": i}) for i in range(per_group)], group=f"g{g}")


def test_roll_over_and_groups_stay_whole(tmp_path):
    write_groups(tmp_path, range(5))
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert [s["name"] for s in manifest["shards"]] == [f"s-{i:06d}.tar" for i in range(5)]
    for entry in manifest["shards"]:
        groups = {r["g"] for r in iter_records(tmp_path / entry["name"])}
        assert {f"g{g}" for g in groups} == set(entry["groups"])
        assert entry["samples"] == 3
    assert sorted((r["g"], r["i"]) for r in iter_records(tmp_path)) == [(g, i) for g in range(5) for i in range(3)]


def test_reopen_skips_done_keys_and_groups(tmp_path):
    write_groups(tmp_path, range(3))
    w = ShardWriter(tmp_path, "s", max_samples=4)
    assert w.done_groups == {"g0", "g1", "g2"}
    assert w.add([(record_key([0, 0]), {"g": 0, "i": 0})]) == 0
    assert w.add([(record_key([9, 0]), {"g": 9, "i": 0})], group="g9") == 1
    w.close()
    assert len(list(iter_records(tmp_path))) == 10
    assert shard_paths(tmp_path)[-1].name == "s-000003.tar"


def test_killed_writer_leaves_no_half_shard_and_resume_completes(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.getcwd()!r})
        from cwm.data.shards import ShardWriter, record_key
        w = ShardWriter({str(tmp_path)!r}, "s", max_samples=4)
        for g in range(10):
            w.add([(record_key([g, i]), {{"g": g, "i": i}}) for i in range(3)], group=f"g{{g}}")
            if g == 6:
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    assert glob.glob(str(tmp_path / "*.tmp")), "the open shard should still be a temporary file"
    finals = sorted(p.name for p in tmp_path.glob("*.tar"))
    assert finals == [f"s-{i:06d}.tar" for i in range(6)]
    write_groups(tmp_path, range(10))  # the resumed run
    assert not glob.glob(str(tmp_path / "*.tmp"))
    got = sorted((r["g"], r["i"]) for r in iter_records(tmp_path))
    assert got == [(g, i) for g in range(10) for i in range(3)]


def test_manifest_listed_tmp_is_renamed_on_open(tmp_path):
    write_groups(tmp_path, range(2))
    last = tmp_path / "s-000001.tar"
    os.replace(last, str(last) + ".tmp")  # crash between manifest write and rename
    w = ShardWriter(tmp_path, "s")
    w.close()
    assert last.exists() and w.done_groups == {"g0", "g1"}


def test_readable_without_the_toolkit(tmp_path):
    wds = pytest.importorskip("webdataset")
    datasets = pytest.importorskip("datasets")
    write_groups(tmp_path, range(3))
    urls = sorted(glob.glob(str(tmp_path / "*.tar")))
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == 9 and all(json.loads(s["json"])["g"] in (0, 1, 2) for s in samples)
    ds = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert ds.num_rows == 9 and sorted(r["json"]["i"] for r in ds) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_a_text_no_utf8_can_encode_is_written_with_its_escape(tmp_path):
    """A lone surrogate (a user __repr__ may return one) is written as its visible escape, the rest as it was."""
    with ShardWriter(tmp_path, "s") as w:
        w.add([("a", {"x": "W\ud800", "y": ["\udfff", 1], "z": "é"}), ("b", {"x": "plain"})], group="g")
    (tar,) = glob.glob(str(tmp_path / "*.tar"))
    assert list(iter_records([tar])) == [{"x": "W\\ud800", "y": ["\\udfff", 1], "z": "é"}, {"x": "plain"}]


def test_keys_of_names_no_utf8_can_encode():
    """A file name with bytes its file system's encoding cannot decode reaches Python with surrogates in it."""
    assert len({record_key(["tests/\udcff.py", 0]), record_key(["tests/\udcfe.py", 0]), record_key(["x", 0])}) == 3


def test_bad_keys_and_prefix_are_refused(tmp_path):
    with pytest.raises(ValueError, match="prefix"):
        ShardWriter(tmp_path, "a.b")
    with ShardWriter(tmp_path, "s") as w, pytest.raises(ValueError, match="key"):
        w.add([("has.dot", {})])
