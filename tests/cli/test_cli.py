"""The command line as a user meets it: real commands on the bundled data, and every bad input of the
foundation issue answered by one line on stderr, exit status 2, no traceback, nothing half-written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rerank.cli.main import main
from tests.conftest import ROOT, write

pytestmark = pytest.mark.java


def rerank(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rerank: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


# ----------------------------------------------------------------------------------------- happy paths


def test_index_then_search_table(capsys, tmp_path, udhr_dir):
    out = tmp_path / "udhr-en"
    code, stdout, _ = rerank(
        capsys, "index", "--docs", udhr_dir / "docs.en.jsonl", "--lang", "en", "--out", out, "-q", "--no-dense"
    )
    assert code == 0 and "indexed 60 documents (English, analyzer lucene-en)" in stdout
    code, stdout, _ = rerank(
        capsys, "search", "--reranker", "none", "--index", out, "--lang", "en", "right to freedom of peaceful assembly"
    )
    assert code == 0
    rows = [line.split() for line in stdout.splitlines() if line.strip().startswith(("1 ", "2 ", "10 "))]
    assert rows[0][:2] == ["1", "udhr-a20-p1"]  # Article 20: peaceful assembly and association
    assert [r[0] for r in rows] == ["1", "2", "10"]  # 10 rows on screen by default
    assert "peaceful assembly" in stdout  # the snippet


def test_turkish_query_over_english_documents(capsys, tmp_path, udhr_dir):
    """The README's Turkish example: BM25 across languages matches only shared strings."""
    out = tmp_path / "udhr-en"
    rerank(capsys, "index", "--docs", udhr_dir / "docs.en.jsonl", "--lang", "en", "--out", out, "-q", "--no-dense")
    code, stdout, err = rerank(
        capsys, "search", "--reranker", "none", "--index", out, "--lang", "tr", "Madde 13: seyahat hürriyeti"
    )
    assert code == 0 and "note: tr queries over en documents" in err


def test_topics_to_trec_run(capsys, tmp_path, udhr_dir, ky_index):
    run = tmp_path / "runs" / "bm25.ky.trec"
    code, stdout, _ = rerank(
        capsys,
        "search",
        "--reranker",
        "none",
        "--index",
        ky_index,
        "--topics",
        udhr_dir / "topics.ky.tsv",
        "--lang",
        "ky",
        "--output",
        run,
        "-q",
    )
    assert code == 0 and "for 31 queries" in stdout
    lines = [line.split() for line in run.read_text().splitlines()]
    assert all(len(c) == 6 and c[1] == "Q0" for c in lines)
    by_q: dict[str, list] = {}
    for c in lines:
        by_q.setdefault(c[0], []).append(c)
    assert len(by_q) == 31
    for rows in by_q.values():
        assert [int(r[3]) for r in rows] == list(range(1, len(rows) + 1))
        assert len({r[2] for r in rows}) == len(rows)
        assert np.all(np.diff(np.asarray([float(r[4]) for r in rows], dtype=np.float32)) < 0)
    # the run evaluates: Kyrgyz over Kyrgyz is monolingual, so the counterpart paragraph is found
    import ir_measures
    from ir_measures import RR

    from rerank.collections.trec import read_qrels, read_run

    mrr = ir_measures.calc_aggregate([RR(rel=2)], read_qrels(udhr_dir / "qrels.ky.txt"), read_run(run))[RR(rel=2)]
    assert mrr > 0.9
    # without --output the run goes to stdout
    code, stdout, _ = rerank(
        capsys,
        "search",
        "--reranker",
        "none",
        "--index",
        ky_index,
        "--topics",
        udhr_dir / "topics.ky.tsv",
        "-k",
        "3",
        "-q",
    )
    assert code == 0 and len(stdout.splitlines()) == 93 and stdout.splitlines()[0].startswith("a00 Q0 udhr-a00-p")


def test_check_reports_ties(capsys, tmp_path, udhr_dir):
    run = write(tmp_path / "r.trec", "q Q0 a 1 2.0 t\nq Q0 b 2 2.0 t\n")
    code, stdout, err = rerank(
        capsys,
        "collections",
        "check",
        "--run",
        run,
        "--qrels",
        udhr_dir / "qrels.en.txt",
        "--topics",
        udhr_dir / "topics.ug.tsv",
        "--lang",
        "ug",
    )
    assert code == 0 and "2 documents with tied scores" in err
    assert "31 topics (ug)" in stdout and "60 judgements, 60 relevant, 31 queries" in stdout


# ------------------------------------------------------------------------------------------ bad input


