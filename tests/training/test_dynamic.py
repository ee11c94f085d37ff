"""Dynamic budgets (DyLoRA): one run trains every rank (LoRA) or density (shira, sft) of a range as nested
prefixes; the budget drawn per step, the prefix each forward pass sees, what the optimizer leaves still, the
module's trained order and the budgets it offers at load time; bad ranges are one line."""

import math
from pathlib import Path

import pytest
import torch

from rerank.errors import RerankError

KY = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mono" / "ky.ud-ktmu.txt"


def small(kind, dynamic, **kw):
    from rerank.training.lang import LangConfig

    return LangConfig(
        kind=kind, max_steps=6, head_steps=3, eval_every=3, batch_size=4, seq_len=32, dynamic=dynamic, **kw
    )


def test_each_step_draws_its_budget_from_the_range_and_the_same_again():
    from rerank.training.dynamic import Dynamic

    ranks = Dynamic("rank", 1, 8, seed=3)
    drawn = [ranks.sample(s) for s in range(4000)]
    assert drawn == [ranks.sample(s) for s in range(4000)]  # a function of the step: resumes, processes agree
    assert set(drawn) == {float(r) for r in range(1, 9)}
    assert all(abs(drawn.count(r) / 4000 - 1 / 8) < 0.03 for r in set(drawn))  # uniform over the ranks
    assert drawn != [Dynamic("rank", 1, 8, seed=4).sample(s) for s in range(4000)]
    dens = Dynamic("density", 0.0025, 0.02)
    d = [dens.sample(s) for s in range(4000)]
    assert min(d) >= 0.0025 and max(d) <= 0.02
    below = sum(x < math.sqrt(0.0025 * 0.02) for x in d) / len(d)
    assert abs(below - 0.5) < 0.04  # log-uniform: half the steps below the geometric mean
    assert ranks.grid() == [1, 2, 4, 8] and Dynamic("rank", 2, 6).grid() == [2, 4, 6]
    assert [dens.label(b) for b in dens.grid()] == ["0.25%", "0.5%", "1%", "2%"]


@pytest.mark.parametrize(
    "kind, rank, density, problem",
    [
        ("lora", "8:1", None, "the range is empty"),
        ("lora", "0:4", None, "ranks are whole numbers"),
        ("lora", "1-8", None, "is not a range LO:HI"),
        ("lora", "a:b", None, "ranks are whole numbers"),
        ("shira", None, "2%:0.5%", "the range is empty"),
        ("shira", None, "0:1%", "is not a fraction"),
        ("shira", "1:8", None, "--dynamic-rank does not apply to --kind shira"),
        ("lora", None, "0.5%:2%", "--dynamic-density does not apply to --kind lora"),
        ("adapter", "1:8", None, "does not apply to --kind adapter"),
        ("lora", "1:8", "0.5%:2%", "not both"),
    ],
)
def test_a_range_the_kind_cannot_train_is_refused(kind, rank, density, problem):
    from rerank.training.dynamic import parse

    with pytest.raises(RerankError) as e:
        parse(kind, rank, density)
    assert problem in str(e.value)


def test_the_cli_refuses_a_bad_range_in_one_line(cli, tmp_path):
    code, _, err = cli("train", "lang", "--lang", "ky", "--text", KY, "--out", tmp_path / "m", "--kind", "adapter",
                       "--dynamic-rank", "1:8")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "adapter modules have no budget" in err
    assert not (tmp_path / "m").exists()


def _lora_model(tiny_bert, rank=4):
    from peft import LoraConfig, get_peft_model

    from rerank.backbone.runtime import load_weights

    enc = load_weights(tiny_bert, head=False, device=torch.device("cpu"))
    model = get_peft_model(enc, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["query", "value"]))
    layers = [m for _, m in model.named_modules() if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})]
    torch.manual_seed(0)
    for m in layers:  # B starts at zero: give both factors values, so every rank matters
        torch.nn.init.normal_(m.lora_A["default"].weight, std=0.3)
        torch.nn.init.normal_(m.lora_B["default"].weight, std=0.3)
    return model, layers


def test_the_rank_budget_is_the_prefix_load_time_keeps_and_holds_the_rest_still(tiny_bert):
    from rerank.modules.kinds.lora import _RankBudget

    model, layers = _lora_model(tiny_bert)
    ids = torch.tensor([[101, 2000, 3000, 4000, 102]])
    budget = _RankBudget(layers, 4)
    budget.set(2)
    got = model(input_ids=ids).last_hidden_state
    saved = {}
    with torch.no_grad():  # the same model with ranks 3 and 4 removed, as --module-rank 2 keeps it
        for i, m in enumerate(layers):
            a, b = m.lora_A["default"].weight, m.lora_B["default"].weight
            saved[i] = (a.clone(), b.clone())
            a[2:] = 0
            b[:, 2:] = 0
    budget.remove()
    assert torch.allclose(got, model(input_ids=ids).last_hidden_state, atol=1e-6)
    with torch.no_grad():
        for i, m in enumerate(layers):
            m.lora_A["default"].weight.copy_(saved[i][0])
            m.lora_B["default"].weight.copy_(saved[i][1])
    budget = _RankBudget(layers, 4)
    params = [p for m in layers for p in (m.lora_A["default"].weight, m.lora_B["default"].weight)]
    opt = torch.optim.AdamW(params, lr=0.1)
    for b in (4, 2):  # a full step gives every rank momentum; then a rank-2 step
        budget.set(b)
        before = [p.detach().clone() for p in params]
        model(input_ids=ids).last_hidden_state.pow(2).mean().backward()
        undo = budget.hold()
        opt.step()
        undo()
        opt.zero_grad()
    for p, q in zip(params[0::2], before[0::2], strict=True):  # A: rows 3, 4 still, rows 1, 2 moved
        assert torch.equal(p[2:], q[2:]) and not torch.equal(p[:2], q[:2])
    for p, q in zip(params[1::2], before[1::2], strict=True):  # B: columns likewise
        assert torch.equal(p[:, 2:], q[:, 2:]) and not torch.equal(p[:, :2], q[:, :2])


def test_the_density_budget_trains_each_deltas_prefix_alone():
    from rerank.modules import deltas as sparse
    from rerank.modules.kinds.sparse import _DensityBudget, prefix

    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 16)
    idx = torch.randperm(256)[:40]
    targets = {"w": (lin, "weight")}
    ds = sparse.attach(targets, {"w": idx})
    with torch.no_grad():
        ds["w"].delta.normal_()
    budget = _DensityBudget(ds, 0.02)
    budget.set(0.005)
    keep = prefix(40, 0.005, 0.02)
    assert keep == 10 and ds["w"].keep == 10
    x = torch.randn(3, 16)
    w = lin.weight.detach().clone()
    base = lin.parametrizations.weight.original.detach().clone()
    expect = base.reshape(-1).clone()
    expect[idx[:10]] += ds["w"].delta.detach()[:10]
    assert torch.allclose(w, expect.view(16, 16))
    opt = torch.optim.AdamW([ds["w"].delta], lr=0.1)
    for b in (0.02, 0.005):
        budget.set(b)
        before = ds["w"].delta.detach().clone()
        lin(x).pow(2).mean().backward()
        undo = budget.hold()
        opt.step()
        undo()
        opt.zero_grad()
    after = ds["w"].delta.detach()
    assert torch.equal(after[10:], before[10:]) and not torch.equal(after[:10], before[:10])
    budget.set(0.02)
    assert ds["w"].keep is None
    sparse.detach(targets, ds)


def test_a_dynamic_lora_language_module_serves_every_rank_of_its_range(tiny_bert, tmp_path, cli):
    from rerank.backbone import fingerprint
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import load_module, truncate_rank
    from rerank.training.dynamic import Dynamic
    from rerank.training.lang import train_language_module

    dyn = Dynamic("rank", 1, 4)
    train_language_module("ky", [KY], tmp_path / "ky", small("lora", dyn, rank=4), model=tiny_bert, progress=False)
    m = load_module(tmp_path / "ky", fingerprint=fingerprint(tiny_bert))
    c = m.config
    assert c.dynamic == [1.0, 4.0] and c.rank == 4
    d = c.recipe["dynamic"]
    assert d["budget"] == "rank" and d["grid"] == ["1", "2", "4"] and set(d["dev_at_best"]) == {"1", "2", "4"}
    losses = d["dev_at_best"]
    assert all(0 < v < 20 for v in losses.values())
    # the loop selected by the mean over the grid: the kept state's figure is that mean
    assert abs(c.recipe["dev_loss_best"] - sum(losses.values()) / 3) < 1e-3
    cut = truncate_rank(m, 2)
    assert cut.config.rank == 2 and all(a.shape[0] == 2 for a, _ in cut.payload.values())
    cm = ComposedModel(tiny_bert)
    before = {k: v.clone() for k, v in cm.model.state_dict().items()}
    cm.apply([cut])
    assert any(not torch.equal(cm.model.state_dict()[k], v) for k, v in before.items())
    cm.revert()
    assert all(torch.equal(cm.model.state_dict()[k], v) for k, v in before.items())
    code, text, _ = cli("modules", "info", tmp_path / "ky")
    assert code == 0 and "every rank 1..4, trained in one run" in text


