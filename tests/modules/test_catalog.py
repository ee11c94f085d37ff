"""Shipped modules: which are stacked by default for a query language, and a cross-encoder whose ranking
head comes from the task module (the embedded backbone ships none)."""

import numpy as np
import pytest
import torch

from rerank.errors import RerankError
from tests.modules.test_compose import random_module
from tests.modules.test_kinds import random_lora


def task_module(cm, seed=9, trained_on="shira"):
    """A LoRA task module with a whole ranking head (pooler + classifier), trained on an en language module."""
    m = random_lora(cm, seed, role="task", lang="en", rank=4, head=True)
    g = torch.Generator().manual_seed(seed)
    m.extras |= {n: torch.randn(p.shape, generator=g) * 0.1 for n, p in cm.heads.items() if n.startswith("pooler")}
    m.config.recipe = {"language_module": {"kind": trained_on}}
    return m


def bm25_search(index, model, *extra) -> list[str]:
    """`rerank search` of one Kyrgyz query over ``index`` with a BM25 first stage and ``model``, top 3."""
    return [
        "search",
        "--index",
        str(index),
        "--first-stage",
        "bm25",
        "--model",
        str(model),
        "--lang",
        "ky",
        "right to education",
        "-k",
        "3",
        *extra,
    ]


@pytest.fixture(scope="module")
def shipped(tiny_bert, tmp_path_factory):
    """A modules/ folder for the tiny backbone: en, ky (shira) and ky (lora) language modules, one task module,
    and a module for another backbone."""
    from rerank.backbone.runtime import load_weights
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import save_module

    home = tmp_path_factory.mktemp("modules")
    cm = ComposedModel(load_weights(tiny_bert, head=True, device=torch.device("cpu"), new_head=True))
    save_module(random_module(cm, 1, lang="en", density=0.1), home / "en-lang-shira")
    save_module(random_module(cm, 2, lang="ky", density=0.1), home / "ky-lang-shira")
    save_module(random_lora(cm, 3, role="language", lang="ky"), home / "ky-lang-lora")
    save_module(task_module(cm), home / "en-task-lora")
    other = random_module(cm, 4, lang="ug", density=0.1)
    other.config.base_fingerprint = "sha256:" + "0" * 64
    save_module(other, home / "ug-lang-other")
    (home / "README.md").write_text("not a module\n")
    return home


def test_the_default_stack_is_the_query_languages_module_and_the_task_module(shipped, tiny_bert):
    from rerank.backbone import resolve_model
    from rerank.modules.catalog import catalog, default_stack

    fp = resolve_model(tiny_bert).fingerprint
    assert [e.path.name for e in catalog(shipped)] == sorted(p.name for p in shipped.iterdir() if p.is_dir())
    task = shipped / "en-task-lora"
    # the kind the task module was trained on is preferred (shira over lora for ky)
    assert default_stack("ky", fp, shipped) == (shipped / "ky-lang-shira", task)
    assert default_stack("Kyrgyz", fp, shipped) == default_stack("kir", fp, shipped)
    # no Uyghur module for this backbone (the one there is for another): the task module's source language's
    assert default_stack("ug", fp, shipped) == (shipped / "en-lang-shira", task)
    assert default_stack(None, fp, shipped) == (shipped / "en-lang-shira", task)
    assert default_stack("ky", "sha256:" + "1" * 64, shipped) == ()


def test_a_task_module_trained_on_the_bare_backbone_is_stacked_alone(shipped, tiny_bert, tmp_path):
    """Trained on relevance data in several languages with no language module below it, it runs as it was
    trained: no query-language module is put under it by default."""
    import shutil

    from rerank.backbone import resolve_model
    from rerank.backbone.runtime import load_weights
    from rerank.modules.catalog import default_stack
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import save_module

    home = tmp_path / "modules"
    shutil.copytree(shipped, home)
    shutil.rmtree(home / "en-task-lora")
    cm = ComposedModel(load_weights(tiny_bert, head=True, device=torch.device("cpu"), new_head=True))
    bare = task_module(cm, trained_on=None)
    bare.config.recipe = {"language_module": None}
    save_module(bare, home / "en-task-lora")
    fp = resolve_model(tiny_bert).fingerprint
    assert default_stack("ky", fp, home) == (home / "en-task-lora",) == default_stack("ug", fp, home)