def test_missing_and_unreadable_files(capsys, tmp_path, monkeypatch, en_index):
    code, _, err = rerank(capsys, "index", "--docs", tmp_path / "nope.jsonl", "--lang", "en", "--out", tmp_path / "i")
    assert_one_line_error(code, err, "documents file not found", "nope.jsonl")
    code, _, err = rerank(capsys, "search", "--index", en_index, "--topics", tmp_path / "nope.tsv")
    assert_one_line_error(code, err, "topics file not found")
    code, _, err = rerank(capsys, "search", "--index", en_index, "--topics", tmp_path)
    assert_one_line_error(code, err, "is a folder, not a file")
    p = write(tmp_path / "t.tsv", "q1\tx\n")
    real_access = os.access  # root reads everything: simulate `chmod 000` on the topics file alone
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: str(path) != str(p) and real_access(path, mode, **kw))
    code, _, err = rerank(capsys, "search", "--index", en_index, "--topics", p)
    assert_one_line_error(code, err, "t.tsv", "is not readable")
    assert not (tmp_path / "i").exists()


@pytest.mark.parametrize(
    "kind, content, needle",
    [
        ("--topics", "<top>\n<num> 1\n<title> x\n", "t:1: <top> never closed"),
        ("--topics", "q1\tfine\nq2 missing tab\n", "t:2: 1 tab-separated fields"),
        ("--qrels", "q 0 d 1\nq 0 d\n", "t:2: 3 columns — expected 4 whitespace-separated columns"),
        ("--run", "q Q0 d 1 1.5 tag\nq Q0 e two 1.0 tag\n", "t:2: rank 'two' is not an integer"),
        ("--docs", '{"id": "a", "contents": "x"}\n{"id": "b", contents: 1}\n', "t:2: not valid JSON"),
        (
            "--docs",
            "<DOC>\n<DOCNO>a</DOCNO>\n</DOC>\n<DOC>\n<TEXT>no id</TEXT>\n</DOC>\n",
            "t:4: <DOC> without a <DOCNO>",
        ),
    ],
)
def test_malformed_files_name_the_line(capsys, tmp_path, kind, content, needle):
    p = write(tmp_path / "t", content)
    code, _, err = rerank(capsys, "collections", "check", kind, p)
    assert_one_line_error(code, err, needle)


def test_malformed_documents_leave_no_index(capsys, tmp_path):
    docs = write(tmp_path / "d.jsonl", '{"id": "a", "contents": "fine"}\n{"id": "b"}\n')
    code, _, err = rerank(
        capsys, "index", "--docs", docs, "--lang", "en", "--out", tmp_path / "idx", "-q", "--no-dense"
    )
    assert_one_line_error(code, err, "d.jsonl:2:", 'neither "contents" nor "text"')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


def test_unknown_language_suggests(capsys, tmp_path, udhr_dir, en_index):
    code, _, err = rerank(
        capsys, "index", "--docs", udhr_dir / "docs.ky.jsonl", "--lang", "kyr", "--out", tmp_path / "i"
    )
    assert_one_line_error(code, err, "unknown language code 'kyr'", "did you mean", "ky (Kyrgyz)")
    code, _, err = rerank(capsys, "search", "--index", en_index, "--lang", "turkis", "x")
    assert_one_line_error(code, err, "unknown language code 'turkis'", "tr (Turkish)")
    assert not (tmp_path / "i").exists()


def test_empty_query(capsys, en_index):
    for q in ("", "   "):
        code, _, err = rerank(capsys, "search", "--index", en_index, "--lang", "en", q)
        assert_one_line_error(code, err, "empty query")
    code, _, err = rerank(capsys, "search", "--index", en_index, "--lang", "en")
    assert_one_line_error(code, err, "give either a query or --topics")


def test_missing_or_foreign_index(capsys, tmp_path):
    code, _, err = rerank(capsys, "search", "--index", tmp_path / "none", "x")
    assert_one_line_error(code, err, "index not found")
    (tmp_path / "folder").mkdir()
    code, _, err = rerank(capsys, "search", "--index", tmp_path / "folder", "x")
    assert_one_line_error(code, err, "is not a rerank index")
    half = tmp_path / "half"
    (half / "lucene").mkdir(parents=True)
    (half / "rerank-index.json").write_text("{not json")
    code, _, err = rerank(capsys, "search", "--index", half, "x")
    assert_one_line_error(code, err, "is damaged", "--overwrite")


