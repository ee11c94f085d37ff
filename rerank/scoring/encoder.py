"""Embeddings from a backbone (mean or CLS pooling, L2-normalised) and the bi-encoder scorer.

``Encoder`` is what the dense index and the bi-encoder share: texts are tokenized once, sorted by
token length and run in batches padded only to their own longest input (see :mod:`.batching`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from rerank.backbone.runtime import load_tokenizer, load_weights, pick_device
from rerank.errors import RerankError, warn
from rerank.scoring.batching import length_sorted_batches, pad_batch


def resolve(model):
    """A :class:`~rerank.backbone.BackboneInfo` from ``None`` (the embedded default), a path, or an info."""
    from rerank.backbone import BackboneInfo, resolve_model

    return model if isinstance(model, BackboneInfo) else resolve_model(model)


class Encoder:
    """A backbone that turns texts into unit vectors.

    >>> enc = Encoder()                              # the embedded multilingual-e5-small
    >>> q = enc.encode(["кыргыз тили"], kind="query")  # (1, 384) float32, "query: " prefixed for e5
    """

    def __init__(
        self, model=None, *, device: str | None = None, max_length: int | None = None, max_tokens: int = 2048
    ):
        self.info = resolve(model)
        self.device = pick_device(device)
        self.tokenizer = load_tokenizer(self.info.path)
        self.model = load_weights(self.info.path, head=False, device=self.device)
        self.max_length = min(max_length or self.info.max_length, self.info.max_length)
        self.max_tokens = max_tokens
        self.dim = int(self.model.config.hidden_size)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

    def prefix(self, kind: str | None) -> str:
        if kind is None:
            return ""
        if kind not in ("query", "passage"):
            raise RerankError(f"unknown text kind {kind!r}", hint="use 'query' or 'passage'")
        return self.info.prefixes.get(kind, "")

    def tokenize(self, texts: Sequence[str], kind: str | None = None) -> tuple[list[list[int]], int]:
        """Token ids with special tokens, cut at ``max_length``; also how many texts were cut."""
        prefix = self.prefix(kind)
        enc = self.tokenizer(
            [prefix + t for t in texts],
            add_special_tokens=True,
            truncation=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        ids = enc["input_ids"]
        cut = 0
        for i, s in enumerate(ids):
            if len(s) > self.max_length:  # keep the final special token (</s> / [SEP])
                ids[i] = s[: self.max_length - 1] + s[-1:]
                cut += 1
        return ids, cut

    def encode(
        self, texts: Sequence[str], kind: str | None = None, *, progress: bool = False, desc: str = "encoding"
    ) -> np.ndarray:
        """Unit vectors, one row per text, in input order (float32)."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids, cut = self.tokenize(texts, kind)
        if cut and kind == "query":
            warn(
                f"{cut} of {len(texts)} queries are longer than the model's {self.max_length} tokens; "
                "they were truncated"
            )
        self._run(ids, out, progress, desc)
        return out

    def _run(self, ids: list[list[int]], out: np.ndarray, progress: bool, desc: str) -> None:
        import torch
        from tqdm.auto import tqdm

        pooling = self.info.pooling
        with (
            torch.inference_mode(),
            tqdm(total=len(ids), desc=desc, unit="text", disable=not progress, leave=False, file=sys.stderr) as bar,
        ):
            for batch in length_sorted_batches([len(s) for s in ids], self.max_tokens):
                tok, mask = pad_batch([ids[i] for i in batch], self.pad_id)
                t_ids = torch.from_numpy(tok).to(self.device)
                t_mask = torch.from_numpy(mask).to(self.device)
                hidden = self.model(input_ids=t_ids, attention_mask=t_mask).last_hidden_state
                if pooling == "cls":
                    vec = hidden[:, 0]
                else:
                    m = t_mask.unsqueeze(-1).to(hidden.dtype)
                    vec = (hidden * m).sum(1) / m.sum(1)
                vec = torch.nn.functional.normalize(vec, dim=-1)
                out[batch] = vec.float().cpu().numpy()
                bar.update(len(batch))


class BiEncoder:
    """Scores a pair by the cosine of the query's and the document's embeddings (zero-shot e5)."""

    kind = "bi"

    def __init__(
        self, model=None, *, device: str | None = None, max_length: int | None = None, encoder: Encoder | None = None
    ):
        self.encoder = encoder or Encoder(model, device=device, max_length=max_length)
        self.info = self.encoder.info

    def predict(self, pairs: Sequence[tuple[str, str]], *, progress: bool = False) -> np.ndarray:
        """One score per (query, document) pair, in input order. Each distinct text is encoded once."""
        pairs = list(pairs)
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        queries = list(dict.fromkeys(q for q, _ in pairs))
        docs = list(dict.fromkeys(d for _, d in pairs))
        qv = self.encoder.encode(queries, "query")
        dv = self.encoder.encode(docs, "passage", progress=progress, desc="bi-encoder")
        qi = {q: i for i, q in enumerate(queries)}
        di = {d: i for i, d in enumerate(docs)}
        rows = np.fromiter((qi[q] for q, _ in pairs), dtype=np.int64, count=len(pairs))
        cols = np.fromiter((di[d] for _, d in pairs), dtype=np.int64, count=len(pairs))
        return np.einsum("ij,ij->i", qv[rows], dv[cols]).astype(np.float32)
