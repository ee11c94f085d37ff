"""Language-module training on a tiny random BERT with real Kyrgyz text (../shared/data/mono): every kind
trains and writes a module the engine composes; the loop resumes exactly; bad input is one line."""

from pathlib import Path

import pytest
import torch

from rerank.errors import RerankError

MONO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mono"
KY = MONO / "ky.ud-ktmu.txt"
UG = MONO / "ug.ud-udt.txt"


@pytest.fixture(scope="module")
def ky_text():
    if not KY.is_file():
        pytest.fail(f"{KY} is missing (../shared/data/mono is part of the workplace)")
    return KY


def small(kind, **kw):
    from rerank.training.lang import LangConfig

    return LangConfig(kind=kind, max_steps=6, head_steps=3, eval_every=3, batch_size=4, seq_len=32, **kw)


@pytest.mark.parametrize("kind", ["shira", "sft", "lora", "adapter"])
def test_every_kind_trains_a_module_the_engine_composes(kind, ky_text, tiny_bert, tmp_path):
    from rerank.backbone import fingerprint
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import load_module
    from rerank.training.lang import train_language_module

    module = train_language_module("kir", [ky_text], tmp_path / "ky", small(kind), model=tiny_bert, progress=False)
    back = load_module(tmp_path / "ky", fingerprint=fingerprint(tiny_bert))
    c = back.config
    assert c.kind == kind and c.role == "language" and c.language == "ky" and back.content_key == module.content_key
    assert c.recipe["steps"] >= 3 and c.recipe["vocab"] > 1000 and len(c.recipe["dev_loss"]) >= 1
    assert c.data["files"][0]["sha256"] and c.data["script"] == "CYRILLIC"
    assert not (tmp_path / "ky.work").exists()  # checkpoints are removed once the module is written
    if kind in ("shira", "sft"):
        vals = [v for _, v in back.payload.entries.values()]
        assert all(torch.all(v.abs()[:-1] >= v.abs()[1:]) for v in vals)  # most important first
        assert "embeddings.word_embeddings.weight" in back.payload.entries
        if kind == "shira":  # 2% of each weight (of the language's rows for the embeddings)
            idx, _ = back.payload.entries["encoder.layer.0.attention.self.query.weight"]
            assert 0 < idx.numel() <= 0.02 * 32 * 32 + 1
    if kind == "lora":
        a, b = next(iter(back.payload.values()))
        norms = b.norm(dim=0) * a.norm(dim=1)
        assert torch.all(norms[:-1] >= norms[1:])
    cm = ComposedModel(tiny_bert)
    before = {k: v.clone() for k, v in cm.model.state_dict().items()}
    cm.apply([tmp_path / "ky"])
    cm.revert()
    assert all(torch.equal(cm.model.state_dict()[k], v) for k, v in before.items())


def test_the_head_learns(ky_text, tiny_bert):
    """The restricted-vocabulary head alone, encoder frozen, lowers the dev loss (it learns at least the
    language's piece frequencies)."""
    from rerank.backbone.runtime import load_tokenizer, load_weights
    from rerank.training.loop import LoopConfig, train
    from rerank.training.mlm import MaskedBatches, MLMHead, mlm_loss, restricted_vocab
    from rerank.training.text import read_texts, split_dev

    train_docs, dev_docs = split_dev(read_texts([ky_text]))
    tok = load_tokenizer(tiny_bert)
    enc = load_weights(tiny_bert, head=False, device=torch.device("cpu"))
    for p in enc.parameters():
        p.requires_grad_(False)
    vocab = restricted_vocab(tok, train_docs)
    data = MaskedBatches(tok, train_docs, vocab, seq_len=64, batch_size=8)
    dev = [MaskedBatches(tok, dev_docs, vocab, seq_len=64, batch_size=8, seed=1).batch(i) for i in range(3)]
    head = MLMHead(32, enc.embeddings.word_embeddings, vocab)

    def dev_loss():
        with torch.no_grad():
            return sum(float(mlm_loss(enc, head, b)) for b in dev) / len(dev)

    start = dev_loss()
    train(
        {n: p for n, p in head.named_parameters()},
        lambda i: (mlm_loss(enc, head, data.batch(i)), 0),
        LoopConfig(max_steps=60, lr=0.1, patience=None),
        progress=False,
    )
    end = dev_loss()
    assert end < start - 0.5, (start, end)  # 8.33 (uniform over ~4k pieces) -> 7.66 when written


