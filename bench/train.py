"""Training speed and memory per module kind, at equal trainable-parameter count, on the real backbone.

Each kind runs in its own process (so its peak RSS is its own) on the embedded multilingual-e5-small with
the masked-LM objective of `rerank train lang` (restricted-vocabulary head, whole-word masking) on the
Kyrgyz text of ../shared/data/mono, batch --batch × --seq-len tokens:

  lora        peft LoRA, rank --rank, on the 72 encoder linear weights: r·(in+out) parameters each
  shira       SHiRA: r·(in+out) random entries of each of those weights (rerank.modules.deltas)
  shira+emb   the same plus 2% of the language's embedding rows (what `rerank train lang` does by default)
  sft-phase1  LT-SFT phase 1: the 72 linear weights fully trainable (21.2M parameters)
  full        full fine-tuning of every parameter

Figures: median seconds per optimizer step over --steps steps after 2 warm-up steps, training tokens/s,
trainable parameters, peak RSS (VmHWM), and ratios to LoRA (the SHiRA paper reports about LoRA's speed
with up to 16% lower peak memory).

    .venv/bin/python bench/train.py [--steps 6] [--kinds lora shira ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TEXT = ROOT.parent / "shared" / "data" / "mono" / "ky.commonvoice.txt"
KINDS = ("lora", "shira", "shira+emb", "sft-phase1", "full")


def child(kind: str, steps: int, batch: int, seq_len: int, rank: int) -> dict:
    import torch

    from rerank.backbone import default_backbone
    from rerank.backbone.runtime import load_tokenizer, load_weights
    from rerank.modules import deltas as sparse
    from rerank.training.mlm import MaskedBatches, MLMHead, mlm_loss, restricted_vocab
    from rerank.training.text import read_texts

    torch.manual_seed(0)
    folder = default_backbone()
    tok = load_tokenizer(folder)
    enc = load_weights(folder, head=False, device=torch.device("cpu"))
    docs = read_texts([TEXT])
    vocab = restricted_vocab(tok, docs)
    data = MaskedBatches(tok, docs, vocab, seq_len=seq_len, batch_size=batch)
    head = MLMHead(enc.config.hidden_size, enc.embeddings.word_embeddings, vocab)
    for p in [*enc.parameters(), *head.parameters()]:
        p.requires_grad_(False)
    model = enc
    if kind == "lora":
        from peft import LoraConfig, get_peft_model

        names = sorted({n[: -len(".weight")] for n in sparse.target_weights(enc)})
        model = get_peft_model(enc, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=names))
        params = [p for p in model.parameters() if p.requires_grad]
    elif kind.startswith("shira"):
        rows = vocab if kind == "shira+emb" else None
        targets = sparse.target_weights(enc, rows)
        chosen = {}
        g = torch.Generator().manual_seed(0)
        for name, (mod, attr) in targets.items():
            w = getattr(mod, attr)
            if name.endswith("word_embeddings.weight"):
                c = sparse.candidates(name, w, rows)
                chosen[name] = c[torch.randperm(c.numel(), generator=g)[: max(1, int(0.02 * c.numel()))]]
            else:
                k = rank * (w.shape[0] + w.shape[1])
                chosen[name] = torch.randperm(w.numel(), generator=g)[:k]
        deltas = sparse.attach(targets, chosen, rows)
        head.row_delta = next((d for d in deltas.values() if isinstance(d, sparse.RowsDelta)), None)
        params = [d.delta for d in deltas.values()]
    elif kind == "sft-phase1":
        params = [getattr(m, a) for m, a in sparse.target_weights(enc).values()]
        for p in params:
            p.requires_grad_(True)
    else:
        params = list(enc.parameters())
        for p in params:
            p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    times, tokens = [], []
    for step in range(steps + 2):
        b = data.batch(step)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = mlm_loss(model, head, b)
        loss.backward()
        opt.step()
        if step >= 2:
            times.append(time.perf_counter() - t)
            tokens.append(int(b["attention_mask"].sum()))
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    med = statistics.median(times)
    return {
        "kind": kind,
        "trainable": int(sum(p.numel() for p in params)),
        "s_per_step": {"median": round(med, 3), "min": round(min(times), 3), "max": round(max(times), 3)},
        "tokens_per_s": round(statistics.median(tokens) / med, 1),
        "peak_rss_mb": round(hwm / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.steps, a.batch, a.seq_len, a.rank)))
        return
    import torch

    started = time.perf_counter()
    rows = {}
    for kind in a.kinds:
        cmd = [sys.executable, __file__, "--child", kind, "--steps", str(a.steps), "--batch", str(a.batch)]
        cmd += ["--seq-len", str(a.seq_len), "--rank", str(a.rank)]
        cp = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[kind] = json.loads(cp.stdout.strip().splitlines()[-1])
    if "lora" in rows:
        lo = rows["lora"]
        for r in rows.values():
            r["time_per_step_over_lora"] = round(r["s_per_step"]["median"] / lo["s_per_step"]["median"], 3)
            r["peak_rss_over_lora"] = round(r["peak_rss_mb"] / lo["peak_rss_mb"], 3)
    out = {
        "benchmark": "train",
        "machine": {"torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "settings": {"batch": a.batch, "seq_len": a.seq_len, "rank": a.rank, "steps": a.steps, "text": str(TEXT)},
        "kinds": rows,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
