"""Synthetic pairs from the bundled collection (ICT, BM25 negatives) and ranking task modules trained on a
tiny random cross-encoder on top of a frozen language module, in every kind and loss."""

import json

import numpy as np
import pytest
import torch

from rerank.errors import RerankError

pytestmark = pytest.mark.java


@pytest.fixture(scope="module")
def pairs_file(udhr_dir, tmp_path_factory):
    from rerank.training.pairs import make_pairs

    out = tmp_path_factory.mktemp("pairs") / "train.jsonl"
    facts = make_pairs(udhr_dir / "docs.en.jsonl", out, lang="en", method="ict", negatives=3, progress=False)
    assert facts["queries"] >= 10
    return out


def test_pairs_are_real_queries_with_bm25_negatives(pairs_file, udhr_dir):
    from rerank.collections.docs import read_docs
    from rerank.training.pairs import read_pairs

    docs = {d.doc_id: d for d in read_docs(udhr_dir / "docs.en.jsonl")}
    rows = read_pairs(pairs_file)
    held_out, lengths = 0, []
    for r in rows:
        pos = docs[r["positive"]["id"]]
        assert r["query"] in pos.text
        held_out += r["query"] not in r["positive"]["text"]  # ICT: the sentence is held out (90% of the time)
        assert len(r["negatives"]) == 3 and all(n["id"] != pos.doc_id for n in r["negatives"])
        assert r["negatives"][0]["bm25"] >= r["negatives"][-1]["bm25"]
        # formatted alike: body text, no title, about the positive's length, and no negative contains the query
        for n in r["negatives"]:
            assert docs[n["id"]].text.startswith(n["text"]) and r["query"] not in n["text"]
            assert n["text"] == docs[n["id"]].text or len(n["text"]) <= 1.5 * len(r["positive"]["text"])
            lengths.append(len(n["text"]) / len(r["positive"]["text"]))
    assert held_out >= len(rows) * 0.7
    assert 0.6 < np.median(lengths) < 1.5  # length tells nothing: negatives are about as long as positives
    how = json.loads(pairs_file.with_name("train.jsonl.json").read_text())
    assert how["method"] == "ict" and how["negatives_from"].startswith("BM25")


def test_a_cropped_negative_is_its_first_whole_sentences():
    from rerank.training.pairs import crop

    text = " ".join(f"Sentence number {i} says something rather long about topic {i}." for i in range(40))
    w = crop(text, 150)
    assert text.startswith(w) and w.endswith(".") and 120 <= len(w) <= 225
    assert crop("short text. two.", 150) == "short text. two."
    long_one = "word " * 200
    assert len(crop(long_one, 100)) <= 125 and long_one.startswith(crop(long_one, 100))


@pytest.mark.parametrize(
    ("kind", "loss"), [("shira", "listwise"), ("lora", "pairwise"), ("sft", "pointwise"), ("adapter", "listwise")]
)
def test_task_modules_train_and_stack_with_a_language_module(kind, loss, pairs_file, tiny_bert, tmp_path):
    from rerank import Reranker
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import save_module
    from rerank.scoring.cross import init_cross_encoder
    from rerank.training.task import TaskConfig, train_task_module
    from tests.modules.test_compose import random_module

    cross = init_cross_encoder(tiny_bert, tmp_path / "ce", seed=0)
    lang = save_module(random_module(ComposedModel(cross), 5, lang="en", density=0.05), tmp_path / "en-lang")
    cfg = TaskConfig(
        kind=kind, loss=loss, max_steps=4, batch_queries=2, negatives=3, max_length=64, eval_every=2, patience=None
    )
    m = train_task_module(pairs_file, tmp_path / "task", cfg, lang_module=lang, model=tiny_bert, progress=False)
    r = m.config.recipe
    assert m.config.role == "task" and m.config.kind == kind and r["loss"] == loss and r["language_module"]["path"]
    assert {"classifier.weight", "pooler.dense.weight"} <= set(m.extras) and r["steps"] >= 2
    from rerank.backbone.runtime import load_weights

    start = load_weights(cross, head=True, device=torch.device("cpu"))  # the head training started from
    assert not torch.equal(m.extras["classifier.weight"], start.classifier.weight.detach())  # the head learned
    assert not torch.equal(m.extras["pooler.dense.weight"], start.bert.pooler.dense.weight.detach())
    assert 0 < r["dev_mrr_composed"] <= 1 and 0 < r["dev_mrr_shuffled_queries"] <= 1 and r["dev_mrr_random"] > 0.4
    pairs = [("right to education", "Everyone has the right to education."), ("slavery", "No one shall be held.")]
    plain = Reranker(cross).predict(pairs)
    stacked = Reranker(cross, modules=[lang, tmp_path / "task"]).predict(pairs)
    assert not torch.allclose(torch.tensor(plain), torch.tensor(stacked))