@pytest.mark.parametrize("kind", ["shira", "sft"])
def test_a_dynamic_sparse_module_keeps_its_entries_in_trained_order(kind, tiny_bert, tmp_path):
    from rerank.backbone import fingerprint
    from rerank.modules.format import load_module, truncate_module
    from rerank.modules.kinds.sparse import prefix
    from rerank.training.dynamic import Dynamic
    from rerank.training.lang import train_language_module

    dyn = Dynamic("density", 0.005, 0.02)
    cfg = small(kind, dyn, density=0.02)
    train_language_module("ky", [KY], tmp_path / "ky", cfg, model=tiny_bert, progress=False)
    m = load_module(tmp_path / "ky", fingerprint=fingerprint(tiny_bert))
    assert m.config.dynamic == [0.005, 0.02] and m.config.density == 0.02
    assert m.config.recipe["dynamic"]["grid"] == ["0.5%", "1%", "2%"]
    name = "encoder.layer.0.attention.self.query.weight"
    idx, val = m.payload.entries[name]
    if kind == "shira":
        assert idx.numel() == math.ceil(32 * 32 * 0.02)  # every chosen entry is kept, zero or not
    cut = truncate_module(m, 0.005)
    for n, (i, v) in cut.payload.entries.items():
        full_i, full_v = m.payload.entries[n]
        k = prefix(full_i.numel(), 0.005, 0.02)
        assert torch.equal(i, full_i[:k]) and torch.equal(v, full_v[:k])
    # trained as prefixes: the stored order is the mask's, not re-sorted by the values' size afterwards
    orders = [torch.all(v.abs()[:-1] >= v.abs()[1:]) for _, v in m.payload.entries.values() if v.numel() > 2]
    assert not all(orders)


def test_a_fixed_module_still_truncates_by_size(tiny_bert, tmp_path):
    from rerank.modules.format import load_module
    from rerank.training.lang import train_language_module

    train_language_module("ky", [KY], tmp_path / "ky", small("shira", None), model=tiny_bert, progress=False)
    m = load_module(tmp_path / "ky")
    assert m.config.dynamic is None and "dynamic" not in m.config.recipe


@pytest.mark.parametrize("kind, budgets", [("lora", ["1", "2"]), ("shira", ["0.5%", "1%"])])
def test_the_dev_loss_of_a_module_at_its_budgets_reproduces_what_training_recorded(kind, budgets, tiny_bert, tmp_path):
    """rerank eval mlm refits the MLM head as training did: the module as stored scores the dev loss its training
    kept, the base the loss before training; smaller budgets are scored the same way."""
    from rerank.training.lang import module_dev_losses, train_language_module

    cfg = small(kind, None, rank=2, density=0.01)
    train_language_module("ky", [KY], tmp_path / "ky", cfg, model=tiny_bert, progress=False)
    from rerank.modules.format import load_module

    r = load_module(tmp_path / "ky").config.recipe
    got = module_dev_losses(tmp_path / "ky", [KY], [None, *budgets], model=tiny_bert, progress=False)
    assert abs(got["stored"] - r["dev_loss_best"]) < 2e-4 and abs(got["base"] - r["dev_loss_before"]) < 2e-4
    assert set(got) == {"base", "stored", *budgets}
    with pytest.raises(RerankError, match="not a rank" if kind == "lora" else "not a fraction"):
        module_dev_losses(tmp_path / "ky", [KY], ["x"], model=tiny_bert, progress=False)


def test_eval_mlm_prints_the_losses_as_json(cli, tiny_bert, tmp_path):
    import json

    from rerank.training.lang import train_language_module

    train_language_module("ky", [KY], tmp_path / "ky", small("adapter", None), model=tiny_bert, progress=False)
    code, text, _ = cli("eval", "mlm", tmp_path / "ky", "--text", KY, "--model", tiny_bert, "-q")
    assert code == 0 and set(json.loads(text)["dev_mlm_loss"]) == {"base", "stored"}
    code, _, err = cli("eval", "mlm", tmp_path / "ky", "--text", KY, "--model", tiny_bert, "--budgets", "2", "-q")
    assert code == 2 and "no budget to vary" in err and len(err.strip().splitlines()) == 1
