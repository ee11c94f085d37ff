import numpy as np

from rerank.scoring.batching import length_sorted_batches, pad_batch


def test_batches_cover_every_index_once_longest_first_within_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=1000).tolist()
    batches = list(length_sorted_batches(lengths, max_tokens=2048, max_batch=64))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    longest = [max(lengths[i] for i in b) for b in batches]
    assert longest == sorted(longest, reverse=True)
    for b in batches:
        assert len(b) <= 64
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 2048


def test_an_input_longer_than_the_budget_gets_its_own_batch():
    batches = list(length_sorted_batches([5000, 3, 3], max_tokens=100))
    assert [len(b) for b in batches] == [1, 2]
    assert list(length_sorted_batches([], 100)) == []


def test_pad_batch():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