def test_bad_task_input(cli, pairs_file, tiny_bert, tmp_path, capsys):
    from rerank.training.task import TaskConfig, train_task_module

    with pytest.raises(RerankError, match="unknown --loss 'hinge'"):
        train_task_module(pairs_file, tmp_path / "x", TaskConfig(loss="hinge"), model=tiny_bert, progress=False)
    with pytest.raises(RerankError, match="margin-mse needs teacher scores"):
        train_task_module(pairs_file, tmp_path / "x", TaskConfig(loss="margin-mse"), model=tiny_bert, progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "x", "positive": {"text": "y"}, "negatives": []}\n')
    with pytest.raises(RerankError, match="bad.jsonl:1: not a training query with negatives"):
        train_task_module(bad, tmp_path / "x", TaskConfig(), model=tiny_bert, progress=False)

    run = cli

    code, out, err = run(
        "train",
        "task",
        "--pairs",
        pairs_file,
        "--out",
        tmp_path / "t",
        "--kind",
        "lora",
        "--max-steps",
        "2",
        "--batch-queries",
        "2",
        "--negatives",
        "3",
        "--max-length",
        "64",
        "--model",
        tiny_bert,
        "--quiet",
    )
    assert code == 0 and "lora task module (listwise)" in out and "no --lang-module" in err, err
    from rerank import Reranker
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import save_module
    from rerank.scoring.cross import init_cross_encoder
    from tests.modules.test_compose import random_module

    cross = init_cross_encoder(tiny_bert, tmp_path / "ce", seed=0)
    lang = save_module(random_module(ComposedModel(cross), 5, lang="ky", density=0.05), tmp_path / "ky-lang")
    Reranker(cross, modules=[lang, tmp_path / "t"])
    assert "was trained without a language module" in capsys.readouterr().err
    foreign = random_module(ComposedModel(cross), 6, lang="en", density=0.05)
    foreign.config.base_fingerprint = "sha256:" + "ab" * 32
    save_module(foreign, tmp_path / "foreign-lang")
    code, _, err = run(
        "train",
        "task",
        "--pairs",
        pairs_file,
        "--out",
        tmp_path / "t3",
        "--lang-module",
        tmp_path / "foreign-lang",
        "--model",
        tiny_bert,
        "--max-steps",
        "1",
    )
    assert code == 2 and "was trained on backbone tiny (sha256:abab" in err and not (tmp_path / "t3").exists(), err
    code, _, err = run(
        "train",
        "task",
        "--pairs",
        pairs_file,
        "--out",
        tmp_path / "t2",
        "--batch-queries",
        "64",
        "--negatives",
        "15",
        "--max-length",
        "512",
        "--model",
        tiny_bert,
    )
    assert code == 2 and "would not fit here" in err
    code, out, err = run("train", "pairs", "--docs", tmp_path / "nope.jsonl", "--out", tmp_path / "p.jsonl")
    assert code == 2 and "nope.jsonl" in err and "Traceback" not in err