def test_an_interrupted_loop_resumes_exactly(tmp_path):
    from rerank.training.loop import LoopConfig, train

    target = torch.linspace(-1, 1, 16)

    def make():
        return {"w": torch.nn.Parameter(torch.zeros(16))}

    def loss_fn(params, stop_at=None):
        def f(i):
            if stop_at is not None and i == stop_at:
                raise KeyboardInterrupt
            g = torch.Generator().manual_seed(i)
            x = torch.randn(16, generator=g)
            return ((params["w"] * x - target * x) ** 2).mean(), 16

        return f

    cfg = LoopConfig(max_steps=12, lr=0.05, checkpoint_every=5, patience=None)
    whole = make()
    train(whole, loss_fn(whole), cfg, progress=False)
    part = make()
    with pytest.raises(KeyboardInterrupt):
        train(part, loss_fn(part, stop_at=7), cfg, checkpoint_dir=tmp_path, progress=False)
    again = make()
    log = train(again, loss_fn(again), cfg, checkpoint_dir=tmp_path, progress=False)
    assert log.resumed_from == 5 and log.steps == 12
    assert torch.equal(again["w"], whole["w"])


def test_an_interrupted_module_run_records_every_session(ky_text, tiny_bert, tmp_path, monkeypatch):
    """Killed after its first checkpoint and run again, a language module's recipe counts both sessions and the
    time of both (the first until its checkpoint), not only the last one's."""
    import time
    from dataclasses import replace

    from rerank.training import loop
    from rerank.training.lang import train_language_module

    cfg = replace(small("shira"), max_steps=60, eval_every=50)
    real = loop._save_checkpoint

    def dies_after_the_first_checkpoint(*a, **kw):
        real(*a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_save_checkpoint", dies_after_the_first_checkpoint)
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        train_language_module("ky", [ky_text], tmp_path / "m", cfg, model=tiny_bert, progress=False)
    first = time.perf_counter() - started
    monkeypatch.setattr(loop, "_save_checkpoint", real)
    started = time.perf_counter()
    m = train_language_module("ky", [ky_text], tmp_path / "m", cfg, model=tiny_bert, progress=False)
    second = time.perf_counter() - started
    r = m.config.recipe
    assert r["sessions"] == 2 and r["resumed_from"] == 50 and r["steps"] == 60
    assert second < r["seconds"] <= first + second + 1.0, (first, second, r["seconds"])
    assert not (tmp_path / "m.work").exists()
    fresh = train_language_module("ky", [ky_text], tmp_path / "n", small("shira"), model=tiny_bert, progress=False)
    assert fresh.config.recipe["sessions"] == 1


def test_bad_input(cli, ky_text, tiny_bert, tmp_path, capsys):
    from rerank.training.lang import train_language_module
    from rerank.training.loop import parse_budget

    with pytest.raises(RerankError, match="unknown --kind 'bitfit'"):
        train_language_module("ky", [ky_text], tmp_path / "x", small("bitfit"), model=tiny_bert, progress=False)
    tiny = tmp_path / "tiny.txt"
    tiny.write_text(KY.read_text(encoding="utf-8")[:500], encoding="utf-8")
    with pytest.raises(RerankError, match="too little to learn a language from"):
        train_language_module("ky", [tiny], tmp_path / "x", small("shira"), model=tiny_bert, progress=False)
    train_language_module("ky", [UG], tmp_path / "wrong", small("lora"), model=tiny_bert, progress=False)
    err = capsys.readouterr().err
    assert "mostly in Arabic script" in err and "ky is written in Cyrillic" in err
    assert parse_budget("25m") == 1500 and parse_budget("90") == 90
    with pytest.raises(RerankError, match="not a duration"):
        parse_budget("soon")

    run = cli

    code, out, err = run(
        "train",
        "lang",
        "--lang",
        "ky",
        "--text",
        ky_text,
        "--out",
        tmp_path / "cli",
        "--kind",
        "shira",
        "--max-steps",
        "4",
        "--head-steps",
        "2",
        "--batch-size",
        "4",
        "--seq-len",
        "32",
        "--model",
        tiny_bert,
        "--quiet",
        "--mask",
        "magnitude",
    )
    assert code == 0 and "wrote" in out and "shira language module for ky" in out, err
    code, _, err = run(
        "train",
        "lang",
        "--lang",
        "ky",
        "--text",
        ky_text,
        "--out",
        tmp_path / "big",
        "--batch-size",
        "512",
        "--seq-len",
        "512",
        "--model",
        tiny_bert,
    )
    assert code == 2 and "would not fit in memory" in err and "--grad-accum" in err


def test_embedding_rows_delta_equals_the_parametrized_matrix(tiny_bert):
    """The hooked row delta (no full matrix) gives the same embeddings and decoder rows as writing the
    delta into the matrix."""
    from rerank.backbone.runtime import load_weights
    from rerank.modules import deltas as sparse
    from rerank.training.mlm import MLMHead

    enc = load_weights(tiny_bert, head=False, device=torch.device("cpu"))
    emb = enc.embeddings.word_embeddings
    rows = torch.tensor([5, 17, 400, 9000])
    cands = sparse.candidates("embeddings.word_embeddings.weight", emb.weight, rows)
    idx = cands[torch.randperm(cands.numel(), generator=torch.Generator().manual_seed(0))[:40]]
    targets = {"embeddings.word_embeddings.weight": (emb, "weight")}
    d = sparse.attach(targets, {"embeddings.word_embeddings.weight": idx}, rows)["embeddings.word_embeddings.weight"]
    with torch.no_grad():
        d.delta.copy_(torch.randn(40))
    head = MLMHead(32, emb, rows)
    head.row_delta = d
    ids = torch.tensor([[5, 17, 3, 400, 9000, 12]])
    hooked = emb(ids).detach()
    dec = (head.embeddings[0].weight.index_select(0, rows) + d.for_ids(rows)).detach()
    full = emb.weight.detach().clone().reshape(-1).index_add(0, idx, d.delta.detach()).view_as(emb.weight)
    assert torch.allclose(hooked, full[ids], atol=0) and torch.allclose(dec, full[rows], atol=0)
    sparse.detach(targets, {"embeddings.word_embeddings.weight": d})
    assert torch.equal(emb(ids), emb.weight[ids])


def test_text_can_be_a_document_collection(udhr_dir):
    from rerank.collections.docs import read_docs
    from rerank.training.text import read_texts

    docs = list(read_docs(udhr_dir / "docs.ky.jsonl"))
    texts = read_texts([udhr_dir / "docs.ky.jsonl"])
    assert texts == [" ".join(d.contents.split()) for d in docs] and len(texts) > 50


def test_running_out_of_memory_is_one_line(ky_text, tiny_bert, tmp_path, capsys, monkeypatch):
    from rerank.cli.main import main
    from rerank.training import mlm

    def huge(*args, **kwargs):  # what torch's CPU allocator raises when a batch does not fit
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(mlm, "mlm_loss", huge)
    with pytest.raises(SystemExit) as e:
        main(
            [
                "train",
                "lang",
                "--lang",
                "ky",
                "--text",
                str(ky_text),
                "--out",
                str(tmp_path / "m"),
                "--model",
                str(tiny_bert),
                "--max-steps",
                "2",
                "--quiet",
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2 and "out of memory — use a smaller --batch-size" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()
