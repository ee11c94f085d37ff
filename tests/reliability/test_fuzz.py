"""Property-based fuzzing (Hypothesis) of every reader and metadata loader: whatever bytes a file holds, a
reader returns its records or raises :class:`RerankError` naming the file — never another exception — and
what a writer wrote reads back with the same meaning (issue 22, the fuzz part of the suite).

The example counts are bounded (150 per property) so that the suite stays fast, and derandomized: the same
examples on every machine, so a failure here is a failure everywhere. ``RERANK_FUZZ=N`` runs N random
(not repeatable) examples per property instead, for a deeper search:

    RERANK_FUZZ=5000 .venv/bin/python -m pytest tests/reliability/test_fuzz.py"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerank.errors import RerankError

FUZZ = int(os.environ.get("RERANK_FUZZ", "0") or 0)
CHECK = settings(
    max_examples=FUZZ or 150,
    deadline=None,
    derandomize=not FUZZ,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)

# text that looks like the formats: their keywords, separators and tags, mixed with anything
TOKENS = st.sampled_from(
    [
        "\t",
        "\n",
        " ",
        "Q0",
        "0",
        "1",
        "-1",
        "2.5",
        "nan",
        "1e309",
        "99999999999999999999999",
        "<DOC>",
        "</DOC>",
        "<DOCNO>",
        "</DOCNO>",
        "<TEXT>",
        "</TEXT>",
        "<top>",
        "</top>",
        "<num>",
        "<title>",
        '{"id": ',
        '"contents": ',
        '"text": ',
        '"title": ',
        "}",
        "{",
        "[",
        "]",
        ",",
        ":",
        '"',
        "true",
        "null",
        "\x00",
        "\ufeff",
        "д",
        "ئ",
        "é",
    ]
)
FORMAT_LIKE = st.lists(st.one_of(TOKENS, st.text(max_size=8)), max_size=40).map("".join)
ANY_BYTES = st.binary(max_size=300)


def _file(data: bytes | str, suffix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    p = folder / f"input{suffix}"
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return p


def _reads_or_names_the_file(fn, data, suffix: str) -> None:
    p = _file(data, suffix)
    try:
        result = fn(p)
        if hasattr(result, "__next__"):
            list(result)
    except RerankError as e:
        assert p.name in str(e), str(e)
        assert "\n" not in str(e), str(e)


def _readers():
    from rerank.collections import docs, topics, trec
    from rerank.collections.parallel import read_parallel_tsv
    from rerank.collections.qa import read_qa
    from rerank.training.pairs import read_pairs

    return {
        "jsonl documents": (docs.read_docs, ".jsonl"),
        "sgml documents": (docs.read_docs, ".sgml"),
        "tsv topics": (lambda p: topics.read_topics(p, "tsv", "en"), ".tsv"),
        "trec topics": (lambda p: topics.read_topics(p, "trec", "en"), ".txt"),
        "hc4 topics": (lambda p: topics.read_topics(p, "hc4", "en"), ".jsonl"),
        "qrels": (trec.read_qrels, ".txt"),
        "run": (trec.read_run, ".trec"),
        "parallel tsv": (lambda p: read_parallel_tsv(p, "ug"), ".tsv"),
        "qa records": (read_qa, ".jsonl"),
        "training pairs": (read_pairs, ".jsonl"),
    }


@pytest.mark.parametrize("reader", list(_readers()))
@CHECK
@given(data=st.one_of(FORMAT_LIKE, ANY_BYTES))
def test_a_reader_returns_records_or_names_the_file(reader, data):
    fn, suffix = _readers()[reader]
    _reads_or_names_the_file(fn, data, suffix)


# ------------------------------------------------------------------------------------ metadata files

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def _damaged(valid: dict, draw_changes) -> dict:
    out = dict(valid)
    for key, value in draw_changes:
        if key in out and value is None:
            del out[key]
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def metadata_samples(en_index, tmp_path_factory):
    """Real metadata files of each kind (an index, its dense part, a module), to damage field by field."""
    index = json.loads((en_index / "rerank-index.json").read_text(encoding="utf-8"))
    root = Path(__file__).resolve().parents[2]
    module = json.loads((root / "modules" / "en-task-shira" / "module_config.json").read_text(encoding="utf-8"))
    module["shapes"] = dict(list(module["shapes"].items())[:2])
    dense = {
        "backbone": "b",
        "fingerprint": "sha256:0",
        "dim": 4,
        "documents": 3,
        "kind": "flat",
        "params": {},
        "max_length": 512,
        "prefix": "passage: ",
        "created_by": "x",
        "format": "rerank-dense/1",
    }
    return {"index": index, "dense": dense, "module": module}


def _load(kind: str, raw: object, folder: Path) -> None:
    from rerank.indexes.dense import DenseMeta, read_dense_meta
    from rerank.modules.format import read_config

    if kind == "index":
        from rerank.indexes.bm25 import read_meta

        (folder / "rerank-index.json").write_text(json.dumps(raw), encoding="utf-8")
        (folder / "lucene").mkdir(exist_ok=True)
        (folder / "docs.sqlite").touch()
        meta = read_meta(folder)
        # accepted: then it means what search will do with it, nothing coerced
        assert _number(meta.k1) and _number(meta.b) and 0 <= meta.b <= 1 and meta.k1 >= 0
        assert _integer(meta.documents) and meta.documents >= 1 and isinstance(meta.analyzer, str)
        from rerank import languages

        assert languages.resolve(meta.language).code == meta.language
    elif kind == "dense":
        (folder / "dense").mkdir(exist_ok=True)
        (folder / "dense" / "dense.json").write_text(json.dumps(raw), encoding="utf-8")
        meta = read_dense_meta(folder)
        assert isinstance(meta, DenseMeta) and _integer(meta.dim) and _integer(meta.documents)
        assert isinstance(meta.params, dict) and isinstance(meta.fingerprint, str)
    else:
        (folder / "module_config.json").write_text(json.dumps(raw), encoding="utf-8")
        cfg = read_config(folder)
        assert isinstance(cfg.shapes, dict) and all(
            isinstance(v, list) and all(_integer(n) for n in v) for v in cfg.shapes.values()
        )
        assert isinstance(cfg.recipe, dict) and isinstance(cfg.data, dict) and isinstance(cfg.base_fingerprint, str)
        assert cfg.bits is None or _integer(cfg.bits)
        assert cfg.density is None or (_number(cfg.density) and math.isfinite(cfg.density))


def _number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _integer(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@pytest.mark.parametrize("kind", ["index", "dense", "module"])
@CHECK
@given(changes=st.lists(st.tuples(st.text(max_size=12), st.one_of(st.none(), JSON_VALUES)), max_size=3))
def test_a_damaged_metadata_file_is_one_line(metadata_samples, kind, changes):
    valid = metadata_samples[kind]
    keys = list(valid)
    # damage real fields most of the time: a key drawn from the file's own, else any text
    changes = [(keys[sum(map(ord, k)) % len(keys)] if k and ord(k[0]) % 4 else k, v) for k, v in changes]
    raw = _damaged(valid, changes)
    folder = Path(tempfile.mkdtemp(prefix="fuzz-meta-"))
    try:
        _load(kind, raw, folder)
    except RerankError as e:
        assert "\n" not in str(e) and str(folder) in str(e), str(e)


@pytest.mark.parametrize("kind", ["index", "dense", "module"])
@CHECK
@given(data=st.one_of(ANY_BYTES, JSON_VALUES.map(json.dumps)))
def test_a_metadata_file_of_any_content_is_one_line(metadata_samples, kind, data):
    folder = Path(tempfile.mkdtemp(prefix="fuzz-meta-"))
    name = {"index": "rerank-index.json", "dense": "dense/dense.json", "module": "module_config.json"}[kind]
    (folder / name).parent.mkdir(exist_ok=True)
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    from rerank.indexes.bm25 import read_meta
    from rerank.indexes.dense import read_dense_meta
    from rerank.modules.format import read_config

    (folder / "lucene").mkdir()
    (folder / "docs.sqlite").touch()
    try:
        {"index": read_meta, "dense": read_dense_meta, "module": read_config}[kind](folder)
    except RerankError as e:
        assert "\n" not in str(e) and str(folder) in str(e), str(e)


# ------------------------------------------------------------------------------- meaning is preserved

IDS = st.text(st.characters(codec="utf-8", exclude_categories=("Z", "C")), min_size=1, max_size=12)
TEXTS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


@CHECK
@given(st.dictionaries(IDS, st.tuples(TEXTS, TEXTS), min_size=1, max_size=8))
def test_documents_written_read_back_the_same(docs):
    from rerank.collections.docs import read_docs, write_jsonl_docs
    from rerank.types import Document

    p = Path(tempfile.mkdtemp(prefix="fuzz-")) / "docs.jsonl"
    written = [Document(i, text, title) for i, (text, title) in docs.items()]
    write_jsonl_docs(written, p)
    assert list(read_docs(p)) == written


@CHECK
@given(
    st.dictionaries(st.tuples(IDS, IDS), st.integers(min_value=-(2**31), max_value=2**31 - 1), min_size=1, max_size=10)
)
def test_qrels_written_read_back_the_same(judged):
    from rerank.collections.trec import read_qrels, write_qrels
    from rerank.types import Qrel

    p = Path(tempfile.mkdtemp(prefix="fuzz-")) / "qrels.txt"
    write_qrels([Qrel(q, d, r) for (q, d), r in judged.items()], p)
    assert {(x.query_id, x.doc_id): x.relevance for x in read_qrels(p)} == judged


@CHECK
@given(
    st.dictionaries(
        st.tuples(IDS, IDS),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        min_size=1,
        max_size=10,
    )
)
def test_runs_written_read_back_in_the_same_order(scored):
    from rerank.collections.trec import read_run, write_run
    from rerank.types import ScoredDoc

    p = Path(tempfile.mkdtemp(prefix="fuzz-")) / "run.trec"
    run = [ScoredDoc(q, d, s) for (q, d), s in scored.items()]
    write_run(run, p)
    back = read_run(p)
    by_query: dict[str, list[str]] = {}
    for sd in back:
        by_query.setdefault(sd.query_id, []).append(sd.doc_id)
    assert {(sd.query_id, sd.doc_id) for sd in back} == set(scored)
    for q, docs in by_query.items():  # each query's documents in decreasing score
        scores = [scored[(q, d)] for d in docs]
        assert scores == sorted(scores, reverse=True)
