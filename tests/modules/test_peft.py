"""PEFT interop: modules exported to peft folders give, through peft's own forward, what our composed model
gives; peft LoRA and SHiRA folders imported as modules do the same the other way."""

import json

import pytest
import torch

from rerank.errors import RerankError
from tests.modules.test_compose import random_module
from tests.modules.test_kinds import logits, random_lora


@pytest.fixture()
def cross(tiny_cross):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(tiny_cross)).eval()


def fresh(tiny_cross):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(tiny_cross)).eval()


X = torch.randint(5, 1000, (3, 13), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", ["lora", "shira"])
def test_exported_module_through_peft_equals_ours(kind, cross, tiny_cross, tmp_path):
    from peft import PeftModel

    from rerank.modules.compose import ComposedModel
    from rerank.modules.interop import export_peft

    cm = ComposedModel(cross)
    if kind == "lora":
        module = random_lora(cm, 1, head=True)
    else:
        linear = [n for n, s in cm.shapes.items() if n.startswith("encoder.") and len(s) == 2]
        module = random_module(cm, 1, role="task", lang="en", density=0.05, targets=linear)
        module.extras = {n: torch.randn(p.shape) for n, p in cm.heads.items() if n.startswith("classifier")}
    export_peft(module, tmp_path / "peft")
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == kind.upper() and cfg["modules_to_save"] == ["classifier"]
    cm.apply([module])
    ours = logits(cross, X)
    theirs_model = PeftModel.from_pretrained(fresh(tiny_cross), str(tmp_path / "peft")).eval()
    theirs = logits(theirs_model, X)
    assert not torch.allclose(ours, logits(fresh(tiny_cross), X), atol=1e-4)  # the module does something
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours, logits(theirs_model.merge_and_unload(), X), rtol=0, atol=1e-5)


def test_imported_peft_lora_equals_peft(cross, tiny_cross, tmp_path):
    from peft import LoraConfig, get_peft_model

    from rerank.modules.compose import ComposedModel
    from rerank.modules.interop import backbone_shapes, import_peft

    torch.manual_seed(0)
    pcfg = LoraConfig(
        r=4,
        lora_alpha=16,
        target_modules=["query", "value", "intermediate.dense", "output.dense"],
        modules_to_save=["classifier"],
        init_lora_weights=False,
        rank_pattern={"output.dense": 2},
        use_rslora=True,
    )
    peft_model = get_peft_model(fresh(tiny_cross), pcfg).eval()
    with torch.no_grad():
        peft_model.base_model.model.classifier.modules_to_save["default"].weight.normal_()
    peft_model.save_pretrained(str(tmp_path / "peft"))
    want = logits(peft_model, X)
    cm = ComposedModel(cross)
    module = import_peft(
        tmp_path / "peft", fingerprint=cm.fingerprint, shapes=backbone_shapes(tiny_cross), base_model="tiny"
    )
    assert module.config.kind == "lora" and "classifier.weight" in module.extras
    cm.apply([module])
    torch.testing.assert_close(logits(cross, X), want, rtol=0, atol=1e-5)


def test_imported_peft_shira_equals_peft_and_round_trips(cross, tiny_cross, tmp_path):
    from peft import ShiraConfig, get_peft_model

    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import load_module, save_module
    from rerank.modules.interop import backbone_shapes, export_peft, import_peft

    peft_model = get_peft_model(
        fresh(tiny_cross),
        ShiraConfig(r=2, target_modules=["query", "key", "output.dense"], init_weights=False, random_seed=1),
    ).eval()
    peft_model.save_pretrained(str(tmp_path / "peft"))
    want = logits(peft_model, X)
    cm = ComposedModel(cross)
    shapes = backbone_shapes(tiny_cross)
    module = import_peft(tmp_path / "peft", fingerprint=cm.fingerprint, shapes=shapes, base_model="t", language="ky")
    assert module.config.kind == "shira" and 0 < module.config.density < 1
    vals = next(iter(module.payload.entries.values()))[1]
    assert torch.all(vals.abs()[:-1] >= vals.abs()[1:])  # most important (largest) first
    save_module(module, tmp_path / "ours")
    cm.apply([tmp_path / "ours"])
    torch.testing.assert_close(logits(cross, X), want, rtol=0, atol=1e-5)
    # and back out again: the same entries
    export_peft(load_module(tmp_path / "ours"), tmp_path / "again", head=True)
    again = import_peft(tmp_path / "again", fingerprint=cm.fingerprint, shapes=shapes, base_model="t")
    assert again.payload.entries.keys() == module.payload.entries.keys()
    for name, (idx, val) in module.payload.entries.items():
        assert torch.equal(again.payload.entries[name][0], idx) and torch.equal(again.payload.entries[name][1], val)


def test_what_cannot_cross_is_refused(cross, tmp_path):
    from rerank.modules.compose import ComposedModel
    from rerank.modules.interop import export_peft, import_peft

    cm = ComposedModel(cross)
    with pytest.raises(RerankError, match="SHiRA cannot adapt"):
        export_peft(random_module(cm, 1, targets=["embeddings.LayerNorm.weight"]), tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(RerankError, match="not a peft adapter folder"):
        import_peft(tmp_path, fingerprint=cm.fingerprint, shapes=cm.shapes, base_model="t")
    (tmp_path / "ia3").mkdir()
    (tmp_path / "ia3" / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    (tmp_path / "ia3" / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(RerankError, match="only safetensors"):
        import_peft(tmp_path / "ia3", fingerprint=cm.fingerprint, shapes=cm.shapes, base_model="t")
    from safetensors.torch import save_file

    save_file(
        {"base_model.model.bert.encoder.layer.0.output.dense.ia3_l": torch.ones(32)},
        str(tmp_path / "ia3" / "adapter_model.safetensors"),
    )
    with pytest.raises(RerankError, match="peft type IA3 cannot be imported"):
        import_peft(tmp_path / "ia3", fingerprint=cm.fingerprint, shapes=cm.shapes, base_model="t")


def test_cli_export_then_import_gives_the_same_module(cli, cross, tiny_cross, tmp_path, capsys):
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import load_module, save_module

    cm = ComposedModel(cross)
    src = save_module(random_lora(cm, 7, head=True), tmp_path / "en-task")

    run = cli

    code, out, err = run("modules", "export", src, "--to", "peft", "--out", tmp_path / "peft")
    assert code == 0 and "peft LORA adapter" in out, err
    code, out, err = run("modules", "import", tmp_path / "peft", "--out", tmp_path / "back", "--model", tiny_cross)
    assert code == 0 and "lora task module" in out, err
    a, b = load_module(src), load_module(tmp_path / "back")
    assert b.config.base_fingerprint == cm.fingerprint and b.config.scaling == a.config.scaling
    assert a.payload.keys() == b.payload.keys() and a.extras.keys() == b.extras.keys()
    assert all(torch.equal(a.payload[n][i], b.payload[n][i]) for n in a.payload for i in (0, 1))
    code, out, _ = run("modules", "info", tmp_path / "back")
    assert "LoRA numbers in 12 targets" in out and "extras: classifier.bias, classifier.weight" in out
    code, _, err = run("modules", "import", tmp_path / "peft", "--out", tmp_path / "x", "--role", "language")
    assert code == 2 and "needs its language" in err
    code, _, err = run("modules", "export", src, "--to", "adapters", "--out", tmp_path / "y")
    assert code == 2 and "--to peft" in err and "Traceback" not in err
