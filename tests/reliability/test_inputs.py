"""Inputs that used to hang, mislead or be found out too late (issue 22, defects 3, 5, 7, 9): non-regular
files, an index whose dense part is gone, damaged modules named for what they are, and ``-o``/``--tag``
refused before a search runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, write
from tests.reliability.conftest import one_line

pytestmark = pytest.mark.java


def test_pipes_and_devices_are_refused_not_read(cli, tmp_path, en_index):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, _, err = cli("index", "--docs", fifo, "--lang", "en", "--out", tmp_path / "x", "--no-dense")
    one_line(code, err, "not a regular file")
    code, _, err = cli("index", "--docs", "/dev/zero", "--lang", "en", "--out", tmp_path / "x", "--no-dense")
    one_line(code, err, "not a regular file", "/dev/zero")
    code, _, err = cli("search", "--index", en_index, "--topics", "/dev/zero", "--lang", "en", "--reranker", "none")
    one_line(code, err, "not a regular file")


def test_a_module_whose_weights_are_a_fifo_is_refused_at_once(tmp_path, saved_module):
    """In a real process with a timeout: before the fix this blocked forever."""
    from rerank.modules.format import WEIGHTS_FILE

    mod = saved_module(tmp_path / "mod")
    (mod / WEIGHTS_FILE).unlink()
    os.mkfifo(mod / WEIGHTS_FILE)
    p = subprocess.run(
        [sys.executable, "-m", "rerank.cli.main", "modules", "info", str(mod)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    one_line(p.returncode, p.stderr, "not a regular file", WEIGHTS_FILE)


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("missing", "module not found"),
        ("pickle only", "has no module.safetensors"),
        ("truncated", "not a valid safetensors file"),
        ("header not an object", "header is not a JSON object"),
    ],
)
def test_a_damaged_module_is_named_not_headless(tmp_path, saved_module, search_with_module, damage, needle):
    from rerank.modules.format import WEIGHTS_FILE

    mod = saved_module(tmp_path / "task", role="task", lang="en")
    w = mod / WEIGHTS_FILE
    if damage == "missing":
        shutil.rmtree(mod)
    elif damage == "pickle only":
        w.unlink()
        (mod / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    elif damage == "truncated":
        w.write_bytes(w.read_bytes()[:5])
    else:
        body = b"[1, 2]"
        w.write_bytes(len(body).to_bytes(8, "little") + body)
    code, _, err = search_with_module(mod)
    line = one_line(code, err, str(mod), needle)
    assert "no ranking head" not in line, line


def test_an_index_whose_dense_part_is_gone_says_so(cli, tmp_path, udhr_dir, tiny_bert):
    out = tmp_path / "idx"
    code, _, err = cli(
        "index", "--docs", udhr_dir / "docs.en.jsonl", "--lang", "en", "--out", out, "--model", tiny_bert, "-q"
    )
    assert code == 0, err
    assert json.loads((out / "rerank-index.json").read_text())["dense"] is True
    shutil.rmtree(out / "dense")
    code, _, err = cli("search", "--index", out, "--lang", "ky", "--reranker", "none", "билим")
    one_line(code, err, "incomplete", "dense", "--dense-only")
    code, _, err = cli("index", "--dense-only", "--out", out, "--model", tiny_bert, "-q")
    assert code == 0, err
    code, out_, err = cli(
        "search", "--index", out, "--lang", "en", "--reranker", "none", "--dense-model", tiny_bert, "education"
    )
    assert code == 0, err


def test_an_index_built_without_dense_says_how_to_add_it(cli, en_index):
    code, _, err = cli("search", "--index", en_index, "--lang", "ky", "--reranker", "none", "билим")
    assert code == 0, err
    assert "no dense part" in err and f"rerank index --dense-only --out {en_index}" in err, err


def test_output_and_tag_are_refused_before_the_search(cli, tmp_path, en_index, udhr_dir):
    topics = udhr_dir / "topics.en.tsv"
    code, _, err = cli(
        "search",
        "--index",
        tmp_path / "missing",
        "--topics",
        topics,
        "--lang",
        "en",
        "-o",
        tmp_path / "newdir" / "x.trec",
    )
    one_line(code, err, "missing")
    assert not (tmp_path / "newdir").exists()
    # an -o that cannot be written is reported first, before the (here missing) index is even opened
    blocker = write(tmp_path / "a-file", "")
    code, _, err = cli(
        "search", "--index", tmp_path / "missing", "--topics", topics, "--lang", "en", "-o", blocker / "x.trec"
    )
    one_line(code, err, "is not a folder", "a-file")


def test_an_unwritable_output_folder_is_refused_before_the_search(cli, tmp_path, en_index, udhr_dir):
    topics = udhr_dir / "topics.en.tsv"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root): the permission cannot be tested")
        code, _, err = cli(
            "search",
            "--index",
            en_index,
            "--topics",
            topics,
            "--lang",
            "en",
            "--reranker",
            "none",
            "-o",
            locked / "x.trec",
        )
        one_line(code, err, "not writable")
    finally:
        locked.chmod(0o700)


def test_a_bad_tag_is_refused_before_the_search(cli, tmp_path, udhr_dir):
    topics = udhr_dir / "topics.en.tsv"
    code, _, err = cli(
        "search",
        "--index",
        tmp_path / "missing",
        "--topics",
        topics,
        "--lang",
        "en",
        "-o",
        tmp_path / "x.trec",
        "--tag",
        "two words",
    )
    one_line(code, err, "tag")


def test_writing_a_run_into_a_new_folder_still_works(cli, tmp_path, en_index, udhr_dir):
    out = tmp_path / "new" / "deeper" / "run.trec"
    code, _, err = cli(
        "search",
        "--index",
        en_index,
        "--topics",
        write(tmp_path / "t.tsv", "1\teducation\n"),
        "--lang",
        "en",
        "--reranker",
        "none",
        "-o",
        out,
    )
    assert code == 0 and out.is_file(), err
