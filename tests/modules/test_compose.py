"""Module format and scatter composition on a tiny random BERT: exact restore, order independence,
all-or-nothing loading, and every bad module refused in one line."""

import json
import random

import pytest
import torch

from rerank.errors import RerankError


@pytest.fixture()
def model(tiny_bert):
    from transformers import BertModel

    return BertModel.from_pretrained(str(tiny_bert), add_pooling_layer=False).eval()


def random_module(composed, seed, role="language", lang="ky", density=0.05, targets=None):
    """A sparse module touching `density` of every encoder linear weight (random values: for tests)."""
    from rerank.modules.format import Module, ModuleConfig
    from rerank.modules.kinds.sparse import SparseEntries

    g = torch.Generator().manual_seed(seed)
    entries, shapes = {}, {}
    for name, shape in composed.shapes.items():
        if targets is None and not (name.startswith("encoder.") and name.endswith(".weight") and len(shape) == 2):
            continue
        if targets is not None and name not in targets:
            continue
        numel = composed.names[name].numel()
        k = max(1, int(numel * density))
        idx = torch.randperm(numel, generator=g)[:k].to(torch.int32)
        entries[name] = (idx, torch.randn(k, generator=g) * 0.05)
        shapes[name] = list(shape)
    cfg = ModuleConfig(
        kind="shira",
        role=role,
        language=lang,
        base_model="tiny",
        base_fingerprint=composed.fingerprint,
        shapes=shapes,
        density=density,
    )
    return Module(cfg, SparseEntries(entries))


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bitwise(model, snap):
    now = model.state_dict()
    assert set(now) == set(snap)
    for k, v in snap.items():
        assert torch.equal(now[k], v), k


def test_fingerprint_matches_the_folder(model, tiny_bert):
    from rerank.backbone import fingerprint
    from rerank.modules.compose import ComposedModel

    assert ComposedModel(model).fingerprint == fingerprint(tiny_bert)


def test_apply_writes_base_plus_delta_and_revert_restores_bitwise(model):
    from rerank.modules.compose import ComposedModel

    base = snapshot(model)
    cm = ComposedModel(model)
    m = random_module(cm, seed=1)
    cm.apply([m])
    name, (idx, val) = next(iter(m.payload.entries.items()))
    flat_now = dict(model.named_parameters())[name].detach().reshape(-1)
    want = base[name].reshape(-1).clone()
    want[idx.long()] += val
    assert torch.equal(flat_now, want)
    untouched = torch.ones(flat_now.numel(), dtype=torch.bool)
    untouched[idx.long()] = False
    assert torch.equal(flat_now[untouched], base[name].reshape(-1)[untouched])
    cm.revert()
    assert_bitwise(model, base)


def test_fused_forward_equals_a_model_with_the_deltas_added(model, tiny_bert):
    from transformers import BertModel

    from rerank.modules.compose import ComposedModel

    cm = ComposedModel(model)
    lang, task = random_module(cm, 1), random_module(cm, 2, role="task", lang="en")
    cm.apply([lang, task])
    ref = BertModel.from_pretrained(str(tiny_bert), add_pooling_layer=False).eval()
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for m in (lang, task):
            for name, (idx, val) in m.payload.entries.items():
                params[name].view(-1).index_add_(0, idx.long(), val)
    x = torch.randint(5, 1000, (3, 17))
    with torch.inference_mode():
        torch.testing.assert_close(
            model(input_ids=x).last_hidden_state, ref(input_ids=x).last_hidden_state, rtol=0, atol=1e-6
        )


def test_stacking_is_order_independent_bitwise(model):
    from rerank.modules.compose import ComposedModel

    cm = ComposedModel(model)
    # overlapping modules: both touch the same parameter densely enough to share many entries
    target = ["encoder.layer.0.attention.self.query.weight"]
    a, b, c = (random_module(cm, s, density=0.5, targets=target) for s in (1, 2, 3))
    cm.apply([a, b, c])
    one = snapshot(model)
    cm.apply([c, a, b])
    assert_bitwise(model, one)


def test_ten_thousand_random_cycles_return_to_the_base_bitwise(model):
    from rerank.modules.compose import ComposedModel

    base = snapshot(model)
    cm = ComposedModel(model)
    mods = [
        random_module(cm, s, role=r, lang=lang_)
        for s, r, lang_ in ((1, "language", "ky"), (2, "language", "ug"), (3, "language", "tr"), (4, "task", "en"))
    ]
    rng = random.Random(0)
    for _ in range(10_000):
        op = rng.random()
        if op < 0.45:
            cm.apply(rng.sample(mods, rng.randint(1, 2)))
        elif op < 0.9:
            cm.switch(rng.sample(mods, rng.randint(1, 2)))
        else:
            cm.revert()
    cm.revert()
    assert_bitwise(model, base)


