"""eval/dev_table.py: each reranking system against the best first stage of its column, with the paired t-test
and the goal (best + 0.02, or + half the distance to 1 near the ceiling); the shipped grid files load."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from tests.eval.test_modules_table import load_eval_script, write_cell

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def table():
    return load_eval_script("dev_table")


def test_each_reranker_is_tested_against_the_best_first_stage(tmp_path, table):
    rng = np.random.default_rng(1)
    dense = rng.uniform(0.3, 1, 120)
    bm25 = np.clip(dense - 0.2, 0, 1)
    better = np.clip(dense + rng.uniform(0, 0.1, 120), 0, 1)
    write_cell(tmp_path / "cells" / "ug-en", {"bm25": bm25, "dense": dense, "default": better})
    systems = [
        {"name": "bm25", "reranker": "none"},
        {"name": "dense", "reranker": "none"},
        {"name": "default", "reranker": "auto"},
    ]
    (tmp_path / "grid.json").write_text(
        json.dumps({"columns": ["ug→en"], "systems": ["bm25", "dense", "default"], "systems_config": systems})
    )
    [row] = table.rows_of(tmp_path, "nDCG@10", None)
    assert row["first_stage"] == "dense" and row["system"] == "default" and row["n"] == 120
    assert row["diff"] == pytest.approx(float((better - dense).mean()))
    assert row["p"] == pytest.approx(float(stats.ttest_rel(better, dense).pvalue))
    assert row["goal"] == pytest.approx(min(dense.mean() + 0.02, dense.mean() + (1 - dense.mean()) / 2))
    assert table.goal(0.99) == pytest.approx(0.995) and table.goal(0.5) == pytest.approx(0.52)
    # the ablation's form: one named system against another
    [vs] = table.rows_of(tmp_path, "nDCG@10", ["bm25"], against="default")
    assert vs["first_stage"] == "default" and vs["system"] == "bm25"
    assert vs["p"] == pytest.approx(float(stats.ttest_rel(bm25, better).pvalue))


def test_the_shipped_grids_load():
    from rerank.eval.grid import load_grid

    grids = sorted((ROOT / "eval").glob("*.toml"))
    assert {g.name for g in grids} >= {"grid.toml", "dev-qed.toml", "dev-tatoeba.toml", "dev-lohelp.toml"}
    for g in grids:
        assert load_grid(g).systems
