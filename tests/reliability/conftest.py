"""What the reliability tests share: the one-line error check, a saved random module for the tiny backbone,
and a search through the tiny cross-encoder with a module stacked."""

from __future__ import annotations

from pathlib import Path

import pytest


def one_line(code: int, err: str, *needles: str) -> str:
    """The CLI's answer to bad input: exit 2 and one `rerank: error:` line holding every needle."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("rerank: error: "), (code, err)
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def saved_module(tiny_bert):
    """``saved_module(folder, role="language", lang="ky")``: a random sparse module for the tiny backbone."""
    from transformers import BertModel

    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import save_module
    from tests.modules.test_compose import random_module

    composed = ComposedModel(BertModel.from_pretrained(str(tiny_bert), add_pooling_layer=False).eval())

    def make(folder: Path, role: str = "language", lang: str = "ky") -> Path:
        return save_module(random_module(composed, 1, role=role, lang=lang), folder)

    return make


@pytest.fixture()
def search_with_module(cli, tiny_dense_index, tiny_bert):
    """Search the tiny dense index through the tiny cross-encoder with ``module`` stacked."""

    def run(module: Path):
        return cli(
            "search",
            "--index",
            tiny_dense_index,
            "--lang",
            "en",
            "--reranker",
            "cross",
            "--model",
            tiny_bert,
            "--dense-model",
            tiny_bert,
            "--modules",
            module,
            "education",
        )

    return run
