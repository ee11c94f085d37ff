"""The training loop every trainer uses: AdamW with linear warm-up and decay, gradient accumulation,
``max_steps`` and a wall-clock budget, a dev evaluation every ``eval_every`` steps with early stopping,
a progress bar with loss and tokens/s, and checkpoints (safetensors) to resume from.

A checkpoint holds the trainable tensors and the optimizer's state under ``<dir>/checkpoint/``; the
data order is a function of (seed, step), so a resumed run continues with the batch it would have
seen next.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rerank import distributed as dist
from rerank.errors import RerankError


@dataclass
class LoopConfig:
    max_steps: int = 1000
    lr: float = 1e-4
    warmup: float = 0.06  # fraction of max_steps
    weight_decay: float = 0.0
    grad_accum: int = 1
    time_budget: float | None = None  # seconds
    eval_every: int = 100
    patience: int | None = 3  # evaluations without improvement before stopping
    checkpoint_every: int = 200
    clip: float = 1.0
    seed: int = 0
    param_lr: dict = field(default_factory=dict)  # parameter name -> its own peak rate (e.g. a new head)


@dataclass
class LoopLog:
    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0
    stopped: str = ""
    train_loss: list = field(default_factory=list)  # (step, mean loss since the last entry)
    dev: list = field(default_factory=list)  # (step, dev metric)
    dev_info: list = field(default_factory=list)  # (step, other figures the dev evaluation returned)
    best_dev: float | None = None
    resumed_from: int = 0
    seconds_at_resume: float = 0.0  # the loop's clock when this session resumed it (earlier sessions' time)

    def as_dict(self) -> dict:
        return dict(vars(self))


def train(
    params: dict[str, torch.nn.Parameter],
    step_loss: Callable[[int], tuple[torch.Tensor, int]],
    cfg: LoopConfig,
    *,
    dev: Callable[[], float] | None = None,
    checkpoint_dir: Path | None = None,
    desc: str = "training",
    progress: bool = True,
    hold: Callable[[], Callable[[], None]] | None = None,
) -> LoopLog:
    """Train ``params`` (name → parameter) on ``step_loss(micro_step) -> (loss, tokens)``. ``dev()`` is
    lower-is-better (it may return ``(value, {other figures})``, kept in ``log.dev_info``); the best dev state is
    kept and restored at the end. ``hold()``, when given, is called before each optimizer step and returns what to
    call after it (a dynamic budget keeps what lies past the step's prefix where it was)."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    names = sorted(params)
    plist = [params[n] for n in names]
    rates = sorted({cfg.param_lr.get(n, cfg.lr) for n in names})
    groups = [
        {"params": [p for n, p in zip(names, plist, strict=True) if cfg.param_lr.get(n, cfg.lr) == r], "lr": r}
        for r in rates
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, int(cfg.max_steps * cfg.warmup))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (cfg.max_steps - step) / max(1, cfg.max_steps - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    log = LoopLog()
    start_step = 0
    best = None
    if checkpoint_dir is not None and (checkpoint_dir / "checkpoint" / "state.json").is_file():
        start_step, best = _load_checkpoint(checkpoint_dir / "checkpoint", names, plist, opt, sched, log)
        log.resumed_from = start_step
        log.seconds_at_resume = log.seconds
    if dev and best is None:
        best = {n: p.detach().clone() for n, p in zip(names, plist, strict=True)}
    bad_evals = 0
    started = time.perf_counter() - log.seconds
    window: list[float] = []
    bar = tqdm(total=cfg.max_steps, initial=start_step, desc=desc, unit="step", disable=not progress)
    step = start_step
    try:
        while step < cfg.max_steps:
            opt.zero_grad(set_to_none=True)
            total, step_tokens = 0.0, 0
            for micro in range(cfg.grad_accum):
                loss, tokens = step_loss(step * cfg.grad_accum + micro)
                if not dist.distributed() and not torch.isfinite(loss):
                    raise RerankError(f"the loss became {float(loss)} at step {step}", hint="lower --lr")
                (loss / cfg.grad_accum).backward()
                total += float(loss.detach()) / cfg.grad_accum
                step_tokens += tokens
            if dist.distributed():  # every process's share of the batch: the mean loss, the summed tokens
                dist.average_grads(plist)
                total, step_tokens = dist.mean(total), int(dist.total(step_tokens))
                if not math.isfinite(total):
                    raise RerankError(f"the loss became {total} at step {step}", hint="lower --lr")
            log.tokens += step_tokens
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(plist, cfg.clip)
            undo = hold() if hold is not None else None
            opt.step()
            if undo is not None:
                undo()
            sched.step()
            step += 1
            window.append(total)
            log.seconds = time.perf_counter() - started
            bar.update(1)
            bar.set_postfix(loss=f"{total:.3f}", tok_s=f"{log.tokens / max(log.seconds, 1e-9):.0f}")
            if step % 10 == 0 or step == cfg.max_steps:
                log.train_loss.append((step, sum(window) / len(window)))
                window = []
            if dev is not None and (step % cfg.eval_every == 0 or step == cfg.max_steps):
                value, info = _evaluate(dev)
                if info is not None:
                    log.dev_info.append((step, info))
                log.dev.append((step, value))
                if log.best_dev is None or value < log.best_dev:
                    log.best_dev, bad_evals = value, 0
                    best = {n: p.detach().clone() for n, p in zip(names, plist, strict=True)}
                else:
                    bad_evals += 1
                    if cfg.patience is not None and bad_evals >= cfg.patience:
                        log.stopped = f"early stop at step {step}: dev did not improve for {bad_evals} evaluations"
                        break
            if checkpoint_dir is not None and step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
                log.steps = step
                if dist.is_main():
                    _save_checkpoint(checkpoint_dir / "checkpoint", names, plist, opt, sched, log, step, best)
            if cfg.time_budget is not None and dist.from_main(lambda: log.seconds >= cfg.time_budget):
                log.stopped = f"time budget of {cfg.time_budget:.0f} s reached at step {step}"
                break
    finally:
        bar.close()
    log.steps = step
    log.stopped = log.stopped or f"max steps ({cfg.max_steps})"
    if best is not None and log.dev:
        with torch.no_grad():
            for n, p in zip(names, plist, strict=True):
                p.copy_(best[n])
    return log


def _evaluate(dev) -> tuple[float, dict | None]:
    """(figure, other figures or None) of ``dev()``; with several processes, run on rank 0 and the figure given
    to all (the other figures stay on rank 0, which writes the log)."""
    kept: dict = {}

    def run() -> float:
        value = dev()
        if isinstance(value, tuple):
            value, kept["info"] = value
        return float(value)

    return dist.from_main(run), kept.get("info")


SESSIONS_FILE = "sessions.json"


def open_session(work: Path) -> tuple[int, float]:
    """Record that a session of the run whose checkpoints are in ``work`` starts now; return its number (1 for a
    fresh run) and the seconds the earlier sessions ran, each counted from its start until the newest file it
    left in ``work`` (what a killed session did after its last checkpoint was lost and is done again)."""
    import os

    work = Path(work)
    path = work / SESSIONS_FILE
    number, earlier = 1, 0.0
    try:
        state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        number, earlier, began = int(state["sessions"]) + 1, float(state["earlier_seconds"]), float(state["started"])
    except (OSError, ValueError, TypeError, KeyError):
        state = None
    if state is not None:
        newest = max((f.stat().st_mtime for f in work.rglob("*") if f.is_file() and f != path), default=began)
        earlier += max(0.0, newest - began)
    else:
        number, earlier = 1, 0.0
    work.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{SESSIONS_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps({"sessions": number, "earlier_seconds": earlier, "started": time.time()}))
    os.replace(tmp, path)
    return number, earlier


def _save_checkpoint(folder: Path, names, plist, opt, sched, log: LoopLog, step: int, best=None) -> None:
    """The trainable tensors, the optimizer's state, the schedule, the log — and the best dev state so far,
    which the run restores at its end (without it a resumed run would end with another state)."""
    from safetensors.torch import save_file

    from rerank.files import atomic_dir

    tensors = {f"param.{n}": p.detach().contiguous() for n, p in zip(names, plist, strict=True)}
    if best is not None and log.best_dev is not None:
        tensors.update({f"best.{n}": t.detach().contiguous() for n, t in best.items()})
    for i, n in enumerate(names):
        st = opt.state.get(plist[i], {})
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{n}.{k}"] = v.detach().reshape(v.shape).contiguous()
    with atomic_dir(folder, overwrite=True, marker="state.json") as tmp:
        save_file(tensors, str(tmp / "state.safetensors"))
        state = {"step": step, "sched": sched.state_dict(), "log": log.as_dict()}
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")


def _load_checkpoint(folder: Path, names, plist, opt, sched, log: LoopLog) -> tuple[int, dict | None]:
    from safetensors.torch import load_file

    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    tensors = load_file(str(folder / "state.safetensors"))
    missing = [n for n in names if f"param.{n}" not in tensors]
    if missing:
        raise RerankError(
            f"the checkpoint in {folder} is for other parameters ({missing[0]} missing)",
            hint="delete it to start over, or resume with the same settings",
        )
    with torch.no_grad():
        for n, p in zip(names, plist, strict=True):
            p.copy_(tensors[f"param.{n}"])
            st = {k.split(".")[-1]: v for k, v in tensors.items() if k.startswith(f"opt.{n}.")}
            if st:
                opt.state[p] = {k: (v if k != "step" else v.clone()) for k, v in st.items()}
    sched.load_state_dict(state["sched"])
    for group, lr in zip(opt.param_groups, sched.get_last_lr(), strict=True):
        group["lr"] = lr  # the scheduler's state does not carry the optimizer's current rate
    for k, v in state["log"].items():
        setattr(log, k, v)
    best = {n: tensors[f"best.{n}"].clone() for n in names if f"best.{n}" in tensors}
    return int(state["step"]), (best if len(best) == len(names) else None)


def parse_budget(text: str | None) -> float | None:
    """``90``, ``90s``, ``25m``, ``1.5h`` → seconds."""
    if text is None:
        return None
    t = text.strip().lower()
    unit = {"s": 1, "m": 60, "h": 3600}.get(t[-1:], None)
    try:
        value = float(t[:-1]) * unit if unit else float(t)
    except ValueError:
        value = -1
    if not value > 0 or math.isinf(value):
        raise RerankError(f"time budget {text!r} is not a duration", hint="e.g. 25m, 90s or 1.5h")
    return value