def test_a_task_module_gives_a_headless_backbone_its_ranking_head(shipped, tiny_bert, tiny_cross):
    from rerank import Reranker

    pairs = [("right to education", "Everyone has the right to education."), ("slavery", "No one shall be held.")]
    mods = [shipped / "ky-lang-shira", shipped / "en-task-lora"]
    rr = Reranker(tiny_bert, modules=mods)
    assert rr.kind == "cross"
    # the module writes the whole head: the same scores as a cross-encoder folder with any head of its own
    np.testing.assert_allclose(rr.predict(pairs), Reranker(tiny_cross, modules=mods).predict(pairs), rtol=0, atol=1e-6)
    rr.use_modules([])
    with pytest.raises(RerankError, match="no ranking head of its own and no task module is stacked"):
        rr.predict(pairs)
    rr.use_modules([shipped / "ky-lang-shira"])  # a language module alone brings no head
    with pytest.raises(RerankError, match="no task module is stacked"):
        rr.predict(pairs)
    assert Reranker(tiny_bert).kind == "bi"
    with pytest.raises(RerankError, match="has no ranking head"):
        Reranker(tiny_bert, kind="cross")


@pytest.mark.java
def test_search_stacks_the_shipped_modules_by_default(shipped, tiny_dense_index, tiny_bert, monkeypatch, capsys):
    from rerank.cli.main import main
    from rerank.pipeline import Pipeline
    from rerank.types import Query

    monkeypatch.setenv("RERANK_MODULES", str(shipped))
    qs = [Query("q1", "Everyone has the right to education", "ky"), Query("q2", "freedom of movement", "ug")]
    kw = dict(first_stage="bm25", model=tiny_bert, depth=10)
    with Pipeline(tiny_dense_index, **kw) as p:
        assert p.reranker_kind == "cross"
        before = dict(p.modules)
        auto = p.batch_search(qs, k=10)
        assert p.modules == before  # resolved before the search, not during it
        assert p.modules_for("ky") == (str(shipped / "ky-lang-shira"), str(shipped / "en-task-lora"))
    explicit = {
        "ky": [shipped / "ky-lang-shira", shipped / "en-task-lora"],
        "ug": [shipped / "en-lang-shira", shipped / "en-task-lora"],
    }
    with Pipeline(tiny_dense_index, modules=explicit, **kw) as p:
        assert p.batch_search(qs, k=10) == auto
    with Pipeline(tiny_dense_index, modules=None, **kw) as p:
        assert p.reranker_kind == "bi"  # nothing stacked: the plain backbone's bi-encoder
    with Pipeline(tiny_dense_index, reranker="bi", **kw) as p:
        assert p.modules_for("ky") == ()  # a forced bi-encoder gets no shipped task module

    def search(*extra):
        with pytest.raises(SystemExit) as e:
            main(bm25_search(tiny_dense_index, tiny_bert, *extra))
        cap = capsys.readouterr()
        assert e.value.code == 0, cap.err
        return cap

    cap = search()
    assert "bm25+cross" in cap.out and "modules for ky queries:" in cap.err and "ky-lang-shira" in cap.err
    cap = search("--modules", "none")
    assert "bm25+bi" in cap.out and "modules" not in cap.err