def test_the_list_aware_head_trains_and_scores_each_candidate_in_the_context_of_its_list(
    pairs_file, tiny_bert, tmp_path
):
    from rerank import Reranker
    from rerank.scoring.cross import init_cross_encoder
    from rerank.scoring.listhead import ListHead
    from rerank.training.task import TaskConfig, train_task_module

    cross = init_cross_encoder(tiny_bert, tmp_path / "ce", seed=0)
    cfg = TaskConfig(
        kind="shira",
        loss="listwise",
        max_steps=4,
        batch_queries=2,
        negatives=3,
        max_length=64,
        eval_every=2,
        list_head=True,
        lr=1e-2,
        head_lr=5e-2,
        probe_queries=0,
    )
    m = train_task_module(pairs_file, tmp_path / "task", cfg, model=tiny_bert, progress=False)
    assert {"list_head.q.weight", "list_head.out.weight"} <= set(m.extras) and m.extras["list_head.out.weight"].any()
    assert m.config.recipe["head"].startswith("list-aware")
    q = "right to education"
    docs = ["Everyone has the right to education.", "No one shall be held in slavery.", "The right to life."]
    plain = Reranker(cross)
    assert plain.scorer.list_head is None  # attached only for a module that brings one
    rr16 = Reranker(cross, modules=[tmp_path / "task"], precision="bf16")  # the list head runs in fp32 there too
    together16 = rr16.predict([(q, d) for d in docs])
    assert not np.allclose(together16, np.array([rr16.predict([(q, d)])[0] for d in docs]))
    rr = Reranker(cross, modules=[tmp_path / "task"], precision="fp32")  # compared by hand below, in fp32
    together = rr.predict([(q, d) for d in docs])
    alone = np.array([rr.predict([(q, d)])[0] for d in docs])
    assert not np.allclose(together, alone)  # a candidate's score depends on the others in its list
    np.testing.assert_allclose(together16, together, atol=0.05)
    # by hand: pooled [CLS] vectors, attention over the list, then the classifier
    model = rr.scorer.model
    enc = rr.scorer.tokenizer([q] * 3, docs, return_tensors="pt", padding=True)
    head = ListHead(model.config.hidden_size)
    head.load_state_dict({k.removeprefix("list_head."): v for k, v in m.extras.items() if k.startswith("list_head.")})
    with torch.no_grad():
        p = model.bert(**enc).pooler_output
        mixed = p + head.out(torch.softmax(head.q(p) @ head.k(p).T / 8.0, -1) @ head.v(p))
        expect = model.classifier(mixed)[:, 0].numpy()
    np.testing.assert_allclose(together, expect, rtol=0, atol=1e-5)
    rr.use_modules([])
    assert not rr.scorer.list_head.active()  # reverted with the rest of the head


def test_group_scores_in_micro_batches_equal_one_padded_batch(pairs_file, tiny_cross):
    from rerank.backbone.runtime import load_tokenizer, load_weights
    from rerank.training.pairs import read_pairs
    from rerank.training.task import group_scores

    rows = read_pairs(pairs_file)[:5]
    tok = load_tokenizer(tiny_cross)
    model = load_weights(tiny_cross, head=True, device=torch.device("cpu"))
    got, tokens = group_scores(model, tok, rows, 3, 64, max_tokens=256)  # several micro-batches
    firsts = [r["query"] for r in rows for _ in range(4)]
    seconds = [d for r in rows for d in [r["positive"]["text"], *(n["text"] for n in r["negatives"][:3])]]
    enc = tok(firsts, seconds, truncation="only_second", max_length=64, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = model(**enc).logits.view(5, 4)
    torch.testing.assert_close(got.detach(), want, rtol=0, atol=1e-5)
    assert tokens == int(enc["attention_mask"].sum())
    long = dict(rows[0], query=" ".join([rows[0]["query"]] * 40))  # a query longer than max_length is cut
    scores, tokens = group_scores(model, tok, [long], 3, 64)
    assert scores.shape == (1, 4) and tokens <= 4 * 64


def test_pairs_from_an_ir_datasets_id(pairs_file, tmp_path, monkeypatch):
    """A dataset registered with ir_datasets (local files in its formats, as a downloaded one reads) gives the
    same training queries as the file they were written from; an id that is not downloaded is one clear error."""
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import TsvDocPairs, TsvDocs, TsvQueries
    from ir_datasets.util import LocalDownload

    from rerank.training.pairs import read_pairs

    rows = read_pairs(pairs_file)[:6]
    docs, queries, triples = {}, {}, []
    for i, r in enumerate(rows):
        queries[f"q{i}"] = r["query"]
        for d in [r["positive"], *r["negatives"]]:  # (texts are passages, cut per query: ids per query too)
            docs[f"{i}:{d['id']}"] = d["text"]
        triples += [(f"q{i}", f"{i}:{r['positive']['id']}", f"{i}:{n['id']}") for n in r["negatives"]]

    def tsv(name, lines):
        (tmp_path / name).write_text("".join("\t".join(x) + "\n" for x in lines), encoding="utf-8")
        return LocalDownload(tmp_path / name)

    name = f"rerank-test/{tmp_path.name}/triples"
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "irds"))
    ir_datasets.registry.register(
        name,
        Dataset(
            TsvDocs(tsv("docs.tsv", docs.items())),
            TsvQueries(tsv("queries.tsv", queries.items())),
            TsvDocPairs(tsv("triples.tsv", triples)),
        ),
    )
    got = read_pairs(name)
    assert [g["query"] for g in got] == [r["query"] for r in rows]
    assert [g["positive"]["text"] for g in got] == [r["positive"]["text"] for r in rows]
    assert [[n["text"] for n in g["negatives"]] for g in got] == [[n["text"] for n in r["negatives"]] for r in rows]
    assert len(read_pairs(name, max_queries=2)) == 2
    with pytest.raises(RerankError, match="no such file, nor an ir_datasets id"):
        read_pairs("nosuchcorpus/train/triples")
    with pytest.raises(RerankError, match="has no document pairs"):
        read_pairs("vaswani")
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):  # no download, even with internet
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    with pytest.raises(RerankError, match="could not read msmarco-passage/train/triples-small here"):
        read_pairs("msmarco-passage/train/triples-small", max_queries=10)  # not downloaded; no internet


