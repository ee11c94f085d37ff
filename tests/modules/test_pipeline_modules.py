"""Modules in the search pipeline: stacked into the reranker, switched per query language, reverted."""

import pytest
import torch

from rerank.errors import RerankError
from rerank.types import Query
from tests.modules.test_compose import random_module

pytestmark = pytest.mark.java

TOPICS = [
    ("q1", "Everyone has the right to education", "ky"),
    ("q2", "No one shall be held in slavery", "ug"),
    ("q3", "freedom of movement", "ky"),
    ("q4", "right to marry", "ug"),
]


@pytest.fixture(scope="module")
def module_dirs(tiny_cross, tmp_path_factory):
    from transformers import AutoModelForSequenceClassification

    from rerank.backbone import fingerprint
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import save_module

    out = tmp_path_factory.mktemp("mods")
    cm = ComposedModel(AutoModelForSequenceClassification.from_pretrained(str(tiny_cross)), fingerprint(tiny_cross))
    return {
        lang: save_module(random_module(cm, seed, lang=lang, density=0.3), out / f"{lang}-lang")
        for seed, lang in ((1, "ky"), (2, "ug"))
    }


def queries():
    return [Query(qid, text, lang) for qid, text, lang in TOPICS]


def test_mixed_language_batch_equals_each_language_alone(tiny_dense_index, tiny_cross, tiny_bert, module_dirs):
    from rerank.pipeline import Pipeline

    kw = dict(first_stage="bm25", reranker="cross", model=tiny_cross, depth=10)
    with Pipeline(tiny_dense_index, modules={"ky": [module_dirs["ky"]], "ug": [module_dirs["ug"]]}, **kw) as p:
        base = {n: t.clone() for n, t in p.reranker.scorer.model.state_dict().items()}
        mixed = p.batch_search(queries(), k=10)
    assert list(mixed) == ["q1", "q2", "q3", "q4"]  # input order kept across the language groups
    for lang in ("ky", "ug"):
        with Pipeline(tiny_dense_index, modules=[module_dirs[lang]], **kw) as p:
            alone = p.batch_search([q for q in queries() if q.lang == lang], k=10)
        for qid, docs in alone.items():
            assert docs == mixed[qid]
    with Pipeline(tiny_dense_index, **kw) as p:
        plain = p.batch_search(queries(), k=10)
        assert any(plain[q] != mixed[q] for q in plain)  # the modules change the scores
        after = p.reranker.scorer.model.state_dict()
    assert all(torch.equal(after[n], t) for n, t in base.items())


def test_language_modules_of_several_languages_serve_their_own_queries(tiny_dense_index, tiny_cross, module_dirs):
    from rerank.pipeline import Pipeline

    ky, ug = str(module_dirs["ky"]), str(module_dirs["ug"])
    pipe = Pipeline(tiny_dense_index, reranker="cross", model=tiny_cross, modules=[ky, ug])
    assert pipe.modules_for("ky") == (ky,) and pipe.modules_for("uig") == (ug,) and pipe.modules_for("tr") == ()
    one = Pipeline(tiny_dense_index, reranker="cross", model=tiny_cross, modules=[ky])
    assert one.modules_for("tr") == (ky,)  # one language: stacked for every query, as given


def test_bad_modules_are_refused_before_searching(tiny_dense_index, tiny_cross, tmp_path, module_dirs):
    from rerank.pipeline import Pipeline

    with pytest.raises(RerankError, match="not a module folder"):
        Pipeline(tiny_dense_index, reranker="cross", model=tiny_cross, modules=[tmp_path])
    with pytest.raises(RerankError, match="with --reranker none they would do nothing"):
        Pipeline(tiny_dense_index, reranker="none", modules=[module_dirs["ky"]])


def test_cli_search_with_modules(capsys, tiny_dense_index, tiny_cross, module_dirs, tmp_path):
    from rerank.cli.main import main

    run = tmp_path / "run.trec"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "search",
                "--index",
                str(tiny_dense_index),
                "--first-stage",
                "bm25",
                "--model",
                str(tiny_cross),
                "--modules",
                str(module_dirs["ky"]),
                "--lang",
                "ky",
                "right to education",
                "-k",
                "5",
            ]
        )
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    assert "bm25+cross" in out.out
    with pytest.raises(SystemExit) as e:
        main(
            [
                "search",
                "--index",
                str(tiny_dense_index),
                "--model",
                str(tiny_cross),
                "--modules",
                str(tmp_path),
                "x",
                "-o",
                str(run),
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2 and "not a module folder" in err and not run.exists()


def test_cli_search_stacks_a_sparse_language_and_a_lora_task_module(
    capsys, tiny_dense_index, tiny_cross, module_dirs, tmp_path
):
    from transformers import AutoModelForSequenceClassification

    from rerank.backbone import fingerprint
    from rerank.cli.main import main
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import save_module
    from tests.modules.test_kinds import random_lora

    cm = ComposedModel(AutoModelForSequenceClassification.from_pretrained(str(tiny_cross)), fingerprint(tiny_cross))
    task = save_module(random_lora(cm, 9, rank=6, head=True), tmp_path / "en-task-lora")
    runs = {}
    for extra in ([], ["--module-rank", "2"]):
        out = tmp_path / f"run{len(extra)}.trec"
        args = ["search", "--index", str(tiny_dense_index), "--first-stage", "bm25", "--model", str(tiny_cross)]
        args += ["--modules", f"{module_dirs['ky']},{task}", "--lang", "ky", "right to education", "-o", str(out)]
        with pytest.raises(SystemExit) as e:
            main(args + extra)
        assert e.value.code == 0, capsys.readouterr().err
        runs[len(extra)] = out.read_text().split()
    assert runs[0] != runs[2]  # a smaller rank is a different (smaller) delta