@pytest.mark.java
def test_a_grid_system_can_stack_the_shipped_modules(
    shipped, tiny_dense_index, tiny_bert, udhr_dir, tmp_path, monkeypatch
):
    from rerank.collections.topics import read_topics
    from rerank.collections.trec import read_run
    from rerank.eval.grid import load_grid, run_grid
    from rerank.pipeline import Pipeline

    monkeypatch.setenv("RERANK_MODULES", str(shipped))
    grid = tmp_path / "grid.toml"
    grid.write_text(
        f"""
baseline = "bm25"
[collection]
docs = "{udhr_dir}/docs.{{doc}}.jsonl"
index = "{tiny_dense_index.parent}/udhr-{{doc}}"
topics = "{udhr_dir}/topics.{{query}}.tsv"
qrels = "{udhr_dir}/qrels.{{doc}}.txt"
doc_langs = ["en"]
query_langs = ["en"]
[[systems]]
name = "bm25"
first_stage = "bm25"
reranker = "none"
[[systems]]
name = "shipped"
first_stage = "bm25"
model = "{tiny_bert}"
modules = "auto"
depth = 10
""",
        encoding="utf-8",
    )
    runs = run_grid(load_grid(grid), tmp_path / "out", progress=False)
    got = read_run(runs[("en", "en")]["shipped"])
    queries = read_topics(udhr_dir / "topics.en.tsv", lang="en")
    with Pipeline(tiny_dense_index, first_stage="bm25", model=tiny_bert, depth=10) as p:
        assert p.reranker_kind == "cross"
        want = p.batch_search(queries, k=100)
    with Pipeline(tiny_dense_index, first_stage="bm25", model=tiny_bert, depth=10, modules=None) as p:
        plain = p.batch_search(queries, k=100)
    pairs = [(s.query_id, s.doc_id) for s in got]
    assert pairs == [(s.query_id, s.doc_id) for q in queries for s in want[q.query_id]]
    assert pairs != [(s.query_id, s.doc_id) for q in queries for s in plain[q.query_id]]


def set_task_recipe(shipped, tmp_path, monkeypatch, **recipe):
    """A copy of the shipped folder whose task module's recipe has these entries, made the modules home."""
    import json
    import shutil

    home = tmp_path / "modules"
    shutil.copytree(shipped, home)
    cfg_file = home / "en-task-lora" / "module_config.json"
    raw = json.loads(cfg_file.read_text())
    raw["recipe"] |= recipe
    cfg_file.write_text(json.dumps(raw))
    monkeypatch.setenv("RERANK_MODULES", str(home))
    return home


@pytest.mark.java
def test_a_task_module_that_chose_a_first_stage_weight_on_dev_fuses_with_the_first_stage(
    shipped, tiny_dense_index, tiny_bert, tmp_path, monkeypatch, capsys
):
    from rerank.cli.main import main
    from rerank.indexes.fusion import rrf
    from rerank.pipeline import Pipeline
    from rerank.types import Query

    set_task_recipe(shipped, tmp_path, monkeypatch, fusion={"k": 60, "first_stage_weight": 2.0})
    qs = [Query("q1", "Everyone has the right to education", "ky"), Query("q2", "freedom of movement", "en")]
    kw = dict(first_stage="bm25", model=tiny_bert, depth=10)
    with Pipeline(tiny_dense_index, **kw) as p:
        assert p.fusion_weight(p.modules_for("ky")) == 2.0
        fused, first = p.run(qs, k=10)
    with Pipeline(tiny_dense_index, first_stage_weight=0, **kw) as p:
        alone = p.batch_search(qs, k=10)
    for q in qs:
        want = rrf([alone[q.query_id], first[q.query_id][:10]], [1.0, 2.0], 60, query_id=q.query_id)
        assert [s.doc_id for s in fused[q.query_id]] == [s.doc_id for s in want]
        assert [s.doc_id for s in alone[q.query_id]] != [s.doc_id for s in first[q.query_id][:10]]

    def search(*extra):
        with pytest.raises(SystemExit) as e:
            main(bm25_search(tiny_dense_index, tiny_bert, *extra))
        return e.value.code, capsys.readouterr()

    code, cap = search()
    assert code == 0 and "fused with the first stage at weight 2" in cap.err, cap.err
    code, cap = search("--first-stage-weight", "0")
    assert code == 0 and "fused" not in cap.err
    for bad in ("-1", "lots"):
        code, cap = search("--first-stage-weight", bad)
        assert code == 2 and "first-stage weight is a number ≥ 0 or auto" in cap.err and "Traceback" not in cap.err