def test_index_built_for_another_analyzer(capsys, en_index, ky_index):
    code, _, err = rerank(capsys, "search", "--index", en_index, "--analyzer", "lucene-de", "Recht")
    assert_one_line_error(code, err, "built with analyzer 'lucene-en', not 'lucene-de'")
    code, _, err = rerank(capsys, "search", "--index", ky_index, "--analyzer", "lucene-en", "укук")
    assert_one_line_error(code, err, "built with analyzer 'unicode-words-v1'")
    code, stdout, _ = rerank(
        capsys,
        "search",
        "--reranker",
        "none",
        "--index",
        ky_index,
        "--analyzer",
        "unicode-words-v1",
        "укук",
        "-k",
        "1",
    )
    assert code == 0 and "udhr-" in stdout


def test_existing_outputs_are_refused_without_overwrite(capsys, tmp_path, udhr_dir, en_index):
    run = write(tmp_path / "run.trec", "keep me\n")
    code, _, err = rerank(
        capsys, "search", "--reranker", "none", "--index", en_index, "--topics", udhr_dir / "topics.en.tsv", "-o", run
    )
    assert_one_line_error(code, err, "output already exists", "--overwrite")
    assert run.read_text() == "keep me\n"
    code, _, _ = rerank(
        capsys,
        "search",
        "--reranker",
        "none",
        "--index",
        en_index,
        "--topics",
        udhr_dir / "topics.en.tsv",
        "--output",
        run,
        "--overwrite",
        "-q",
    )
    assert code == 0 and run.read_text().startswith("a00 Q0 ")
    code, _, err = rerank(capsys, "index", "--docs", udhr_dir / "docs.en.jsonl", "--lang", "en", "--out", en_index)
    assert_one_line_error(code, err, "output already exists")
    assert json.loads((en_index / "rerank-index.json").read_text())["documents"] == 60


def test_usage_errors_are_one_line_in_a_real_process():
    for args in (["search"], ["search", "--index", "x", "--nope"], ["search", "--index", "x", "-k", "0", "q"]):
        p = subprocess.run(
            [sys.executable, "-m", "rerank.cli.main", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
        )
        assert_one_line_error(p.returncode, p.stderr)
        assert "see `rerank search --help`" in p.stderr


# ------------------------------------------------------- dense / hybrid / reranking (tiny random model)


@pytest.fixture(scope="module")
def hybrid_index(tmp_path_factory, udhr_dir, tiny_bert):
    """A Kyrgyz index with its dense part, built through the CLI with the tiny backbone."""
    out = tmp_path_factory.mktemp("cli") / "udhr-ky"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "index",
                "--docs",
                str(udhr_dir / "docs.ky.jsonl"),
                "--lang",
                "ky",
                "--out",
                str(out),
                "-q",
                "--model",
                str(tiny_bert),
            ]
        )
    assert e.value.code == 0
    return out


def test_index_builds_the_dense_part_and_dense_only_rebuilds_it(capsys, hybrid_index, tiny_bert):
    meta = json.loads((hybrid_index / "dense" / "dense.json").read_text())
    assert meta["documents"] == 59 and meta["dim"] == 32 and meta["kind"] == "flat"
    code, _, err = rerank(capsys, "index", "--dense-only", "--out", hybrid_index, "--model", tiny_bert)
    assert_one_line_error(code, err, "output already exists", "--overwrite")
    code, stdout, _ = rerank(
        capsys,
        "index",
        "--dense-only",
        "--out",
        hybrid_index,
        "--model",
        tiny_bert,
        "--overwrite",
        "--dense-kind",
        "hnsw",
        "-q",
    )
    assert code == 0 and "faiss hnsw" in stdout
    code, stdout, _ = rerank(
        capsys, "index", "--dense-only", "--out", hybrid_index, "--model", tiny_bert, "--overwrite", "-q"
    )
    assert code == 0 and "faiss flat" in stdout


