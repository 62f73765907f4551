"""The same corpus traced twice, in separate processes (cwm-trace's own children), gives byte-identical shards:
memory addresses, a mock's id and thread idents are per-trace ordinals, records hold no wall time, tar members no
time stamp. The corpus is made of what carries such noise: default reprs, lambdas, bound methods, threads,
generators, mocks, weakrefs, sets of strings (their order follows the hash seed)."""
from __future__ import annotations

import json
import re

from trace_cli_helpers import cli, records_by_group

NOISY = '''import threading
import weakref
from unittest import mock


class Box:
    def get(self):
        return self


def gen(n):
    for i in range(n):
        yield i


def f(n):
    plain = object()
    box = Box()
    boxes = [Box() for _ in range(n)]
    again = box
    add = lambda x: x + 1
    method = box.get
    ref = weakref.ref(box)
    worker = threading.Thread(target=add, args=(1,))
    worker.start()
    worker.join()
    numbers = gen(n)
    first = next(numbers)
    fake = mock.MagicMock()
    fake.call(1)
    words = {"apple", "pear", "plum", "fig"}
    return plain, box, boxes, again, add, method, ref, worker, numbers, first, fake, words, method()
'''
FUNCTIONS = [{"code": NOISY, "input": "3"}, {"code": NOISY, "input": "2"}]


def _trace(tmp_path, name, target_python, *extra):
    src = tmp_path / "functions.jsonl"
    src.write_text("".join(json.dumps(line) + "\n" for line in FUNCTIONS))
    out = tmp_path / name
    proc = cli("functions", src, "-o", out, "--python", target_python, "--workers", "1", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_traced_twice_byte_identical_shards(tmp_path, target_python):
    first, second = (_trace(tmp_path, name, target_python) for name in ("one", "two"))
    shards = sorted(p.name for p in first.glob("*.tar"))
    assert shards and shards == sorted(p.name for p in second.glob("*.tar"))
    for name in shards + ["manifest.json"]:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    text = "".join((first / name).read_text(errors="replace") for name in shards)
    # The noise really was there, and is now ordinals in order of first appearance.
    records = [r for rs in records_by_group(first).values() for r in rs]
    entry = next(r for r in records if r["origin"]["qualname"] == "f" and r["frames"][0]["depth"] == 0
                 and r["origin"]["kind"] == "function" and r["origin"]["path"] == "<input>")
    shown = json.dumps(entry["frames"])
    assert "at 0x1>" in shown and "id='" in shown and ("stopped" in shown or "started" in shown)
    assert not re.search(r"0x[0-9a-f]{6,}", text), "a raw address is left"
    # first seen, first numbered: each new number is one more than the largest before it
    found = re.findall(r"at 0x([0-9a-f]+)[>;]|id='([0-9]+)'|(?:started|stopped) (?:daemon )?([0-9]+)", shown)
    numbers = [int(h, 16) if h else int(d or t) for h, d, t in found]
    assert len(set(numbers)) >= 8
    assert all(n <= max(numbers[:i], default=0) + 1 for i, n in enumerate(numbers)), numbers


def test_raw_values_switch_keeps_addresses(tmp_path, target_python):
    out = _trace(tmp_path, "raw", target_python, "--raw-values")
    records = [r for rs in records_by_group(out).values() for r in rs]
    assert any(re.search(r"at 0x[0-9a-f]{6,}", json.dumps(r["frames"])) for r in records)