def test_distillation_from_the_bi_encoder(udhr_dir, tiny_bert, tmp_path):
    from rerank.training.pairs import make_pairs, read_pairs
    from rerank.training.task import FUSION_WEIGHTS, TEACHER_TEMPERATURE, TaskConfig, ranking_loss, train_task_module

    out = tmp_path / "pairs.jsonl"
    make_pairs(
        udhr_dir / "docs.en.jsonl",
        out,
        lang="en",
        negatives=3,
        random_negatives=1,
        max_queries=8,
        teacher=True,
        progress=False,
    )
    rows = read_pairs(out)
    assert all(len(r["teacher"]) == 4 and all(0 < t <= 1 for t in r["teacher"]) for r in rows)  # cosines
    assert sum(r["teacher"][0] > max(r["teacher"][1:]) for r in rows) >= len(rows) // 2  # the teacher knows a bit
    t = torch.tensor([r["teacher"] for r in rows])
    # a student that equals the teacher pays only the label's cross-entropy; another one pays more
    ce = torch.nn.functional.cross_entropy(t / TEACHER_TEMPERATURE, torch.zeros(len(t), dtype=torch.long))
    torch.testing.assert_close(ranking_loss(t / TEACHER_TEMPERATURE, "listwise-kd", t), ce)
    assert ranking_loss(torch.zeros_like(t), "listwise-kd", t) > ranking_loss(torch.zeros_like(t), "listwise", t)
    cfg = TaskConfig(
        kind="lora",
        loss="listwise-kd",
        max_steps=2,
        batch_queries=2,
        negatives=3,
        max_length=64,
        probe_queries=4,
        probe_epochs=1,
    )
    m = train_task_module(out, tmp_path / "kd", cfg, model=tiny_bert, progress=False)
    r = m.config.recipe
    assert r["loss"] == "listwise-kd" and r["probe"]["queries"] == 4
    # with a teacher, the dev split also measures the bi-encoder and chooses the first stage's fusion weight
    assert 0 < r["dev_mrr_teacher"] <= 1 and r["fusion"]["first_stage_weight"] in FUSION_WEIGHTS
    assert r["fusion"]["dev_mrr"] == max(r["fusion"]["dev_mrr_by_weight"].values())
    assert r["fusion"]["dev_mrr_by_weight"]["0.0"] == r["dev_mrr_composed"]  # weight 0: the cross-encoder alone
    # `rerank train check` runs the dev checks again and records them; another pairs file is refused
    import json

    from rerank.cli.main import main

    cfg_file = tmp_path / "kd" / "module_config.json"
    raw = json.loads(cfg_file.read_text())
    del raw["recipe"]["fusion"], raw["recipe"]["dev_mrr_teacher"]
    cfg_file.write_text(json.dumps(raw))
    with pytest.raises(SystemExit) as e:
        main(["train", "check", str(tmp_path / "kd"), "--pairs", str(out), "--model", str(tiny_bert)])
    assert e.value.code == 0
    again = json.loads(cfg_file.read_text())["recipe"]
    assert again["fusion"] == r["fusion"] and again["dev_mrr_teacher"] == r["dev_mrr_teacher"]
    other = tmp_path / "other.jsonl"
    other.write_text("".join(reversed(out.read_text().splitlines(keepends=True))))  # the rows in another order
    with pytest.raises(SystemExit) as e:
        main(["train", "check", str(tmp_path / "kd"), "--pairs", str(other), "--model", str(tiny_bert)])
    assert e.value.code == 2


