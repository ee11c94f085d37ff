"""MoSA: an adapter trained as K sub-adapters (groups of bottleneck units, one active per layer and step, the
others held still) and merged into one standard adapter; bad settings are one line."""

from pathlib import Path

import pytest
import torch

from rerank.errors import RerankError

KY = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mono" / "ky.ud-ktmu.txt"


def small(**kw):
    from rerank.training.lang import LangConfig

    return LangConfig(kind="adapter", max_steps=6, head_steps=3, eval_every=3, batch_size=4, seq_len=32, **kw)


def _adapter_layers(tiny_bert, reduction=4):
    from adapters import SeqBnConfig

    from rerank.backbone.runtime import load_weights
    from rerank.modules.kinds.adapter import init_adapters

    enc = load_weights(tiny_bert, head=False, device=torch.device("cpu"))
    init_adapters(enc)
    enc.add_adapter("task", config=SeqBnConfig(reduction_factor=reduction))
    enc.train_adapter("task")
    torch.manual_seed(0)
    layers = [m for n, m in enc.named_modules() if n.endswith(".adapters.task")]
    for m in layers:  # the up-projection starts near zero: give it values
        torch.nn.init.normal_(m.adapter_up.weight, std=0.3)
    return enc, layers


def test_each_step_activates_one_group_of_units_per_layer_and_holds_the_others(tiny_bert):
    from rerank.modules.kinds.adapter import _UnitSplit
    from rerank.training.mosa import Mosa

    enc, layers = _adapter_layers(tiny_bert)  # bottleneck 32 / 4 = 8 units
    split = _UnitSplit(layers, 4)
    assert [g.tolist() for g in split.groups] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    draws = [[Mosa(4).draw(s, i) for i in range(len(layers))] for s in range(400)]
    assert {k for d in draws for k in d} == {0, 1, 2, 3} and any(len(set(d)) > 1 for d in draws)
    x = torch.randn(3, 32)
    full = layers[0].adapter_down(x)
    split.activate([Mosa(4).draw(7, i) for i in range(split.layers)])
    k = split.active[0]
    got = layers[0].adapter_down(x)
    on = split.groups[k]
    assert torch.allclose(got[:, on], 4 * full[:, on]) and bool((got.index_fill(1, on, 0) == 0).all())
    ids = torch.tensor([[101, 2000, 3000, 4000, 102]])
    params = [p for p in enc.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.1)
    for step in (0, 1):
        split.activate([Mosa(4).draw(step, i) for i in range(split.layers)])
        before = [(m.adapter_down[0].weight.detach().clone(), m.adapter_up.weight.detach().clone()) for m in layers]
        enc(input_ids=ids).last_hidden_state.pow(2).mean().backward()
        undo = split.hold()
        opt.step()
        undo()
        opt.zero_grad()
    for m, k, (down, up) in zip(layers, split.active, before, strict=True):
        off = torch.ones(8, dtype=torch.bool)
        off[split.groups[k]] = False
        assert torch.equal(m.adapter_down[0].weight[off], down[off])
        assert torch.equal(m.adapter_up.weight[:, off], up[:, off])
        assert not torch.equal(m.adapter_down[0].weight[~off], down[~off])
    split.remove()  # merged: every unit, unscaled
    lin = layers[0].adapter_down[0]
    assert torch.allclose(layers[0].adapter_down(x), torch.relu(lin(x)))


def test_a_mosa_language_module_is_a_standard_adapter(tiny_bert, tmp_path):
    from rerank.backbone import fingerprint
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import load_module
    from rerank.training.lang import train_language_module

    train_language_module("ky", [KY], tmp_path / "plain", small(reduction=4), model=tiny_bert, progress=False)
    train_language_module("ky", [KY], tmp_path / "mosa", small(reduction=4, mosa=4), model=tiny_bert, progress=False)
    plain = load_module(tmp_path / "plain", fingerprint=fingerprint(tiny_bert))
    mosa = load_module(tmp_path / "mosa", fingerprint=fingerprint(tiny_bert))
    assert mosa.config.kind == "adapter" and mosa.config.adapter_config == plain.config.adapter_config
    assert {n: t.shape for n, t in mosa.payload.items()} == {n: t.shape for n, t in plain.payload.items()}
    assert mosa.config.recipe["mosa"]["parts"] == 4 and "mosa" not in plain.config.recipe
    assert any(not torch.equal(mosa.payload[n], plain.payload[n]) for n in plain.payload)
    cm = ComposedModel(tiny_bert)
    ids = torch.tensor([[101, 2000, 3000, 102]])
    base = cm.model(input_ids=ids).last_hidden_state
    cm.apply([tmp_path / "mosa"])
    assert not torch.allclose(cm.model(input_ids=ids).last_hidden_state, base)
    cm.revert()
    assert torch.allclose(cm.model(input_ids=ids).last_hidden_state, base)


@pytest.mark.parametrize(
    "kind, parts, problem",
    [("shira", 4, "--mosa does not apply to --kind shira"), ("adapter", 1, "at least 2"), ("lora", 2, "--kind lora")],
)
def test_mosa_settings_that_cannot_train_are_refused(kind, parts, problem):
    from rerank.training.mosa import check

    with pytest.raises(RerankError) as e:
        check(kind, parts)
    assert problem in str(e.value)


def test_more_parts_than_units_is_one_line(cli, tmp_path, tiny_bert):
    code, _, err = cli("train", "lang", "--lang", "ky", "--text", KY, "--out", tmp_path / "m", "--kind", "adapter",
                       "--mosa", "64", "--reduction", "4", "--model", tiny_bert, "--max-steps", "2", "-q")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "bottleneck has 8 units" in err, err
    code, _, err = cli("train", "lang", "--lang", "ky", "--text", KY, "--out", tmp_path / "m", "--kind", "shira",
                       "--mosa", "4")  # fmt: skip
    assert code == 2 and "--mosa does not apply to --kind shira" in err
    assert not (tmp_path / "m").exists()
