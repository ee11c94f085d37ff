"""The cross-encoder's precision: bf16 autocast changes the arithmetic, not the weights, the ranking's shape or the
composition of modules; ``auto`` follows the processor; a bad value is one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rerank.errors import RerankError

PAIRS = [
    ("Everyone has the right to education.", "Education shall be free, at least in the elementary stages."),
    ("Everyone has the right to education.", "No one shall be held in slavery or servitude."),
    ("right to work", "Everyone has the right to work, to free choice of employment."),
    ("right to work", "Everyone has the right to a nationality."),
]


def test_bf16_scores_close_to_fp32_and_not_identical(tiny_cross):
    from rerank.scoring.cross import CrossEncoder

    fp = CrossEncoder(tiny_cross, precision="fp32")
    bf = CrossEncoder(tiny_cross, precision="bf16")
    assert (fp.precision, bf.precision) == ("fp32", "bf16")
    a, b = fp.predict(PAIRS), bf.predict(PAIRS)
    assert b.dtype == np.float32 and b.shape == a.shape
    assert not np.array_equal(a, b)  # the products really ran in bf16
    assert np.allclose(a, b, atol=0.02 * max(1.0, float(np.abs(a).max())))
    assert next(bf.model.parameters()).dtype == torch.float32  # autocast leaves the weights fp32


def test_bf16_logits_are_not_rounded_to_bf16(tiny_cross, tmp_path):
    """The head reads the bf16 encoder in fp32: logits near 3 keep more than bf16's 8 bits (steps of 1/64), so
    close candidates do not tie."""
    import shutil

    from rerank.scoring.cross import CrossEncoder

    folder = shutil.copytree(tiny_cross, tmp_path / "ce")
    ce = CrossEncoder(folder, precision="bf16")
    with torch.no_grad():
        ce.model.classifier.bias.fill_(3.0)
    got = torch.from_numpy(ce.predict(PAIRS))
    assert bool((got - 3.0).abs().max() < 1.0)
    assert not torch.equal(got, got.bfloat16().float())  # some logit is off the bf16 grid
    assert len(set(got.tolist())) == len(PAIRS)


def test_auto_follows_the_processor(monkeypatch):
    from rerank.scoring import precision

    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert precision.resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert precision.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert precision.resolve_precision("bf16", torch.device("cpu")) == "bf16"  # asked for: kept
    assert precision.resolve_precision("fp32", torch.device("cpu")) == "fp32"


def test_native_bf16_reads_torchs_probes(monkeypatch):
    from rerank.scoring import precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert precision.native_bf16(torch.device("cpu")) is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert precision.native_bf16(torch.device("cpu")) is True


def test_composition_is_exact_under_bf16(tiny_cross, tiny_bert, tmp_path):
    """A module stacked, scored in bf16 and reverted leaves the base weights bit for bit."""
    from transformers import BertModel

    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import save_module
    from rerank.scoring.reranker import Reranker
    from tests.modules.test_compose import random_module

    bare = ComposedModel(BertModel.from_pretrained(str(tiny_bert), add_pooling_layer=False).eval())
    module = save_module(random_module(bare, 1, role="language", lang="ky", density=0.3), tmp_path / "ky")
    rr = Reranker(tiny_cross, kind="cross", precision="bf16")
    before = {n: p.detach().clone() for n, p in rr.scorer.model.named_parameters()}
    base = rr.predict(PAIRS)
    rr.use_modules([module])
    stacked = rr.predict(PAIRS)
    assert not np.array_equal(base, stacked)
    rr.use_modules([])
    assert np.array_equal(rr.predict(PAIRS), base)
    for n, p in rr.scorer.model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_unknown_precision_is_refused():
    from rerank.pipeline import SearchSettings
    from rerank.scoring.reranker import Reranker

    with pytest.raises(RerankError, match="unknown precision 'int4'"):
        SearchSettings(precision="int4")
    with pytest.raises(RerankError, match="unknown precision 'fp16'"):
        Reranker(None, precision="fp16")


def test_cli_precision_bad_value_is_one_line(cli, tiny_dense_index):
    code, out, err = cli("search", "--index", tiny_dense_index, "--precision", "int4", "--reranker", "none", "rights")
    assert code == 2
    assert err.strip().count("\n") == 0 and "unknown precision 'int4'" in err


def test_grid_cache_key_follows_the_resolved_precision(tmp_path, tiny_dense_index, monkeypatch):
    from rerank.eval.grid import cache_key
    from rerank.scoring import precision

    topics = tmp_path / "t.tsv"
    topics.write_text("1\trights\n", encoding="utf-8")
    system = {"name": "x", "reranker": "cross"}
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    auto_bf16 = cache_key(system, "en", "en", topics, tiny_dense_index, 10)
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    auto_fp32 = cache_key(system, "en", "en", topics, tiny_dense_index, 10)
    assert auto_bf16 != auto_fp32  # a run cached under bf16 is not reused where auto means fp32
    first_only = {"name": "y", "reranker": "none"}
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    k1 = cache_key(first_only, "en", "en", topics, tiny_dense_index, 10)
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert k1 == cache_key(first_only, "en", "en", topics, tiny_dense_index, 10)  # no reranker: no precision
