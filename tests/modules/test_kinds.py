"""LoRA (merged, restored from saved originals), bottleneck adapters (adapters' Stack, unfused), task-module
heads, and modules of different kinds stacked — all behind apply/switch/revert, on tiny random BERTs."""

import random

import pytest
import torch

from rerank.errors import RerankError
from tests.modules.test_compose import assert_bitwise, random_module, snapshot


@pytest.fixture()
def cross(tiny_cross):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(tiny_cross)).eval()


def random_lora(composed, seed, role="task", lang="", rank=4, scaling=2.0, head=False):
    """A LoRA module on every encoder linear weight (random A and B: for tests)."""
    from rerank.modules.format import Module, ModuleConfig

    g = torch.Generator().manual_seed(seed)
    pairs = {}
    for name, shape in composed.shapes.items():
        if name.startswith("encoder.") and name.endswith(".weight") and len(shape) == 2:
            out_f, in_f = shape
            pairs[name] = (torch.randn(rank, in_f, generator=g) * 0.1, torch.randn(out_f, rank, generator=g) * 0.1)
    extras = {}
    if head:
        extras = {
            n: torch.randn(p.shape, generator=g) for n, p in composed.heads.items() if n.startswith("classifier")
        }
    cfg = ModuleConfig(
        kind="lora",
        role=role,
        language=lang,
        base_model="tiny",
        base_fingerprint=composed.fingerprint,
        shapes={n: list(composed.shapes[n]) for n in pairs},
        rank=rank,
        scaling=scaling,
    )
    return Module(cfg, pairs, extras)


def random_adapters(model, composed_fp, seed):
    """A MAD-X pair made with the adapters library itself: an invertible language adapter and a task adapter,
    random weights; returns (language module, task module, the reference model with Stack(lang, task))."""
    import adapters
    from adapters.composition import Stack

    from rerank.modules.interop import from_adapters

    adapters.init(model)
    model.add_adapter("lang", config="seq_bn_inv")
    model.add_adapter("task", config="seq_bn")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lang." in n or ".task." in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    model.set_active_adapters(Stack("lang", "task"))
    model.eval()
    lang = from_adapters(model, "lang", role="language", language="ky", fingerprint=composed_fp)
    task = from_adapters(model, "task", role="task", language="", fingerprint=composed_fp)
    return lang, task, model


def logits(model, x):
    with torch.inference_mode():
        return model(input_ids=x).logits


def test_lora_is_merged_and_restored_bitwise(cross):
    from rerank.modules.compose import ComposedModel

    base = snapshot(cross)
    cm = ComposedModel(cross)
    lora = random_lora(cm, 1)
    cm.apply([lora])
    name = "encoder.layer.1.output.dense.weight"
    a, b = lora.payload[name]
    torch.testing.assert_close(cm.names[name].detach(), base[f"bert.{name}"] + 2.0 * b @ a, rtol=0, atol=1e-6)
    cm.switch([random_lora(cm, 2)])
    cm.revert()
    assert_bitwise(cross, base)


def test_rank_budget_keeps_the_first_ranks(cross):
    from rerank.modules.compose import ComposedModel

    base = snapshot(cross)
    cm = ComposedModel(cross)
    lora = random_lora(cm, 1, rank=6)
    cm.apply([lora], rank=2)
    name = "encoder.layer.0.attention.self.query.weight"
    a, b = lora.payload[name]
    want = base[f"bert.{name}"] + 2.0 * b[:, :2] @ a[:2]
    torch.testing.assert_close(cm.names[name].detach(), want, rtol=0, atol=1e-6)
    with pytest.raises(RerankError, match="positive integer"):
        cm.apply([lora], rank=0)


def test_sparse_language_plus_lora_task_with_head_stack_in_any_order(cross, tiny_cross):
    from transformers import AutoModelForSequenceClassification

    from rerank.modules.compose import ComposedModel

    base = snapshot(cross)
    cm = ComposedModel(cross)
    lang = random_module(cm, 1, lang="ky", density=0.2)
    task = random_lora(cm, 2, head=True)
    x = torch.randint(5, 1000, (3, 11))
    cm.apply([lang, task])
    one, out = snapshot(cross), logits(cross, x)
    cm.apply([task, lang])
    assert_bitwise(cross, one)
    # the same function as adding both deltas and the head to a fresh copy by hand
    ref = AutoModelForSequenceClassification.from_pretrained(str(tiny_cross)).eval()
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for name, (idx, val) in lang.payload.entries.items():
            params[f"bert.{name}"].view(-1).index_add_(0, idx.long(), val)
        for name, (a, b) in task.payload.items():
            params[f"bert.{name}"].add_(2.0 * b @ a)
        for name, t in task.extras.items():
            params[name].copy_(t)
    torch.testing.assert_close(out, logits(ref, x), rtol=0, atol=1e-5)
    cm.revert()
    assert_bitwise(cross, base)


