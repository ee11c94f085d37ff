"""Paired significance tests of each system against a baseline, per measure, over the same queries.

* paired two-sided t-test (``scipy.stats.ttest_rel``);
* paired randomisation test (``scipy.stats.permutation_test`` over sign flips of the per-query
  differences — exact when 2^n ≤ ``n_resamples``), statistic: mean difference;
* Holm–Bonferroni across the systems compared with the baseline, per measure and test
  (``statsmodels.stats.multitest.multipletests``);
* effect size: Cohen's d_z (mean difference / standard deviation of the differences);
* 95% t confidence intervals of each mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rerank.errors import RerankError

TESTS = ("t", "perm")


@dataclass
class Comparison:
    system: str
    measure: str
    baseline: str
    mean: float
    baseline_mean: float
    diff: float
    p_t: float
    p_perm: float
    p_t_holm: float = 1.0
    p_perm_holm: float = 1.0
    effect_size: float = 0.0
    n: int = 0

    def p(self, test: str = "t", corrected: bool = True) -> float:
        if test not in TESTS:
            raise RerankError(f"unknown test {test!r}", hint="t (paired t-test) or perm (randomisation)")
        return getattr(self, f"p_{test}{'_holm' if corrected else ''}")

    def significant(self, test: str = "t", alpha: float = 0.05) -> bool:
        return self.p(test) < alpha


def confidence_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """t interval of the mean (the mean itself when there is one value or no spread)."""
    from scipy import stats

    m = float(np.mean(values))
    if len(values) < 2 or float(np.std(values)) == 0.0:
        return m, m
    lo, hi = stats.t.interval(level, len(values) - 1, loc=m, scale=stats.sem(values))
    return float(lo), float(hi)


def paired_t_p(x: np.ndarray, base: np.ndarray) -> float:
    """Two-sided paired t-test p of ``x`` against ``base`` over the same queries: 1 when they are identical,
    0 when they differ by the same amount on every query (no spread: the t statistic is infinite)."""
    from scipy import stats

    d = x - base
    if np.all(d == 0):
        return 1.0
    return float(stats.ttest_rel(x, base).pvalue) if np.std(d) > 0 else 0.0


def compare(ev, baseline: str, *, n_resamples: int = 10_000, seed: int = 0) -> dict[tuple[str, str], Comparison]:
    """Every other system of ``ev`` against ``baseline``: {(system, measure): Comparison}."""
    from scipy import stats
    from statsmodels.stats.multitest import multipletests

    if baseline not in ev.systems:
        raise RerankError(f"baseline {baseline!r} is not one of the runs", hint=f"one of: {', '.join(ev.systems)}")
    others = [s for s in ev.systems if s != baseline]
    out: dict[tuple[str, str], Comparison] = {}
    for measure in ev.measures:
        base = ev.values(baseline, measure)
        for system in others:
            x = ev.values(system, measure)
            d = x - base
            p_t = paired_t_p(x, base)
            if np.all(d == 0):
                p_perm = 1.0
                effect = 0.0
            else:
                res = stats.permutation_test(
                    (d,),
                    lambda v, axis: np.mean(v, axis=axis),
                    permutation_type="samples",
                    n_resamples=n_resamples,
                    alternative="two-sided",
                    vectorized=True,
                    rng=np.random.default_rng(seed),
                )
                p_perm = float(res.pvalue)
                sd = float(np.std(d, ddof=1)) if len(d) > 1 else 0.0
                effect = float(np.mean(d) / sd) if sd > 0 else float(np.sign(np.mean(d)) * np.inf)
            out[(system, measure)] = Comparison(
                system,
                measure,
                baseline,
                float(x.mean()),
                float(base.mean()),
                float(d.mean()),
                p_t,
                p_perm,
                effect_size=effect,
                n=len(d),
            )
        for test in TESTS:
            ps = [getattr(out[(s, measure)], f"p_{test}") for s in others]
            if ps:
                corrected = multipletests(ps, method="holm")[1]
                for s, p in zip(others, corrected, strict=True):
                    setattr(out[(s, measure)], f"p_{test}_holm", float(p))
    return out
