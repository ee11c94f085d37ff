"""Damaged or odd artefacts and inputs, each once, through the CLI: one line naming the file and the fault,
exit 2, never a traceback and never a silent wrong answer (issue 22, defects 4, 6, 7 and 9)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import write
from tests.reliability.conftest import one_line

pytestmark = pytest.mark.java


def _copy(index: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(index, tmp_path / index.name, symlinks=True))


def _search(cli, index: Path, *extra):
    return cli("search", "--index", index, "--lang", "en", "--reranker", "none", *extra, "education")


@pytest.mark.parametrize("damage", ["half", "100 bytes", "empty", "link to a text file"])
def test_a_damaged_document_store_is_one_line(cli, tmp_path, en_index, damage):
    idx = _copy(en_index, tmp_path)
    store = idx / "docs.sqlite"
    data = store.read_bytes()
    if damage == "half":
        store.write_bytes(data[: len(data) // 2])
    elif damage == "100 bytes":
        store.write_bytes(data[:100])
    elif damage == "empty":
        store.write_bytes(b"")
    else:
        store.unlink()
        store.symlink_to(write(tmp_path / "notes.txt", "not a database\n" * 100))
    code, _, err = _search(cli, idx, "--first-stage", "bm25")
    one_line(code, err, "docs.sqlite")


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("analyzer", 5, "analyzer"),
        ("k1", "abc", "k1"),
        ("documents", -3, "documents"),
        ("b", float("nan"), "b"),
        ("language", "zz", "language 'zz'"),
        ("analyzer", "lucene-de", "not the one for its language"),
        ("surprise", 1, "surprise"),
        ("two\nlines", 1, "'two\\nlines'"),  # found by the fuzzer: a key is shown on one line
    ],
)
def test_index_metadata_is_validated(cli, tmp_path, en_index, field, value, needle):
    idx = _copy(en_index, tmp_path)
    meta = json.loads((idx / "rerank-index.json").read_text())
    meta[field] = value
    (idx / "rerank-index.json").write_text(json.dumps(meta))
    code, _, err = _search(cli, idx, "--first-stage", "bm25")
    one_line(code, err, "rerank-index.json", needle)


def test_a_kyrgyz_index_claiming_an_english_analyzer_is_refused(cli, tmp_path, ky_index):
    idx = _copy(ky_index, tmp_path)
    meta = json.loads((idx / "rerank-index.json").read_text())
    meta["analyzer"] = "lucene-en"  # would analyse Kyrgyz queries as English
    (idx / "rerank-index.json").write_text(json.dumps(meta))
    code, _, err = cli("search", "--index", idx, "--lang", "ky", "--reranker", "none", "укук")
    one_line(code, err, "not the one for its language 'ky'")


@pytest.mark.parametrize("damage", ["dense.json a list", "dense.json dim text", "docids not UTF-8"])
def test_dense_metadata_is_validated(cli, tmp_path, tiny_dense_index, tiny_bert, damage):
    idx = _copy(tiny_dense_index, tmp_path)
    if damage == "dense.json a list":
        (idx / "dense" / "dense.json").write_text("[1, 2]")
        needle = "dense.json"
    elif damage == "dense.json dim text":
        meta = json.loads((idx / "dense" / "dense.json").read_text())
        meta["dim"] = "384"
        (idx / "dense" / "dense.json").write_text(json.dumps(meta))
        needle = "dim"
    else:
        ids = (idx / "dense" / "docids.txt").read_bytes()
        (idx / "dense" / "docids.txt").write_bytes(ids + b"\xff\xfe\n")
        needle = "docids.txt"
    code, _, err = _search(cli, idx, "--first-stage", "dense", "--dense-model", tiny_bert)
    one_line(code, err, needle)


@pytest.mark.parametrize("field, value", [("shapes", "notadict"), ("recipe", "x"), ("bits", "8"), ("density", 1e999)])
def test_module_metadata_is_validated(cli, tmp_path, saved_module, search_with_module, field, value):
    from rerank.modules.format import CONFIG_FILE

    mod = saved_module(tmp_path / "task", role="task", lang="en")
    cfg = json.loads((mod / CONFIG_FILE).read_text())
    cfg[field] = value
    (mod / CONFIG_FILE).write_text(json.dumps(cfg))
    code, _, err = cli("modules", "info", mod)
    one_line(code, err, CONFIG_FILE, field)
    code, _, err = search_with_module(mod)
    one_line(code, err, CONFIG_FILE, field)


def test_a_grade_no_evaluator_can_hold_is_one_line(cli, tmp_path):
    qrels = write(tmp_path / "qrels.txt", "1 0 d1 99999999999999999999999\n")
    run = write(tmp_path / "a.trec", "1 Q0 d1 1 2.0 a\n")
    code, _, err = cli("eval", "run", "--qrels", qrels, "--run", run)
    one_line(code, err, "qrels.txt:1", "out of range")


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("unclosed.sgml", "<DOC>\n<DOCNO>d1</DOCNO>\n<TEXT>\nrights of all\n</DOC>\n", "<TEXT> of document d1"),
        ("bool-id.jsonl", '{"id": true, "contents": "rights of all"}\n', "document id is a bool"),
        ("nul-id.jsonl", '{"id": "d\\u0000", "contents": "rights of all"}\n', "control character"),
    ],
)
def test_documents_that_used_to_index_wrongly_are_refused(cli, tmp_path, name, content, needle):
    docs = write(tmp_path / name, content)
    code, _, err = cli("index", "--docs", docs, "--lang", "en", "--out", tmp_path / "idx", "--no-dense", "-q")
    one_line(code, err, f"{name}:1", needle)
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("weights", ["nan,1", "inf,1", "1,-1", "0,0"])
def test_fusion_weights_must_be_finite(cli, en_index, weights):
    code, _, err = _search(cli, en_index, "--first-stage", "hybrid", "--fusion-weights", weights)
    one_line(code, err, "finite")


def test_a_query_past_lucenes_clause_limit_names_the_limit(cli, en_index):
    query = " ".join(f"w{i:05d}" for i in range(12_000))
    code, _, err = cli(
        "search", "--index", en_index, "--lang", "en", "--first-stage", "bm25", "--reranker", "none", query
    )
    one_line(code, err, "1,024", "maxClauseCount")


def test_language_arguments(cli, en_index):
    code, _, err = cli("search", "--index", en_index, "--lang", "", "--reranker", "none", "education")
    one_line(code, err, "no language given")
    code, _, err = cli("search", "--index", en_index, "--lang", "x" * 100_000, "--reranker", "none", "education")
    line = one_line(code, err, "unknown language code")
    assert len(line) < 300, len(line)
