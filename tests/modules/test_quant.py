"""Low-bit storage of module values, and `rerank modules info|quantize`."""

import pytest
import torch

from rerank.errors import RerankError
from tests.modules.test_compose import random_module


@pytest.fixture()
def composed(tiny_bert):
    from transformers import BertModel

    from rerank.modules.compose import ComposedModel

    return ComposedModel(BertModel.from_pretrained(str(tiny_bert), add_pooling_layer=False).eval())


@pytest.mark.parametrize("bits, max_rel_err", [(1, 0.7), (2, 0.45), (4, 0.15), (8, 0.01), (16, 1e-3)])
def test_quantize_save_load_gives_back_what_was_applied(composed, tmp_path, bits, max_rel_err):
    from rerank.modules.format import load_module, quantize_module, save_module

    m = random_module(composed, 1)
    q = quantize_module(m, bits)
    path = save_module(q, tmp_path / f"m{bits}")
    back = load_module(path, fingerprint=composed.fingerprint, shapes=composed.shapes)
    assert back.config.bits == bits
    for name, (idx, val) in m.payload.entries.items():
        got = back.payload.entries[name][1].float()
        assert torch.equal(back.payload.entries[name][0], idx)
        torch.testing.assert_close(got, q.payload.entries[name][1].float(), rtol=0, atol=0)  # disk == memory
        rel = (got - val).norm() / val.norm()
        assert rel < max_rel_err, (name, float(rel))
    # the stored size shrinks with the bits (indices stay int32)
    if bits < 16:
        full = save_module(m, tmp_path / "full")
        from rerank.modules.format import module_size

        assert module_size(path) < module_size(full)


def test_one_bit_is_sign_times_block_mean():
    from rerank.modules.quant import dequantize, quantize

    v = torch.tensor([0.5, -1.5, 2.0, -0.0, 3.0, -3.0])
    q = quantize(v, 1, block=4)
    d = dequantize(q["codes"], q["scales"], 6, 1, block=4)
    assert torch.allclose(d[:4], torch.tensor([1.0, -1.0, 1.0, 1.0]), atol=1e-3)  # mean |v| of block 1 = 1.0
    assert torch.allclose(d[4:], torch.tensor([3.0, -3.0]), atol=1e-2)  # last, short block: its own mean


def test_unsupported_bits_and_corrupt_codes(composed, tmp_path):
    from rerank.modules.format import load_module, quantize_module, save_module

    m = random_module(composed, 1)
    with pytest.raises(RerankError, match="unsupported bit width 3"):
        quantize_module(m, 3)
    q4 = quantize_module(m, 4)
    with pytest.raises(RerankError, match="cannot restore precision"):
        quantize_module(q4, 8)
    path = save_module(q4, tmp_path / "q4")
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "module.safetensors"))
    name = next(k for k in tensors if k.endswith(".codes"))
    tensors[name] = tensors[name][:-1]
    save_file(tensors, str(path / "module.safetensors"))
    with pytest.raises(RerankError, match="code bytes"):
        load_module(path)


def test_cli_info_and_quantize(cli, composed, tmp_path, capsys):
    from rerank.modules.format import save_module

    path = save_module(random_module(composed, 1), tmp_path / "ky-lang")

    run = cli

    code, stdout, _ = run("modules", "info", path)
    assert code == 0 and "shira" in stdout and "language" in stdout and composed.fingerprint in stdout
    assert "density 5.0000%" in stdout and "float32" in stdout and "size on disk" in stdout
    code, stdout, _ = run("modules", "quantize", path, "--bits", "4", "--out", tmp_path / "q4")
    assert code == 0 and "4-bit values" in stdout
    code, stdout, _ = run("modules", "info", tmp_path / "q4")
    assert "4 bits, blocks of 64" in stdout
    code, _, err = run("modules", "quantize", path, "--bits", "3", "--out", tmp_path / "q3")
    assert code == 2 and err.strip() == "rerank: error: unsupported bit width 3 — use one of: 1, 2, 4, 8, 16, 32"
    code, _, err = run("modules", "quantize", path, "--bits", "4", "--out", tmp_path / "q4")
    assert code == 2 and "output already exists" in err
    code, _, err = run("modules", "info", tmp_path)
    assert code == 2 and "not a module folder" in err and "Traceback" not in err