@pytest.mark.java
def test_auto_skips_a_task_module_that_lost_to_the_bi_encoder_on_its_dev_split(
    shipped, tiny_dense_index, tiny_bert, tmp_path, monkeypatch, capsys
):
    from rerank.cli.main import main
    from rerank.modules.catalog import task_verdict
    from rerank.pipeline import Pipeline

    kw = dict(first_stage="bm25", model=tiny_bert, depth=10)
    for mine, bi, used in ((0.61, 0.6, True), (0.6, 0.6, True), (0.55, 0.6, False)):
        home = set_task_recipe(shipped, tmp_path / str(mine), monkeypatch, dev_mrr_composed=mine, dev_mrr_teacher=bi)
        assert (task_verdict(home / "en-task-lora") is None) == used
        with Pipeline(tiny_dense_index, **kw) as p:
            assert (p.reranker_kind == "cross") == used and (p.modules_for("ky") != ()) == used
            assert (p.auto_note is None) == used
    assert "MRR 0.55 is below the bi-encoder's 0.6" in p.auto_note
    with Pipeline(tiny_dense_index, reranker="cross", **kw) as p:  # forced: stacked anyway
        assert p.reranker_kind == "cross" and p.modules_for("ky")[-1].endswith("en-task-lora")
    with pytest.raises(SystemExit) as e:
        main(bm25_search(tiny_dense_index, tiny_bert))
    cap = capsys.readouterr()
    assert e.value.code == 0 and "en-task-lora is not used by --reranker auto" in cap.err and "bm25+bi" in cap.out


def test_the_modules_home_is_the_variable_then_the_checkout_then_the_user_cache(tmp_path, monkeypatch):
    """$RERANK_MODULES wins; a package running from a source checkout finds its modules/; an installed package
    (no pyproject.toml beside it) finds $RERANK_HOME/modules; none of them present: None."""
    from pathlib import Path

    import rerank.modules.catalog as cat

    mine = tmp_path / "mine"
    mine.mkdir()
    monkeypatch.setenv("RERANK_MODULES", str(mine))
    assert cat.modules_home() == mine
    monkeypatch.delenv("RERANK_MODULES")
    checkout = Path(cat.__file__).resolve().parents[2]
    assert cat.modules_home() == checkout / "modules"
    installed = tmp_path / "site-packages" / "rerank" / "modules" / "catalog.py"
    monkeypatch.setattr(cat, "__file__", str(installed))
    monkeypatch.setenv("RERANK_HOME", str(tmp_path / "home"))
    assert cat.modules_home() is None
    (tmp_path / "home" / "modules").mkdir(parents=True)
    assert cat.modules_home() == tmp_path / "home" / "modules"


def test_what_search_reads_from_a_task_module_config_is_typed_and_tolerant():
    """The fusion weight, the dev figures behind --reranker auto and the kind trained below are read from the
    recipe once: malformed entries fall back to 'no record', never to an exception during a search."""
    from rerank.modules.format import ModuleConfig

    def cfg(role="task", **recipe):
        return ModuleConfig(kind="shira", role=role, language="", base_model="m", base_fingerprint="f", recipe=recipe)

    c = cfg(
        fusion={"first_stage_weight": 0.5, "k": 30},
        dev_mrr_composed=0.8,
        dev_mrr_teacher=0.9,
        language_module={"kind": "sft", "path": "x"},
    )
    assert (c.fusion.first_stage_weight, c.fusion.k) == (0.5, 30.0)
    assert not c.dev.earned() and c.trained_on == "sft" and not c.trained_alone
    bad = cfg(fusion={"first_stage_weight": "lots"}, dev_mrr_composed="?", language_module=None)
    assert bad.fusion.first_stage_weight == 0.0 and bad.dev.earned() and bad.trained_on is None and bad.trained_alone
    assert cfg(role="language", fusion={"first_stage_weight": 2.0}).fusion.first_stage_weight == 0.0
