"""Training pairs from real relevance data (topics + qrels: hard negatives from the first stage, false negatives
dropped, the bi-encoder's cosines), and the residual ranking head trained on them: it starts at the bi-encoder's
order, trains only the layers asked for, and an interrupted run resumes to the same module."""

import json
import shutil

import pytest
import torch

from rerank.errors import RerankError
from tests.conftest import write

pytestmark = pytest.mark.java


@pytest.fixture(scope="module")
def index(tiny_dense_index, tmp_path_factory):
    out = tmp_path_factory.mktemp("rel") / "udhr-en"
    shutil.copytree(tiny_dense_index, out)
    return out


@pytest.fixture(scope="module")
def qrel_pairs(index, udhr_dir, tiny_bert, tmp_path_factory):
    from rerank.training.pairs import pairs_from_qrels

    out = tmp_path_factory.mktemp("rel") / "pairs.jsonl"
    facts = pairs_from_qrels(
        udhr_dir / "topics.en.tsv",
        udhr_dir / "qrels.en.txt",
        index,
        out,
        lang="en",
        first_stage="dense",
        depth=10,
        negatives=3,
        model=tiny_bert,
        progress=False,
    )
    assert facts["queries"] == 31 and facts["first_stage"] == "dense"
    return out


def test_negatives_come_from_the_first_stage_and_the_teacher_is_its_cosine(qrel_pairs, index, udhr_dir, tiny_bert):
    import numpy as np

    from rerank.collections.trec import read_qrels
    from rerank.indexes.dense import DenseIndex
    from rerank.training.pairs import read_pairs

    rel = {}
    for q in read_qrels(udhr_dir / "qrels.en.txt"):
        if q.relevance > 0:
            rel.setdefault(q.query_id, set()).add(q.doc_id)
    dense = DenseIndex(index, model=tiny_bert)
    for r in read_pairs(qrel_pairs):
        assert r["positive"]["id"] in rel[r["qid"]]
        ids = [n["id"] for n in r["negatives"]]
        assert len(ids) == 3 and not set(ids) & rel[r["qid"]]
        ranks = [n["rank"] for n in r["negatives"]]
        assert all(k is not None and k <= 10 + len(rel[r["qid"]]) for k in ranks) and ranks == sorted(ranks)
        qv = dense.encoder.encode([r["query"]], "query")[0]
        cos = dense.vectors([r["positive"]["id"], *ids]) @ qv
        np.testing.assert_allclose(r["teacher"], cos, atol=1e-4)
    how = json.loads(qrel_pairs.with_name("pairs.jsonl.json").read_text())
    assert how["method"] == "qrels" and how["topics"]["sha256"] and how["filtered"]["answer"] == 0


def test_false_negatives_are_dropped_and_a_dev_set_overlap_is_refused(index, udhr_dir, tiny_bert, tmp_path):
    from rerank.collections.topics import read_topics
    from rerank.training.pairs import pairs_from_qrels, read_pairs

    topics = read_topics(udhr_dir / "topics.en.tsv")
    # every document holding "Everyone" counts as answering every question here: they all go
    answers = write(
        tmp_path / "answers.jsonl",
        "".join(json.dumps({"qid": q.query_id, "answers": ["Everyone"]}) + "\n" for q in topics),
    )
    facts = pairs_from_qrels(
        udhr_dir / "topics.en.tsv",
        udhr_dir / "qrels.en.txt",
        index,
        tmp_path / "p.jsonl",
        first_stage="dense",
        depth=10,
        negatives=3,
        answers=answers,
        model=tiny_bert,
        progress=False,
    )
    assert facts["filtered"]["answer"] > 0
    for r in read_pairs(tmp_path / "p.jsonl"):
        assert all("everyone" not in n["text"].casefold() for n in r["negatives"])
    dev = write(tmp_path / "topics.dev.tsv", f"d1\t{topics[3].text.upper()}\n")
    with pytest.raises(RerankError, match="also a training query"):
        pairs_from_qrels(
            udhr_dir / "topics.en.tsv",
            udhr_dir / "qrels.en.txt",
            index,
            tmp_path / "q.jsonl",
            dev_topics=[dev],
            model=tiny_bert,
            progress=False,
        )
    assert not (tmp_path / "q.jsonl").exists()


def _cfg(**kw):
    from rerank.training.task import TaskConfig

    base = dict(
        kind="shira",
        loss="listwise",
        head="residual",
        layers=1,
        max_steps=6,
        batch_queries=2,
        negatives=3,
        max_length=64,
        eval_every=3,
        patience=None,
        probe_queries=0,
        lr=1e-2,
        head_lr=1e-2,
    )
    return TaskConfig(**{**base, **kw})


def test_the_residual_head_starts_at_the_bi_encoder_and_trains_the_top_layers(qrel_pairs, tiny_bert, tmp_path):
    from rerank import Reranker
    from rerank.training.task import train_task_module

    m = train_task_module(qrel_pairs, tmp_path / "task", _cfg(), model=tiny_bert, progress=False)
    r = m.config.recipe
    assert r["head"] == "residual" and r["layers"] == 1
    assert set(m.extras) == {"residual_head.proj.weight", "residual_head.proj.bias", "residual_head.prior_scale"}
    assert m.extras["residual_head.proj.weight"].abs().sum() > 0  # the correction learned
    entries = m.payload.entries
    assert entries and all(n.startswith("encoder.layer.1.") for n in entries)  # top layer of 2 only
    # before training the head is the bi-encoder: the same MRR on the same groups
    assert r["dev_mrr_before"] == pytest.approx(r["dev_mrr_teacher"], abs=1e-4)
    rr = Reranker(tiny_bert, modules=[tmp_path / "task"])
    assert rr.kind == "cross" and rr.scorer.residual_active()


