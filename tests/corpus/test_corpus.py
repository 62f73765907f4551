"""`cwm-trace corpus` and `cwm-forager build-images`: lists of repositories built and traced item by item."""
from __future__ import annotations

import pytest
from corpus_helpers import all_keys, cli, rows

from cwm.corpus import CorpusInputError, parse_list

SDISTS = """\
# three real packages, pinned as pip writes them, and one that cannot install (a C extension; no compiler there)
six==1.17.0 --hash=sha256:ff70335d468e7eb6ec65b95b99d3a2836546063f63acc5171de367e834932a81
cachetools==5.3.3 --hash=sha256:ba29e2dfa0b8b556606f097407ed1aa62080ee108ab0dc5ec9d6a723a007d105
idna==3.7 --hash=sha256:028ff3aadf0609c1fd278d8ea3089299412a7a8b9bd005dd08b9f8285bcb5cfc
ciso8601==2.3.1 --hash=sha256:3212c7ffe5d8080270548b5f2692ffd2039683b6628a8d2ad456122cc5793c4c
"""


def one_error_line(err: str, prefix: str = "cwm-trace: error:") -> str:
    lines = [line for line in err.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_list_forms_parse(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "list.txt").write_text("# comment\n\nrepo  # a folder\nsix==1.17.0\n"
                                       "idna==3.7 --hash=sha256:" + "a" * 64 + "\n")
    items = parse_list(tmp_path / "list.txt")
    assert [(i.line, i.kind, i.name, i.version, i.sha256) for i in items] == [
        (3, "folder", "repo", None, None), (4, "sdist", "six", "1.17.0", None), (5, "sdist", "idna", "3.7", "a" * 64)]


@pytest.mark.parametrize("bad", ["no-such-folder", "six==1.17.0 --hash=md5:abc", "six==1.17.0 extra",
                                 "idna==3.7 --hash=sha256:abc"])
def test_a_bad_line_is_named_by_number_and_nothing_is_lost(tmp_path, bad):
    (tmp_path / "list.txt").write_text(f"# ok\nsix==1.17.0\n{bad}\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "corpus.jsonl").write_text('{"item": "x", "status": "traced"}\n')
    proc = cli("corpus", tmp_path / "list.txt", "-o", out)
    line = one_error_line(proc.stderr)
    assert proc.returncode == 2 and "list.txt:3" in line and bad.split()[0] in line
    assert (out / "corpus.jsonl").read_text() == '{"item": "x", "status": "traced"}\n'
    with pytest.raises(CorpusInputError, match="dup.txt:2: .* repeats line 1"):
        (tmp_path / "dup.txt").write_text("six==1.17.0\nsix==1.17.0\n")
        parse_list(tmp_path / "dup.txt")


def test_build_images_bad_line(tmp_path, capsys):
    from cwm.forager.cli import main
    (tmp_path / "list.txt").write_text("six==1.17.0\n???\n")
    assert main(["build-images", str(tmp_path / "list.txt")]) == 2
    line = one_error_line(capsys.readouterr().err, "cwm-forager build-images:")
    assert "list.txt:2" in line


def test_ray_address_that_does_not_answer(tmp_path, tiny_list):
    out = tmp_path / "out"
    out.mkdir()
    (out / "corpus.jsonl").write_text('{"item": "x", "status": "traced"}\n')
    proc = cli("corpus", tiny_list, "-o", out, "--ray", "127.0.0.1:9")
    line = one_error_line(proc.stderr)
    assert proc.returncode == 2 and "127.0.0.1:9" in line and "no Ray head answers" in line
    assert (out / "corpus.jsonl").read_text() == '{"item": "x", "status": "traced"}\n'


@pytest.mark.docker
@pytest.mark.slow
def test_local_corpus_traces_every_item_and_resumes(local_corpus, tiny_list):
    done = rows(local_corpus)
    assert len(done) == 4 and all(r["status"] == "traced" and r["tests"] == 4 for r in done.values()), done
    keys = all_keys(local_corpus)
    assert len(keys) == len(set(keys)) and len(keys) == sum(r["traces"] for r in done.values())
    manifest = (local_corpus / "manifest.json").read_text()
    again = cli("corpus", tiny_list, "-o", local_corpus)
    assert again.returncode == 0 and "0 run, 4 already done" in again.stdout, again.stdout
    assert (local_corpus / "manifest.json").read_text() == manifest
    assert not list((local_corpus / "running").glob("*.json"))


@pytest.mark.docker
@pytest.mark.network
@pytest.mark.slow
def test_real_sdists_three_traced_one_install_failure(docker_client, tmp_path):
    (tmp_path / "list.txt").write_text(SDISTS)
    out = tmp_path / "out"
    proc = cli("corpus", tmp_path / "list.txt", "-o", out, "--max-tests", "8", "--jobs", "2")
    if "RegistryUnreachable" in proc.stdout + proc.stderr or "could not download" in proc.stdout:
        pytest.skip(f"no package registry: {proc.stdout[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = rows(out)
    assert {k: v["status"] for k, v in done.items()} == {
        "six-1.17.0": "traced", "cachetools-5.3.3": "traced", "idna-3.7": "traced", "ciso8601-2.3.1": "failed"}
    assert done["ciso8601-2.3.1"]["cause"] == "install" and "gcc" in done["ciso8601-2.3.1"]["detail"]
    for slug in ("six-1.17.0", "cachetools-5.3.3", "idna-3.7"):
        assert done[slug]["tests"] == 8 and done[slug]["traces"] > 0
    assert "install 1" in proc.stdout and "failed: ciso8601-2.3.1 (line 5)" in proc.stdout
    keys = all_keys(out)
    assert len(keys) == len(set(keys)) == sum(r.get("traces", 0) for r in done.values())
    from cwm.data.shards import iter_records
    images = {r["origin"]["image"] for r in iter_records(out)}
    assert len(images) == 3 and all(i.startswith("cwm-corpus/") for i in images)
    log = (out / "corpus.jsonl").read_text()
    again = cli("corpus", tmp_path / "list.txt", "-o", out, "--max-tests", "8")
    assert again.returncode == 0 and "0 run, 4 already done" in again.stdout
    assert (out / "corpus.jsonl").read_text() == log
    assert sorted(all_keys(out)) == sorted(keys)