def test_random_cycles_over_all_kinds_return_to_the_base_bitwise(cross):
    from rerank.modules.compose import ComposedModel

    base = snapshot(cross)
    cm = ComposedModel(cross)
    mods = [
        random_module(cm, 1, lang="ky"),
        random_module(cm, 2, lang="ug"),
        random_lora(cm, 3, role="language", lang="tr"),
        random_lora(cm, 4, head=True),
        random_module(cm, 5, role="task", lang="en", density=0.3),
    ]
    rng = random.Random(0)
    for _ in range(300):
        op = rng.random()
        if op < 0.9:
            picked = rng.sample(mods, rng.randint(1, 3))
            if sum(bool(m.extras) for m in picked) <= 1:
                cm.switch(picked)
        else:
            cm.revert()
    cm.revert()
    assert_bitwise(cross, base)


def test_bottleneck_adapters_stack_like_the_adapters_library(cross, tiny_cross, caplog):
    from transformers import AutoModelForSequenceClassification

    from rerank.modules.compose import ComposedModel

    ref = AutoModelForSequenceClassification.from_pretrained(str(tiny_cross)).eval()
    x = torch.randint(5, 1000, (2, 9))
    bare = logits(ref, x)
    base = snapshot(cross)
    cm = ComposedModel(cross)
    lang, task, ref = random_adapters(ref, cm.fingerprint, seed=3)
    want = logits(ref, x)
    assert not torch.allclose(want, bare, atol=1e-4)  # the adapters do something
    cm.apply([task, lang])  # given in any order: language first in the stack
    torch.testing.assert_close(logits(cross, x), want, rtol=0, atol=1e-6)
    sparse = random_module(cm, 4, lang="ug")
    cm.switch([sparse, task])  # mixed: a sparse language module under an adapter task module
    cm.revert()
    caplog.clear()
    with caplog.at_level("WARNING"):
        torch.testing.assert_close(logits(cross, x), bare, rtol=0, atol=0)
    assert not caplog.records  # adapters kept but idle, by design: the library's warning about it is not shown
    base_now = {k: v for k, v in cross.state_dict().items() if k in base}
    assert all(torch.equal(base_now[k], v) for k, v in base.items())


def test_kinds_save_and_load(cross, tmp_path):
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import load_module, save_module

    cm = ComposedModel(cross)
    lora = random_lora(cm, 1, head=True)
    save_module(lora, tmp_path / "lora")
    back = load_module(tmp_path / "lora", fingerprint=cm.fingerprint, shapes=cm.shapes)
    assert back.config.kind == "lora" and back.content_key == lora.content_key
    cm.apply([tmp_path / "lora"])
    one = snapshot(cross)
    cm.apply([lora])
    assert_bitwise(cross, one)

    from transformers import AutoModelForSequenceClassification

    ref = AutoModelForSequenceClassification.from_pretrained(str(cm.model.config._name_or_path)).eval()
    lang, _, _ = random_adapters(ref, cm.fingerprint, seed=5)
    save_module(lang, tmp_path / "lang")
    back = load_module(tmp_path / "lang", fingerprint=cm.fingerprint)
    assert back.config.adapter_config["inv_adapter"] == "nice" and back.content_key == lang.content_key