def test_the_mean_pooled_head_without_the_prior(qrel_pairs, tiny_bert, tmp_path):
    """The comparison head: the residual head's correction alone (its prior weight fixed at 0)."""
    from rerank.training.task import train_task_module

    m = train_task_module(
        qrel_pairs,
        tmp_path / "mean",
        _cfg(head="mean", probe_queries=4, probe_epochs=1),
        model=tiny_bert,
        progress=False,
    )
    assert m.config.recipe["head"] == "mean" and float(m.extras["residual_head.prior_scale"]) == 0.0
    assert m.extras["residual_head.proj.weight"].abs().sum() > 0
    assert m.config.recipe["probe"]["queries"] == 4


def test_an_interrupted_residual_run_resumes_to_the_same_module(qrel_pairs, tiny_bert, tmp_path, monkeypatch):
    from rerank.modules.format import load_module
    from rerank.training.task import train_task_module

    cfg = _cfg(max_steps=56, eval_every=28, probe_queries=4, probe_epochs=1)
    whole = train_task_module(qrel_pairs, tmp_path / "whole", cfg, model=tiny_bert, progress=False)
    from rerank.training import loop

    real = loop._save_checkpoint

    def dies_after_the_first_checkpoint(*a, **kw):
        real(*a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_save_checkpoint", dies_after_the_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_task_module(qrel_pairs, tmp_path / "cut", cfg, model=tiny_bert, progress=False)
    assert (tmp_path / "cut.work" / "mask.safetensors").is_file() and (tmp_path / "cut.work" / "start").is_dir()
    monkeypatch.setattr(loop, "_save_checkpoint", real)
    resumed = train_task_module(qrel_pairs, tmp_path / "cut", cfg, model=tiny_bert, progress=False)
    r = resumed.config.recipe
    assert r["resumed_from"] == 50 and r["sessions"] == 2 and r["steps"] == 56
    assert r["dev_mrr_before"] == whole.config.recipe["dev_mrr_before"]
    a, b = load_module(tmp_path / "whole"), load_module(tmp_path / "cut")
    ea, eb = a.payload.entries, b.payload.entries
    assert set(ea) == set(eb)
    for n in ea:
        assert torch.equal(ea[n][0], eb[n][0]) and torch.allclose(ea[n][1], eb[n][1])
    for n in a.extras:
        assert torch.allclose(a.extras[n], b.extras[n])
    assert not (tmp_path / "cut.work").exists()


def test_the_residual_head_needs_teacher_scores(udhr_dir, tiny_bert, tmp_path):
    from rerank.training.pairs import make_pairs
    from rerank.training.task import train_task_module

    make_pairs(udhr_dir / "docs.en.jsonl", tmp_path / "p.jsonl", lang="en", negatives=3, progress=False)
    with pytest.raises(RerankError, match="the residual head needs teacher scores"):
        train_task_module(tmp_path / "p.jsonl", tmp_path / "x", _cfg(), model=tiny_bert, progress=False)


def test_cli_pairs_from_qrels_and_its_bad_input(capsys, index, udhr_dir, tiny_bert, qrel_pairs, tmp_path):
    from tests.cli.test_cli import assert_one_line_error, rerank

    code, out, err = rerank(capsys, "train", "pairs", "--out", tmp_path / "p.jsonl")
    assert_one_line_error(code, err, "give either --docs", "or --topics")
    code, out, err = rerank(capsys, "train", "pairs", "--topics", udhr_dir / "topics.en.tsv", "--out", tmp_path / "x")
    assert_one_line_error(code, err, "--topics needs --qrels and --index")
    code, out, err = rerank(
        capsys,
        "train",
        "pairs",
        "--topics",
        udhr_dir / "topics.en.tsv",
        "--qrels",
        udhr_dir / "qrels.en.txt",
        "--index",
        index,
        "--depth",
        "3",
        "--out",
        tmp_path / "y",
    )
    assert_one_line_error(code, err, "--depth 3 leaves no choice of 7 negatives")
    first = udhr_dir.joinpath("topics.en.tsv").read_text().splitlines()[0].split("\t")[1]
    dev = write(tmp_path / "dev.tsv", f"d1\t{first}\n")
    code, out, err = rerank(
        capsys,
        "train",
        "task",
        "--pairs",
        qrel_pairs,
        "--out",
        tmp_path / "t",
        "--head",
        "residual",
        "--dev-topics",
        dev,
        "--model",
        tiny_bert,
        "--max-steps",
        "1",
    )
    assert_one_line_error(code, err, "is also a training query")
    assert not (tmp_path / "t").exists()
    code, out, err = rerank(
        capsys, "train", "task", "--pairs", qrel_pairs, "--out", tmp_path / "t", "--head", "cls", "--model", tiny_bert
    )
    assert_one_line_error(code, err, "unknown --head 'cls'")
