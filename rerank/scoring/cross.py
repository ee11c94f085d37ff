"""The cross-encoder: (query, document) → one logit from a ranking head on the backbone.

A cross-encoder folder is a Hugging Face sequence-classification folder with one label (what
sentence-transformers' ``CrossEncoder`` also loads). Pairs are cut to ``max_length`` tokens (256 by
default) by shortening the document: the query is kept whole unless it alone would leave the
document fewer than ``MIN_DOC_TOKENS``, in which case it is cut too, with a warning.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rerank.backbone.runtime import load_tokenizer, load_weights, pick_device
from rerank.errors import RerankError, warn
from rerank.scoring.batching import length_sorted_batches, pad_batch
from rerank.scoring.encoder import resolve

DEFAULT_MAX_LENGTH = 256
MIN_DOC_TOKENS = 16


class CrossEncoder:
    """>>> ce = CrossEncoder("path/to/cross-encoder")
    >>> ce.predict([("query", "a document"), ("query", "another")])   # array of 2 logits
    """

    kind = "cross"

    def __init__(
        self,
        model=None,
        *,
        device: str | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        max_tokens: int = 2048,
        head_from_module: bool = False,
        precision: str = "auto",
    ):
        """``precision``: ``auto`` (bf16 where the processor computes it natively, else fp32), ``fp32`` or ``bf16``
        (:mod:`rerank.scoring.precision`). ``head_from_module``: a backbone without a ranking head is given one
        whose values a task module brings (stacked through :class:`rerank.modules.ComposedModel`); :meth:`predict`
        refuses to score until one is stacked."""
        self.info = resolve(model)
        self.head_from_module = head_from_module and not self.info.has_head
        self.head_ready = lambda: True  # the Reranker replaces this when the head comes from a module
        # whether the stacked task module brings the residual head (rerank.scoring.residual), and the bi-encoder
        # cosines it starts from when the caller gives none: both set by the Reranker
        self.residual_active = lambda: False
        self.prior_for = None
        if not self.info.has_head and not head_from_module:
            raise RerankError(
                f"{self.info.path} has no ranking head (a sequence-classification head with one output)",
                hint="use --reranker bi, or a cross-encoder folder (a transformers sequence-classification model with "
                "num_labels=1, as sentence-transformers' CrossEncoder saves)",
            )
        self.device = pick_device(device)
        from rerank.scoring.precision import resolve_precision

        self.precision = resolve_precision(precision, self.device)
        self.tokenizer = load_tokenizer(self.info.path)
        self.model = load_weights(self.info.path, head=True, device=self.device, new_head=self.head_from_module)
        self.list_head = None  # the list-aware head: attached only for a task module that brings one
        from rerank.scoring import residual

        residual.attach(self.model)  # inert until a task module writes one in
        if self.precision == "bf16":  # the encoder in bf16, what reads its output in fp32
            from rerank.scoring.precision import keep_fp32

            base = getattr(self.model, getattr(self.model, "base_model_prefix", ""), None)
            for part in (getattr(base, "pooler", None), getattr(self.model, "classifier", None)):
                keep_fp32(part, self.device)
            keep_fp32(self.model.residual_head, self.device)
        self.max_length = min(max_length, self.info.max_length)
        self.max_tokens = max_tokens
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        specials = self.tokenizer.num_special_tokens_to_add(pair=True)
        if self.max_length < specials + 2 * MIN_DOC_TOKENS:
            raise RerankError(
                f"max_length {max_length} is too short for a query–document pair",
                hint=f"use at least {specials + 2 * MIN_DOC_TOKENS}",
            )

    def attach_list_head(self) -> bool:
        """Give the model the list-aware head (zero, inactive until a task module writes its values in); False
        when the architecture has no place for one."""
        from rerank.scoring import listhead

        if self.list_head is None:
            self.list_head = listhead.attach(self.model)
            if self.list_head is not None and self.precision == "bf16":
                from rerank.scoring.precision import keep_fp32

                keep_fp32(self.list_head, self.device)
        return self.list_head is not None

    def encode_pairs(
        self, pairs: Sequence[tuple[str, str]], prefixes: tuple[str, str] | None = None
    ) -> tuple[list[list[int]], list[list[int]] | None, int]:
        """Token ids (and token types, for BERT-style tokenizers) per pair; how many queries were cut."""
        return encode_pairs(self.tokenizer, pairs, self.max_length, prefixes)

    def predict(
        self, pairs: Sequence[tuple[str, str]], *, progress: bool = False, prior: Sequence[float] | None = None
    ) -> np.ndarray:
        """One logit per (query, document) pair, in input order (float32). ``prior``: the bi-encoder's cosine of
        each pair, which the residual head starts from (computed here when not given)."""
        import torch
        from tqdm.auto import tqdm

        pairs = list(pairs)
        scores = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return scores
        if not self.head_ready():
            raise RerankError(
                f"{self.info.path} has no ranking head of its own and no task module is stacked to bring one",
                hint="stack a task module (rerank train task makes one) or use the bi-encoder",
            )
        from rerank.scoring import residual
        from rerank.scoring.precision import autocast

        use_residual = self.residual_active()
        if use_residual:
            if prior is None:
                if self.prior_for is None:
                    raise RerankError(
                        "the residual ranking head needs the bi-encoder's scores of the pairs",
                        hint="score through rerank.Reranker, which computes them",
                    )
                prior = self.prior_for(pairs)
            if len(prior) != len(pairs):
                raise RerankError(f"{len(prior)} prior scores for {len(pairs)} pairs", hint="one per pair")
            prior_t = torch.as_tensor(np.asarray(prior, dtype=np.float32))
        ids, types, cut = self.encode_pairs(pairs, residual.PAIR_PREFIXES if use_residual else None)
        if cut:
            warn(
                f"{cut} queries are longer than the cross-encoder's {self.max_length} tokens allow; "
                "they were truncated"
            )
        list_aware = not use_residual and self.list_head is not None and self.list_head.active()
        vectors = None
        with (
            torch.inference_mode(),
            autocast(self.precision, self.device),
            tqdm(
                total=len(ids), desc="cross-encoder", unit="pair", disable=not progress, leave=False, file=sys.stderr
            ) as bar,
        ):
            for batch in length_sorted_batches([len(s) for s in ids], self.max_tokens):
                tok_ids, mask = pad_batch([ids[i] for i in batch], self.pad_id)
                inputs = {
                    "input_ids": torch.from_numpy(tok_ids).to(self.device),
                    "attention_mask": torch.from_numpy(mask).to(self.device),
                }
                if types is not None:
                    inputs["token_type_ids"] = torch.from_numpy(pad_batch([types[i] for i in batch], 0)[0]).to(
                        self.device
                    )
                if use_residual:
                    where = torch.as_tensor(batch)
                    got = self.model.residual_head(
                        residual.mean_pooled(self.model, inputs), prior_t[where].to(self.device)
                    )
                    scores[batch] = got.float().cpu().numpy()
                elif list_aware:  # pooled vectors first; the list head needs each query's whole list
                    from rerank.scoring.listhead import pooled

                    got = pooled(self.model, inputs)
                    if vectors is None:
                        vectors = got.new_zeros((len(pairs), got.shape[1]), dtype=torch.float32)
                    vectors[torch.as_tensor(batch, device=got.device)] = got
                else:
                    logits = self.model(**inputs).logits
                    scores[batch] = logits[:, 0].float().cpu().numpy()
                bar.update(len(batch))
            if list_aware:
                from rerank.scoring.listhead import classify

                scores[:] = classify(self.model, vectors, _runs([q for q, _ in pairs])).float().cpu().numpy()
        return scores


def encode_pairs(
    tok, pairs: Sequence[tuple[str, str]], max_length: int, prefixes: tuple[str, str] | None = None
) -> tuple[list[list[int]], list[list[int]] | None, int]:
    """Token ids (and token types, for BERT-style tokenizers) of each (query, document) pair within
    ``max_length``: the document is cut; the query too, when it alone would leave the document fewer than
    ``MIN_DOC_TOKENS``. Returns how many distinct queries were cut. Each distinct text is tokenized once.
    ``prefixes``: put before the query and the document (e5's ``"query: "``, ``"passage: "``).
    Training and scoring both encode pairs here, so a module sees at query time what it learned on."""
    if prefixes:
        pairs = [(prefixes[0] + q, prefixes[1] + d) for q, d in pairs]
    queries = list(dict.fromkeys(q for q, _ in pairs))
    docs = list(dict.fromkeys(d for _, d in pairs))
    kw = dict(
        add_special_tokens=False,
        truncation=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    q_ids = dict(zip(queries, tok(queries, **kw)["input_ids"], strict=True)) if queries else {}
    d_ids = dict(zip(docs, tok(docs, **kw)["input_ids"], strict=True)) if docs else {}
    room = max_length - tok.num_special_tokens_to_add(pair=True)
    q_budget = room - MIN_DOC_TOKENS
    cut = {q for q, ids in q_ids.items() if len(ids) > q_budget}
    types = "token_type_ids" in tok.model_input_names
    ids_out, types_out = [], [] if types else None
    for q, d in pairs:
        qi = q_ids[q][:q_budget]
        di = d_ids[d][: room - len(qi)]
        ids_out.append(tok.build_inputs_with_special_tokens(qi, di))
        if types_out is not None:
            types_out.append(tok.create_token_type_ids_from_sequences(qi, di))
    return ids_out, types_out, len(cut)


def _runs(keys: Sequence[str]) -> list[int]:
    """Lengths of the runs of equal consecutive keys: the candidate lists of consecutive queries."""
    sizes: list[int] = []
    for i, key in enumerate(keys):
        if i and key == keys[i - 1]:
            sizes[-1] += 1
        else:
            sizes.append(1)
    return sizes


def init_cross_encoder(backbone, out: str | Path, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Write a cross-encoder folder: the backbone's encoder plus a freshly initialised one-output
    ranking head (what ranking-module training starts from). Atomic: a temporary folder, then rename."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from rerank.files import atomic_dir

    info = resolve(backbone)
    cfg = AutoConfig.from_pretrained(str(info.path), local_files_only=True, num_labels=1)
    cfg.problem_type = "regression"  # one logit; keeps transformers from applying softmax anywhere
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized: classifier…" is the point here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(info.path), config=cfg, local_files_only=True, use_safetensors=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    with atomic_dir(out, overwrite, marker="config.json") as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        load_tokenizer(info.path).save_pretrained(str(tmp))
        meta = Path(info.path) / "rerank-backbone.json"
        if meta.is_file():
            (tmp / "rerank-backbone.json").write_text(meta.read_text(encoding="utf-8"), encoding="utf-8")
    return Path(out)