def test_search_table_shows_first_stage_rank_beside_the_reranked_rank(capsys, hybrid_index, tiny_bert, udhr_dir):
    query = (udhr_dir / "topics.ky.tsv").read_text(encoding="utf-8").splitlines()[3].split("\t")[1]
    code, stdout, _ = rerank(capsys, "search", "--index", hybrid_index, "--lang", "ky", "--model", tiny_bert, query)
    assert code == 0 and "dense · " in stdout and "reranked" not in stdout  # auto: no bi after its own dense
    code, stdout, _ = rerank(
        capsys,
        "search",
        "--index",
        hybrid_index,
        "--lang",
        "ky",
        "--model",
        tiny_bert,
        "--reranker",
        "bi",
        "--first-stage",
        "hybrid",
        query,
    )
    assert code == 0, stdout
    assert "hybrid+bi" in stdout and "reranked top 100" in stdout
    header = next(line for line in stdout.splitlines() if "rank" in line and "docid" in line)
    assert header.split()[:3] == ["rank", "first", "docid"]
    rows = [line.split() for line in stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == list(range(1, 11))
    firsts = [int(r[1]) for r in rows]  # each reranked document's rank in the hybrid first stage
    assert len(set(firsts)) == 10 and all(1 <= f <= 59 for f in firsts)
    assert all(r[2].startswith("udhr-a") for r in rows)


@pytest.mark.parametrize("first_stage", ["bm25", "dense", "hybrid"])
@pytest.mark.parametrize("reranker", ["none", "bi", "cross"])
def test_search_topics_every_first_stage_and_reranker(
    capsys, tmp_path, hybrid_index, tiny_bert, tiny_cross, udhr_dir, first_stage, reranker
):
    run = tmp_path / "run.trec"
    model = tiny_cross if reranker == "cross" else tiny_bert
    code, stdout, err = rerank(
        capsys,
        "search",
        "--index",
        hybrid_index,
        "--topics",
        udhr_dir / "topics.ky.tsv",
        "--first-stage",
        first_stage,
        "--reranker",
        reranker,
        "--model",
        model,
        "--dense-model",
        tiny_bert,
        "--depth",
        "20",
        "-k",
        "30",
        "-o",
        run,
        "-q",
    )
    assert code == 0, err
    name = first_stage if reranker == "none" else f"{first_stage}+{reranker}"
    assert f"({name})" in stdout
    lines = [line.split() for line in run.read_text().splitlines()]
    assert {c[5] for c in lines} == {name} and len({c[0] for c in lines}) == 31
    for qid in {c[0] for c in lines}:
        scores = np.asarray([float(c[4]) for c in lines if c[0] == qid], dtype=np.float32)
        assert len(scores) == 30 and np.all(np.diff(scores) < 0)


def test_search_bad_reranking_input(capsys, tmp_path, hybrid_index, en_index, tiny_bert, e5_dir):
    from tests.conftest import make_tiny_bert

    q = ["search", "--index", hybrid_index, "--model", tiny_bert, "--dense-model", tiny_bert]
    code, _, err = rerank(capsys, *q, "--first-stage", "sparse", "x")
    assert_one_line_error(code, err, "unknown first stage 'sparse'", "bm25, dense, hybrid")
    code, _, err = rerank(capsys, *q, "--reranker", "colbert", "x")
    assert_one_line_error(code, err, "unknown reranker 'colbert'")
    code, _, err = rerank(capsys, *q, "--reranker", "cross", "x")
    assert_one_line_error(code, err, "no ranking head", "--reranker bi")
    code, _, err = rerank(capsys, *q, "--fusion-weights", "1", "x")
    assert_one_line_error(code, err, "--fusion-weights '1' is not two numbers")
    code, _, err = rerank(capsys, "search", "--index", en_index, "--first-stage", "dense", "--reranker", "none", "x")
    assert_one_line_error(code, err, "has no dense index", "rerank index --dense-only")
    # a model folder without weights, without a tokenizer, and one that does not exist
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_bert / "config.json").read_text())
    code, _, err = rerank(capsys, "search", "--index", hybrid_index, "--model", no_weights, "x")
    assert_one_line_error(code, err, "has no model weights")
    no_tok = make_tiny_bert(tmp_path / "no-tok", e5_dir)
    for f in no_tok.glob("tokenizer*"):
        f.unlink()
    code, _, err = rerank(capsys, "search", "--index", hybrid_index, "--model", no_tok, "x")
    assert_one_line_error(code, err, "has no tokenizer")
    code, _, err = rerank(capsys, "search", "--index", hybrid_index, "--model", "intfloat/multilingual-e5-base", "x")
    assert_one_line_error(code, err, "hub id", "downloads nothing")
    # a dense index built with another backbone
    other = make_tiny_bert(tmp_path / "other", e5_dir, seed=3)
    code, _, err = rerank(capsys, "search", "--index", hybrid_index, "--model", other, "--first-stage", "hybrid", "x")
    assert_one_line_error(code, err, "was built with backbone", "--model")


def test_a_query_longer_than_the_model_is_truncated_with_a_warning(capsys, hybrid_index, tiny_bert, udhr_dir):
    long_query = " ".join((udhr_dir / "docs.ky.jsonl").read_text(encoding="utf-8").split()[:600])
    code, stdout, err = rerank(
        capsys, "search", "--index", hybrid_index, "--model", tiny_bert, "--lang", "ky", long_query[:20000]
    )
    assert code == 0 and "Traceback" not in err
    assert "longer than the model's 512 tokens" in err