def test_the_first_stage_fusion_weight_is_the_one_with_the_best_dev_mrr():
    from rerank.training.task import fusion_choice

    rng = np.random.default_rng(0)
    # the first stage finds the positive (entry 0) nearly always; the cross-encoder is noise: fusion leans on
    # the first stage, and its dev MRR is the first stage's
    first = [[1.0, *rng.uniform(0, 0.9, 7)] for _ in range(50)]
    noise = [list(rng.normal(size=8)) for _ in range(50)]
    f = fusion_choice(noise, first, 60)
    assert f["first_stage_weight"] > 1 and f["dev_mrr"] == 1.0 and f["dev_mrr_by_weight"]["0.0"] < 0.6
    # a perfect cross-encoder: the cross-encoder alone (weight 0 wins the tie)
    assert fusion_choice(first, noise, 60)["first_stage_weight"] == 0.0


@pytest.mark.parametrize("mode", ["dynamic-rank", "dynamic-density", "mosa"])
def test_task_modules_train_in_the_dynamic_and_mosa_modes(mode, pairs_file, tiny_bert, tmp_path):
    """DyLoRA's ranges and MoSA's split through the task trainer: the dev figure the loop selects by is the mean
    over the budgets (each kept), the module serves a smaller budget at load time, MoSA's is a plain adapter."""
    from rerank import Reranker
    from rerank.scoring.cross import init_cross_encoder
    from rerank.training.dynamic import Dynamic
    from rerank.training.task import TaskConfig, train_task_module

    cross = init_cross_encoder(tiny_bert, tmp_path / "ce", seed=0)
    kw = {
        "dynamic-rank": dict(kind="lora", rank=4, dynamic=Dynamic("rank", 1, 4)),
        "dynamic-density": dict(kind="shira", density=0.04, dynamic=Dynamic("density", 0.01, 0.04)),
        "mosa": dict(kind="adapter", reduction=4, mosa=2),
    }[mode]
    cfg = TaskConfig(loss="listwise", max_steps=4, batch_queries=2, negatives=3, max_length=64, eval_every=2,
                     patience=None, probe_queries=0, **kw)  # fmt: skip
    m = train_task_module(pairs_file, tmp_path / "task", cfg, model=tiny_bert, progress=False)
    r = m.config.recipe
    pairs = [("right to education", "Everyone has the right to education."), ("slavery", "No one shall be held.")]
    if mode == "mosa":
        assert r["mosa"]["parts"] == 2 and m.config.dynamic is None
        assert len(Reranker(cross, modules=[tmp_path / "task"]).predict(pairs)) == 2
        return
    at = r["dynamic"]["dev_at_best"]
    assert len(at) == 3 and all(0 < v["mrr"] <= 1 for v in at.values())
    assert abs(r["dev_mrr_best"] - sum(v["mrr"] for v in at.values()) / 3) < 1e-3
    small = {"module_rank": 2} if mode == "dynamic-rank" else {"module_density": 0.02}
    full = Reranker(cross, modules=[tmp_path / "task"]).predict(pairs)
    part = Reranker(cross, modules=[tmp_path / "task"], **small).predict(pairs)
    assert len(part) == 2 and not torch.allclose(torch.tensor(full), torch.tensor(part))
