"""What a command may write: ``--overwrite`` replaces only an earlier output of the same kind and never an
input, an output appears complete or not at all (two writers: exactly one wins), leftovers of a killed
writer are cleaned up, and outputs get the permissions the umask gives (issue 22, defects 1, 2, 8, 9)."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from rerank.errors import RerankError
from rerank.files import atomic_dir, atomic_write, clear_stale, refuse_existing
from tests.conftest import write
from tests.reliability.conftest import one_line


def _precious(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    return write(folder / "notes.txt", "precious\n")


# ------------------------------------------------------------------------------- --overwrite and inputs


def test_overwrite_refuses_a_folder_that_is_not_an_index(cli, tmp_path, udhr_dir):
    notes = _precious(tmp_path / "keep")
    code, _, err = cli(
        "index",
        "--docs",
        udhr_dir / "docs.en.jsonl",
        "--lang",
        "en",
        "--out",
        tmp_path / "keep",
        "--no-dense",
        "--overwrite",
        "-q",
    )
    one_line(code, err, "keep", "not", "rerank-index.json")
    assert notes.read_text() == "precious\n" and (tmp_path / "keep" / "sub").is_dir()


def test_overwrite_never_replaces_the_input(cli, tmp_path, udhr_dir):
    docs = tmp_path / "docs.en.jsonl"
    docs.write_bytes((udhr_dir / "docs.en.jsonl").read_bytes())
    before = docs.read_bytes()
    code, _, err = cli("index", "--docs", docs, "--lang", "en", "--out", docs, "--no-dense", "--overwrite", "-q")
    one_line(code, err, "input")
    assert docs.read_bytes() == before
    # a folder holding the input is refused too
    code, _, err = cli("index", "--docs", docs, "--lang", "en", "--out", tmp_path, "--no-dense", "--overwrite", "-q")
    one_line(code, err, "input")
    assert docs.read_bytes() == before


def test_module_commands_refuse_other_folders_and_their_own_input(cli, tmp_path, saved_module):
    from rerank.modules.format import CONFIG_FILE

    src = saved_module(tmp_path / "mod")
    config_before = (src / CONFIG_FILE).read_bytes()
    code, _, err = cli("modules", "quantize", src, "--bits", "8", "--out", src, "--overwrite")
    one_line(code, err, "input")
    assert (src / CONFIG_FILE).read_bytes() == config_before
    notes = _precious(tmp_path / "keep")
    code, _, err = cli("modules", "quantize", src, "--bits", "8", "--out", tmp_path / "keep", "--overwrite")
    one_line(code, err, "module_config.json")
    assert notes.is_file()
    # an earlier module is replaced
    code, out, err = cli("modules", "quantize", src, "--bits", "8", "--out", tmp_path / "q8")
    assert code == 0, err
    code, out, err = cli("modules", "quantize", src, "--bits", "16", "--out", tmp_path / "q8", "--overwrite")
    assert code == 0 and json.loads((tmp_path / "q8" / CONFIG_FILE).read_text())["bits"] == 16, err


def test_eval_and_grid_outputs_refuse_other_folders(cli, tmp_path):
    qrels = write(tmp_path / "qrels.txt", "1 0 d1 1\n")
    run = write(tmp_path / "a.trec", "1 Q0 d1 1 2.0 a\n1 Q0 d2 2 1.0 a\n")
    notes = _precious(tmp_path / "keep")
    code, _, err = cli("eval", "run", "--qrels", qrels, "--run", run, "--out", tmp_path / "keep", "--overwrite")
    one_line(code, err, "keep")
    code, _, err = cli("eval", "run", "--qrels", qrels, "--run", run, "--out", qrels, "--overwrite")
    one_line(code, err, "input")
    assert notes.is_file() and qrels.read_text() == "1 0 d1 1\n"
    code, _, err = cli("eval", "run", "--qrels", qrels, "--run", run, "--out", tmp_path / "rep", "--metrics", "P@1")
    assert code == 0, err
    code, _, err = cli(
        "eval", "run", "--qrels", qrels, "--run", run, "--out", tmp_path / "rep", "--overwrite", "--metrics", "P@1"
    )
    assert code == 0, err
    from rerank.eval.grid import check_grid_folder

    with pytest.raises(RerankError, match="other than a grid"):
        check_grid_folder(tmp_path / "keep")
    check_grid_folder(tmp_path / "new")  # absent: fine


def test_a_file_output_never_replaces_a_folder(tmp_path):
    (tmp_path / "x.trec").mkdir()
    with pytest.raises(RerankError, match="is a folder"):
        refuse_existing(tmp_path / "x.trec", True)


# ------------------------------------------------------------------------------ complete or not at all


def test_a_folder_another_writer_placed_first_is_kept(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RerankError, match="another run"), atomic_dir(out, marker="m.json") as tmp:
        write(tmp / "m.json", "{}")
        with atomic_dir(out, marker="m.json") as other:  # a second writer finishes while the first runs
            write(other / "m.json", '{"first": true}')
    assert json.loads((out / "m.json").read_text()) == {"first": True}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_a_file_another_writer_placed_first_is_kept(tmp_path):
    out = tmp_path / "run.trec"
    with pytest.raises(RerankError, match="another run"), atomic_write(out) as f:
        f.write("mine\n")
        out.write_text("theirs\n")
    assert out.read_text() == "theirs\n" and [p.name for p in tmp_path.iterdir()] == ["run.trec"]


def test_overwrite_swaps_in_the_new_folder_whole(tmp_path):
    out = tmp_path / "out"
    for n in (1, 2):
        with atomic_dir(out, overwrite=True, marker="m.json") as tmp:
            write(tmp / "m.json", json.dumps({"n": n}))
            write(tmp / f"only-{n}", "")
    assert json.loads((out / "m.json").read_text()) == {"n": 2}
    assert sorted(p.name for p in out.iterdir()) == ["m.json", "only-2"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_parallel_writers_exactly_one_wins(tmp_path):
    out, barrier, results = tmp_path / "out", threading.Barrier(4), []

    def build(i: int) -> None:
        try:
            with atomic_dir(out, marker="m.json") as tmp:
                write(tmp / "m.json", json.dumps({"writer": i}))
                barrier.wait(timeout=10)
            results.append(("won", i))
        except RerankError as e:
            results.append(("refused", str(e)))

    threads = [threading.Thread(target=build, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    won = [i for what, i in results if what == "won"]
    assert len(results) == 4 and len(won) == 1, results
    assert json.loads((out / "m.json").read_text()) == {"writer": won[0]}


def test_a_dead_writers_leftovers_are_removed_and_a_live_ones_kept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".out.tmp-{dead_pid}-abc"
    stale.mkdir()
    write(stale / "half", "")
    stale_file = write(tmp_path / f".out.old-{dead_pid}-x", "")
    live = tmp_path / f".out.tmp-{os.getppid()}-abc"  # the test runner's parent: alive
    live.mkdir()
    other = tmp_path / f".outer.tmp-{dead_pid}-abc"  # another output's
    other.mkdir()
    removed = clear_stale(tmp_path / "out")
    assert set(removed) == {stale, stale_file} and live.is_dir() and other.is_dir()
    with atomic_dir(tmp_path / "out", marker="m.json") as tmp:  # a build clears them itself
        write(tmp / "m.json", "{}")
    assert (tmp_path / "out").is_dir()


# ---------------------------------------------------------------------------------------- permissions


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_the_umasks_permissions(tmp_path, umask):
    import torch
    from safetensors.torch import save_file

    old = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "out", marker="m.json") as tmp:
            write(tmp / "m.json", "{}")
            save_file({"x": torch.zeros(2)}, str(tmp / "w.safetensors"))  # safetensors writes owner-only files
            with atomic_dir(tmp / "inner", marker="m.json") as inner:
                write(inner / "m.json", "{}")
        with atomic_write(tmp_path / "run.trec") as f:
            f.write("x\n")
    finally:
        os.umask(old)

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    for folder in (tmp_path / "out", tmp_path / "out" / "inner"):
        assert mode(folder) == 0o777 & ~umask, oct(mode(folder))
    for f in (tmp_path / "out" / "m.json", tmp_path / "out" / "w.safetensors", tmp_path / "run.trec"):
        assert mode(f) == 0o666 & ~umask, (f, oct(mode(f)))
