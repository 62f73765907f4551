"""Held-out traces never leak into training: on examples/shop traced with function episodes (cwm-trace's default)
and the demo recipe's 10% holdout, no held-out record's frame sequence occurs, frame for frame, inside a record the
training loader keeps. The oracle is a plain subsequence search over the records themselves."""
from __future__ import annotations

from cwm.data.documents import is_heldout, iter_file_records, iter_heldout, split_key
from cwm.data.recipe import Source
from trace_cli_helpers import shard_files

FRACTIONS = (0.1, 0.3)


def _frames(record):
    return [(f["kind"], f["path"], f["line"], f["source"], f["locals"], f["value"]) for f in record["frames"]]


def _leaks(heldout, training):
    """The held-out records whose frames occur as a contiguous run inside a training record."""
    leaked = []
    for key, record in heldout:
        needle = _frames(record)
        n = len(needle)
        if n and any(hay[i:i + n] == needle for hay in map(_frames, training) for i in range(len(hay) - n + 1)):
            leaked.append(key)
    return leaked


def _source(traced, fraction):
    files = [str(p) for p in shard_files(traced)]
    return Source(name="traces", kind="trace", paths=files, weight=1.0, holdout=fraction, files=files)


def test_no_heldout_frames_in_training(traced_shop):
    for fraction in FRACTIONS:
        source = _source(traced_shop, fraction)
        records = [(k, r) for path in source.files for k, r in iter_file_records(source, path)]
        assert sum(r["origin"]["kind"] == "function" for _, r in records) > 20, "no function episodes to leak"
        assert all(r["origin"].get("unit") for _, r in records)
        training = [r for k, r in records if not is_heldout(split_key(k, r), fraction)]   # what the loader keeps
        heldout = list(iter_heldout(source))
        assert heldout and len(heldout) + len(training) <= len(records)
        assert {split_key(k, r) for k, r in heldout}.isdisjoint({split_key(k, r) for k, r in records
                                                                if not is_heldout(split_key(k, r), fraction)})
        assert _leaks(heldout, training) == [], fraction
        # The check has teeth: the old per-key split held out records whose frames training holds.
        old_heldout = [(k, r) for k, r in records if is_heldout(k, fraction)]
        old_training = [r for k, r in records if not is_heldout(k, fraction)]
        assert _leaks(old_heldout, old_training), "the per-key split leaked nothing here: the test shows nothing"
