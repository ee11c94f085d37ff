"""Compiling a codepoint normalisation table into a SentencePiece *precompiled charsmap*.

The ``tokenizers`` library's ``Precompiled`` normaliser reads SentencePiece's binary charsmap (a
double-array trie over the UTF-8 of the source strings plus a blob of replacement strings). Rather
than re-implement the trie builder, we let SentencePiece compile it: its trainer accepts a
``normalization_rule_tsv`` (``src codepoints <TAB> replacement codepoints``, hex, space-separated),
and the trained model proto carries the compiled map in ``normalizer_spec.precompiled_charsmap``.
The toy model trained alongside is thrown away.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable
from pathlib import Path


def rules_tsv(table: Iterable[tuple[int, tuple[int, ...]]]) -> str:
    """The table as SentencePiece's normalisation-rule TSV (an empty replacement deletes the character)."""
    lines = []
    for cp, out in table:
        lines.append(f"{cp:X}\t{' '.join(f'{o:X}' for o in out)}")
    return "\n".join(lines) + "\n"


def compile_charsmap(table: Iterable[tuple[int, tuple[int, ...]]]) -> bytes:
    """Compile ``(codepoint, replacement codepoints)`` pairs into a precompiled charsmap blob."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory(prefix="rerank-charsmap-") as tmp:
        tsv = Path(tmp) / "rules.tsv"
        tsv.write_text(rules_tsv(table), encoding="utf-8")
        model = io.BytesIO()
        # Training needs some text; the vocabulary it learns is irrelevant, only the normaliser is kept.
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["the quick brown fox jumps over the lazy dog"] * 4),
            model_writer=model,
            normalization_rule_tsv=str(tsv),
            model_type="char",
            vocab_size=30,
            hard_vocab_limit=False,
            minloglevel=2,
        )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return bytes(proto.normalizer_spec.precompiled_charsmap)