def test_bad_kinds_are_refused_and_change_nothing(cross, tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import load_module, quantize_module, save_module

    base = snapshot(cross)
    cm = ComposedModel(cross)
    t1, t2 = random_lora(cm, 1, head=True), random_lora(cm, 2, head=True)
    with pytest.raises(RerankError, match="both carry classifier"):
        cm.apply([random_module(cm, 3), t1, t2])
    assert_bitwise(cross, base)
    with pytest.raises(RerankError, match="16 or 32 bits|sparse modules"):
        quantize_module(t1, 4)
    # a LoRA pair that does not fit the layer
    save_module(t1, tmp_path / "lora")
    f = tmp_path / "lora" / "module.safetensors"
    tensors = load_file(str(f))
    key = next(k for k in tensors if k.endswith(".lora_A"))
    tensors[key] = tensors[key][:, :-1].contiguous()
    save_file(tensors, str(f))
    with pytest.raises(RerankError, match="lora_A .* lora_B|B @ A"):
        cm.apply([tmp_path / "lora"])
    # a LoRA config holding sparse entries
    save_module(random_module(cm, 4), tmp_path / "sparse")
    cfg = json.loads((tmp_path / "sparse" / "module_config.json").read_text())
    cfg.update(kind="lora", scaling=1.0)
    (tmp_path / "sparse" / "module_config.json").write_text(json.dumps(cfg))
    with pytest.raises(RerankError, match="is a lora module but holds sparse entries"):
        load_module(tmp_path / "sparse")
    assert_bitwise(cross, base)


def test_a_composed_model_loads_a_folder_itself(tiny_cross):
    from rerank.backbone import fingerprint
    from rerank.modules.compose import ComposedModel

    cm = ComposedModel(tiny_cross)
    assert cm.fingerprint == fingerprint(tiny_cross) and "classifier.weight" in cm.heads
    with pytest.raises(RerankError, match="does not exist|no such|not found"):
        ComposedModel(tiny_cross / "nope")


def test_reranker_takes_modules_and_goes_back(tiny_cross, tmp_path):
    from rerank import Reranker
    from rerank.modules.format import save_module

    plain = Reranker(tiny_cross)
    pairs = [("right to education", "Everyone has the right to education."), ("slavery", "No one shall be held.")]
    base = plain.predict(pairs)
    task = save_module(random_lora(plain.composer, 3, head=True), tmp_path / "task")
    with_task = Reranker(tiny_cross, modules=[task])
    assert not torch.allclose(torch.tensor(with_task.predict(pairs)), torch.tensor(base))
    assert torch.equal(torch.tensor(with_task.use_modules([]).predict(pairs)), torch.tensor(base))


def test_a_new_kind_is_one_class_and_one_registry_entry(cross, tmp_path, monkeypatch):
    """The drivers (format, compose) never name a kind: a kind written here — dense deltas on the encoder's
    biases, BitFit-style — registered with one line, is saved, loaded, checked, described, stacked with a
    sparse module and restored bitwise without any change to them."""
    from rerank.modules import kinds
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import Module, ModuleConfig, load_module, save_module
    from rerank.modules.kinds.base import Kind, hash_tensors

    class BiasDeltas(Kind):
        name, order = "bias", 3

        def owns(self, key):
            return key.startswith("bias.")

        def read(self, tensors, cfg, shapes, where):
            out = {k[len("bias.") :]: t.float() for k, t in tensors.items()}
            bad = [n for n, t in out.items() if shapes is not None and tuple(shapes.get(n, ())) != tuple(t.shape)]
            if bad:
                raise RerankError(f"module {where}: {bad[0]} does not fit", hint="another model's module?")
            return out

        def write(self, payload, cfg):
            return {f"bias.{n}": t.contiguous() for n, t in payload.items()}

        def count(self, payload):
            return sum(int(t.numel()) for t in payload.values())

        def digest(self, payload, h):
            hash_tensors(h, payload)

        def quantize(self, payload, bits, block):
            return {n: t.to(torch.float16 if bits == 16 else torch.float32).float() for n, t in payload.items()}

        def plan(self, modules, model):
            return [(n, d) for m in modules for n, d in m.payload.items()]

        def apply(self, plan, model, state):
            saved = state.setdefault("saved", {})
            for name, delta in plan:
                p = model.names[name].data
                saved.setdefault(name, p.clone())
                p.add_(delta)
            return False

        def restore(self, model, state, next_plan=None):
            for name, t in state.pop("saved", {}).items():
                model.names[name].data.copy_(t)

    monkeypatch.setitem(kinds.KINDS, "bias", BiasDeltas())  # the one registry line
    base = snapshot(cross)
    cm = ComposedModel(cross)
    g = torch.Generator().manual_seed(5)
    biases = {n: torch.randn(s, generator=g) for n, s in cm.shapes.items() if n.endswith(".bias") and "encoder" in n}
    cfg = ModuleConfig(kind="bias", role="task", language="", base_model="tiny", base_fingerprint=cm.fingerprint)
    save_module(Module(cfg, biases), tmp_path / "bias")
    back = load_module(tmp_path / "bias", fingerprint=cm.fingerprint, shapes=cm.shapes)
    assert back.kind.name == "bias" and len(back) == sum(t.numel() for t in biases.values())
    assert back.kind.describe(back.payload, back.config) == f"{len(back):,} numbers"
    sparse = random_module(cm, 3, role="language", lang="ky")
    cm.apply([tmp_path / "bias", sparse])
    name = next(iter(biases))
    expect = base[f"bert.{name}"] + biases[name]
    idx, val = sparse.payload.entries.get(name, (torch.zeros(0, dtype=torch.int32), torch.zeros(0)))
    expect.view(-1).index_add_(0, idx.long(), val)
    torch.testing.assert_close(cm.names[name].detach(), expect, rtol=0, atol=1e-6)
    cm.revert()
    assert_bitwise(cross, base)