def test_save_load_roundtrip_and_bad_modules(model, tmp_path):
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import load_module, save_module

    cm = ComposedModel(model)
    m = random_module(cm, 5)
    path = save_module(m, tmp_path / "ky-lang")
    back = load_module(path, fingerprint=cm.fingerprint, shapes=cm.shapes)
    assert back.config == m.config and set(back.payload.entries) == set(m.payload.entries)
    for name in m.payload.entries:
        assert torch.equal(back.payload.entries[name][0], m.payload.entries[name][0])
        assert torch.equal(back.payload.entries[name][1], m.payload.entries[name][1])
    with pytest.raises(RerankError, match="exists"):
        save_module(m, path)
    with pytest.raises(RerankError, match="was trained on backbone tiny .* not on the loaded one"):
        load_module(path, fingerprint="sha256:" + "0" * 64)
    # unknown format version
    cfg = json.loads((path / "module_config.json").read_text())
    bad = tmp_path / "v9"
    save_module(m, bad)
    (bad / "module_config.json").write_text(json.dumps({**cfg, "format_version": 9}))
    with pytest.raises(RerankError, match="format version 9"):
        load_module(bad)
    # truncated safetensors
    trunc = tmp_path / "trunc"
    save_module(m, trunc)
    data = (trunc / "module.safetensors").read_bytes()
    (trunc / "module.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(RerankError, match="truncated or corrupt"):
        load_module(trunc)


def test_out_of_range_and_duplicate_indices_change_nothing(model):
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import Module
    from rerank.modules.kinds.sparse import SparseEntries

    base = snapshot(model)
    cm = ComposedModel(model)
    good = random_module(cm, 1)
    name, (idx, val) = next(iter(good.payload.entries.items()))
    numel = cm.names[name].numel()
    far = Module(good.config, SparseEntries({name: (torch.tensor([0, numel], dtype=torch.int32), torch.ones(2))}))
    with pytest.raises(RerankError, match="out of range"):
        cm.apply([good, far])  # the good one is not applied either: all or nothing
    assert_bitwise(model, base)
    other = Module(type(good.config)(**{**good.config.__dict__, "base_fingerprint": "sha256:x"}), good.payload)
    with pytest.raises(RerankError, match="made for backbone"):
        cm.apply([other])
    assert_bitwise(model, base)


def test_duplicate_indices_in_a_file_are_refused(model, tmp_path):
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import Module, load_module, save_module
    from rerank.modules.kinds.sparse import SparseEntries

    cm = ComposedModel(model)
    good = random_module(cm, 1)
    name = next(iter(good.payload.entries))
    dup = Module(good.config, SparseEntries({name: (torch.tensor([3, 3], dtype=torch.int32), torch.ones(2))}))
    save_module(dup, tmp_path / "dup")
    with pytest.raises(RerankError, match="duplicate indices"):
        load_module(tmp_path / "dup", shapes=cm.shapes)


def test_two_modules_of_the_same_role_and_language_warn(model, capsys):
    from rerank.modules.compose import ComposedModel

    cm = ComposedModel(model)
    cm.apply([random_module(cm, 1), random_module(cm, 2)])
    assert "two language modules for language 'ky' are stacked" in capsys.readouterr().err


def test_a_smaller_budget_at_load_keeps_the_most_important_entries(model):
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import parse_density

    base = snapshot(model)
    cm = ComposedModel(model)
    m = random_module(cm, 1, density=0.05)
    cm.apply([m], density=parse_density("1%"))
    for name, (idx, val) in m.payload.entries.items():
        keep = -(-cm.names[name].numel() // 100)  # ceil(1%)
        want = base[name].reshape(-1).clone()
        want[idx[:keep].long()] += val[:keep]
        assert torch.equal(dict(model.named_parameters())[name].detach().reshape(-1), want)
    cm.revert()
    assert_bitwise(model, base)
    for bad in ("0", "150%", "x", "-1"):
        with pytest.raises(RerankError, match="not a fraction"):
            parse_density(bad)
    assert parse_density("0.5%") == 0.005 and parse_density(0.02) == 0.02


def test_the_triton_kernel_gives_bitwise_the_torch_result(tmp_path):
    """The fused kernel under TRITON_INTERPRET=1 (CPU), in its own process (the flag must be set before
    triton is imported), against the torch path on overlapping modules."""
    import subprocess
    import sys

    script = """
import torch
from rerank.modules.kernels import scatter_apply, use_triton
g = torch.Generator().manual_seed(0)
flat = torch.randn(50_000, generator=g)
union = torch.unique(torch.randint(0, 50_000, (20_000,), generator=g))
delta = torch.randn(union.numel(), generator=g)
a, b = flat.clone(), flat.clone()
import os
os.environ["RERANK_TRITON"] = "1"; assert use_triton(a)
saved_a = scatter_apply(a, union, delta)
os.environ["RERANK_TRITON"] = "0"; assert not use_triton(b)
saved_b = scatter_apply(b, union, delta)
assert torch.equal(a, b) and torch.equal(saved_a, saved_b) and torch.equal(saved_a, flat[union])
assert not torch.equal(a, flat)
print("ok")
"""
    env = {**__import__("os").environ, "TRITON_INTERPRET": "1"}
    cp = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert cp.returncode == 0 and cp.stdout.strip() == "ok", cp.stderr[-2000:]


def test_switching_back_to_a_known_set_writes_the_same_weights(model, tiny_bert):
    from transformers import BertModel

    from rerank.modules.compose import ComposedModel

    cm = ComposedModel(model)
    cm.max_plans = 1  # evictions too
    ky, ug, task = random_module(cm, 1), random_module(cm, 2, lang="ug"), random_module(cm, 3, role="task", lang="")
    for _ in range(3):
        cm.switch([ky, task])
        cm.switch([ug, task])
    cm.switch([task, ky])
    again = snapshot(model)
    fresh = ComposedModel(BertModel.from_pretrained(str(tiny_bert), add_pooling_layer=False))
    fresh.apply([ky, task])
    assert_bitwise(fresh.model, again)
