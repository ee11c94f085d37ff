"""Masked-language modelling on a backbone that ships no MLM head.

The head is BERT's: a transform (dense → GELU → LayerNorm) and a decoder tied to the input word
embeddings. On a CPU the 250k-way softmax is the cost, so the output layer is *restricted* to the
pieces that occur in the language's training text (plus the special pieces): the decoder is the rows
of the embedding matrix for those pieces (still tied, so a module that changes embeddings changes
the decoder too), and the loss is a softmax over them only. Masking is whole-word: the SentencePiece
tokenizer marks a word's first piece with ``▁``, and all pieces of a chosen word are masked
together (15% of words; of their pieces 80% become ``<mask>``, 10% a random piece of the restricted
vocabulary, 10% stay).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import nn

MASK_WORDS = 0.15


class MLMHead(nn.Module):
    """Transform + decoder tied to ``embeddings`` restricted to ``vocab`` (token ids, sorted)."""

    def __init__(self, hidden: int, embeddings: nn.Embedding, vocab: torch.Tensor, eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.embeddings = [embeddings]  # not a submodule: its weights belong to the backbone
        self.register_buffer("vocab", vocab.to(torch.long), persistent=False)
        self.bias = nn.Parameter(torch.zeros(vocab.numel()))
        self.row_delta = None  # a RowsDelta on the embeddings being trained: the tied decoder sees it too

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        h = self.norm(nn.functional.gelu(self.dense(hidden_states)))
        decoder = self.embeddings[0].weight.index_select(0, self.vocab)
        if self.row_delta is not None:
            decoder = decoder + self.row_delta.for_ids(self.vocab)
        return h @ decoder.T + self.bias


def restricted_vocab(tokenizer, docs: Sequence[str], max_vocab: int | None = None) -> torch.Tensor:
    """The token ids occurring in ``docs`` (the most frequent ``max_vocab`` when given) and the specials."""
    from collections import Counter

    counts: Counter = Counter()
    for i in range(0, len(docs), 1000):
        for ids in tokenizer(list(docs[i : i + 1000]), add_special_tokens=False)["input_ids"]:
            counts.update(ids)
    ids = [t for t, _ in counts.most_common(max_vocab)]
    specials = [t for t in (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id) if t is not None]
    return torch.tensor(sorted(set(ids) | set(specials)), dtype=torch.long)


class MaskedBatches:
    """Packs tokenized documents into sequences of ``seq_len`` and masks whole words; deterministic
    for a seed and step (so training can resume at a step)."""

    def __init__(
        self,
        tokenizer,
        docs: Sequence[str],
        vocab: torch.Tensor,
        *,
        seq_len: int = 128,
        batch_size: int = 16,
        seed: int = 0,
    ):
        self.tok = tokenizer
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.vocab = vocab
        self.to_local = torch.full((max(len(tokenizer), int(vocab.max()) + 1),), -100, dtype=torch.long)
        self.to_local[vocab] = torch.arange(vocab.numel())
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.word_start = torch.tensor(
            [p.startswith("▁") for p in pieces] + [True] * (len(self.to_local) - len(pieces))
        )
        self.sequences = self._pack(docs)
        if not self.sequences:
            raise ValueError("no sequences")

    def _pack(self, docs: Sequence[str]) -> list[list[int]]:
        cls, sep = self.tok.cls_token_id, self.tok.sep_token_id
        room = self.seq_len - 2
        out, cur = [], []
        for i in range(0, len(docs), 1000):
            for ids in self.tok(list(docs[i : i + 1000]), add_special_tokens=False)["input_ids"]:
                ids = ids[:room]
                if cur and len(cur) + 1 + len(ids) > room:
                    out.append([cls, *cur, sep])
                    cur = []
                cur = [*cur, sep, *ids] if cur else list(ids)
        if cur:
            out.append([cls, *cur, sep])
        return out

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)

    def batches_per_epoch(self) -> int:
        return max(1, len(self.sequences) // self.batch_size)

    def batch(self, step: int) -> dict:
        """The ``step``-th batch: the epoch's seeded order, then masking seeded by the step."""
        per = self.batches_per_epoch()
        epoch, k = divmod(step, per)
        order = list(range(len(self.sequences)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        seqs = [self.sequences[i] for i in order[k * self.batch_size : (k + 1) * self.batch_size]]
        return self.mask(seqs, random.Random(self.seed * 7_919 + step))

    def mask(self, seqs: list[list[int]], rng: random.Random) -> dict:
        n = max(len(s) for s in seqs)
        pad = self.tok.pad_token_id
        ids = torch.full((len(seqs), n), pad, dtype=torch.long)
        att = torch.zeros((len(seqs), n), dtype=torch.long)
        labels = torch.full((len(seqs), n), -100, dtype=torch.long)
        specials = {self.tok.cls_token_id, self.tok.sep_token_id, pad}
        mask_id = self.tok.mask_token_id
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            att[r, : len(s)] = 1
            words, cur = [], []
            for j, t in enumerate(s):
                if t in specials:
                    if cur:
                        words.append(cur)
                    cur = []
                    continue
                if self.word_start[t] and cur:
                    words.append(cur)
                    cur = []
                cur.append(j)
            if cur:
                words.append(cur)
            if not words:
                continue
            chosen = rng.sample(words, max(1, round(len(words) * MASK_WORDS)))
            for word in chosen:
                for j in word:
                    local = int(self.to_local[s[j]])
                    if local < 0:
                        continue  # a piece outside the restricted vocabulary cannot be predicted
                    labels[r, j] = local
                    u = rng.random()
                    if u < 0.8:
                        ids[r, j] = mask_id
                    elif u < 0.9:
                        ids[r, j] = int(self.vocab[rng.randrange(self.vocab.numel())])
        return {"input_ids": ids, "attention_mask": att, "labels": labels}


def mlm_loss(encoder, head: MLMHead, batch: dict) -> torch.Tensor:
    """Cross-entropy over the restricted vocabulary at the masked positions."""
    out = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    where = batch["labels"] >= 0
    if not bool(where.any()):
        return hidden.sum() * 0.0
    logits = head(hidden[where])
    return nn.functional.cross_entropy(logits, batch["labels"][where])
