"""Batches for transformer inference on variable-length inputs.

Sorting by exact token length and padding each batch only to its own longest input wastes almost no
compute on padding; a token budget (rather than a fixed batch size) keeps every batch's matrices
about the same size, so short inputs are run in bigger batches. A small budget is faster on a CPU:
measured on e5-small with 300 real pairs, 2,048 tokens per batch took 13.6 s, 16,384 took 21.9 s
(bigger batches span more different lengths, so more padding, and their attention leaves the cache).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def length_sorted_batches(
    lengths: Sequence[int], max_tokens: int = 2048, max_batch: int = 256
) -> Iterator[np.ndarray]:
    """Yield index arrays, longest inputs first; each batch's ``len(batch) * longest`` stays within
    ``max_tokens`` (a single input longer than the budget still gets a batch of its own)."""
    if len(lengths) == 0:
        return
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    lens = np.asarray(lengths, dtype=np.int64)[order]
    start, n = 0, len(order)
    while start < n:
        longest = int(lens[start])  # sorted descending: the first input of a batch is its longest
        size = max(1, min(max_batch, max_tokens // max(1, longest), n - start))
        yield order[start : start + size]
        start += size


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id lists to the longest one: (ids, attention mask), both int64."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask
