"""eval/modules_table.py --lang-effect: task vs task+lang per kind and query language, paired t-test + Holm."""

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]


def load_eval_script(name: str):
    """One of the scripts under eval/ (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "eval" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def table():
    return load_eval_script("modules_table")


def write_cell(folder: Path, per_system: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True)
    with open(folder / "per-query.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["system", "query_id", "MAP", "nDCG@10", "MRR", "R@100"])
        for system, values in per_system.items():
            for i, v in enumerate(values):
                w.writerow([system, f"q{i:02d}", 0.0, float(v), 0.0, 0.0])


def test_lang_effect_pairs_each_kind_with_its_stacked_row(tmp_path, table):
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 31)
    worse = np.clip(base - rng.uniform(0.0, 0.3, 31), 0, 1)
    noise = np.clip(base + rng.normal(0, 0.1, 31), 0, 1)
    for q in ("ky", "en"):
        write_cell(
            tmp_path / "cells" / f"{q}-en",
            {
                "auto": base,
                "task:lora": base,
                "task+lang:lora": worse,
                "task:shira": base,
                "task+lang:shira": noise,
                "task:sft": base,  # no task+lang:sft row: skipped
            },
        )
    rows = table.lang_effect(tmp_path)
    assert [(r["kind"], r["lang"]) for r in rows] == [("shira", "ky"), ("shira", "en"), ("lora", "ky"), ("lora", "en")]
    lora = rows[2]
    assert lora["diff"] == pytest.approx(float((worse - base).mean()))
    assert lora["p"] == pytest.approx(float(stats.ttest_rel(worse, base).pvalue))
    assert lora["p"] < 0.001 and lora["n"] == 31
    for r in rows:
        assert r["p"] <= r["p_holm"] <= 1.0
