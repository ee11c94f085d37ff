"""Data-parallel training (``--processes N``): two processes at the same global batch train what one does."""

import json

import pytest
import torch

from rerank.errors import RerankError

pytestmark = pytest.mark.java


@pytest.fixture(scope="module")
def pairs_file(udhr_dir, tmp_path_factory):
    from rerank.training.pairs import make_pairs

    out = tmp_path_factory.mktemp("pairs") / "train.jsonl"
    make_pairs(udhr_dir / "docs.en.jsonl", out, lang="en", method="ict", negatives=3, progress=False)
    return out


@pytest.fixture(scope="module")
def still_bert(e5_dir, tmp_path_factory):
    """The tiny BERT without dropout: its training is then a function of the data alone, so one process and two
    can be compared step for step (with dropout each process would draw its own masks)."""
    from tests.conftest import make_tiny_bert

    out = make_tiny_bert(tmp_path_factory.mktemp("tiny") / "still-bert", e5_dir, seed=1)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def tensors(folder):
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out |= {f"{f.name}:{k}": v for k, v in load_file(str(f)).items()}
    return out


def test_two_processes_train_what_one_does_at_the_same_global_batch(pairs_file, still_bert, tmp_path):
    from rerank.distributed import launch
    from rerank.training.task import TaskConfig, train_task_module

    cfg = TaskConfig(
        kind="shira",  # its mask is chosen from gradients: they too must be averaged over the processes
        loss="listwise",
        max_steps=20,
        batch_queries=4,
        negatives=3,
        max_length=64,
        eval_every=10,
        patience=None,
        probe_queries=8,  # the head probe's features are computed half in each process
        probe_epochs=1,
    )
    kw = dict(pairs_path=pairs_file, cfg=cfg, model=still_bert, progress=False)
    one = train_task_module(out=tmp_path / "one", **kw)
    assert launch(train_task_module, {**kw, "out": tmp_path / "two"}, 2) is None  # rank 0 wrote it
    a = one.config.recipe
    b = json.loads((tmp_path / "two" / "module_config.json").read_text())["recipe"]
    assert (a["processes"], b["processes"]) == (1, 2) and b["steps"] == 20
    assert b["probe"]["loss_per_epoch"] == pytest.approx(a["probe"]["loss_per_epoch"], abs=1e-4)
    assert [s for s, _ in b["train_loss"]] == [s for s, _ in a["train_loss"]] == [10, 20]
    assert [v for _, v in b["train_loss"]] == pytest.approx([v for _, v in a["train_loss"]], abs=1e-4)  # the curve
    assert [v for _, v in b["dev_loss"]] == pytest.approx([v for _, v in a["dev_loss"]], abs=1e-4)
    assert b["tokens"] == a["tokens"]
    ta, tb = tensors(tmp_path / "one"), tensors(tmp_path / "two")
    assert ta.keys() == tb.keys() and ta
    for k in ta:
        if k.endswith("classifier.bias"):
            # a listwise loss does not depend on a score offset: this bias's true gradient is 0, its float noise
            # is all Adam sees and scales up to full-size steps, in either run
            continue
        if ta[k].dtype.is_floating_point:
            torch.testing.assert_close(tb[k], ta[k], atol=2e-4, rtol=1e-3, msg=lambda m, k=k: f"{k}: {m}")
        else:
            assert torch.equal(tb[k], ta[k]), k  # the same entries chosen by the same mask


def test_a_batch_that_does_not_split_is_one_line(cli, pairs_file, still_bert, tmp_path):
    from rerank.distributed import shard

    assert shard([1, 2, 3]) == [1, 2, 3]  # one process: the whole batch
    args = ["train", "task", "--pairs", pairs_file, "--model", still_bert, "--out", tmp_path / "t"]
    code, _, stderr = cli(*args, "--batch-queries", 3, "--processes", 2, "--max-steps", 2)
    assert code == 2 and "--batch-queries 3 does not split into 2 equal shares" in stderr
    assert stderr.count("\n") == 1
    with pytest.raises(RerankError, match="--processes must be ≥ 1"):
        from rerank.distributed import launch

        launch(print, {}, 0)


def test_a_language_module_trains_alike_in_two_processes(udhr_dir, still_bert, tmp_path):
    from rerank.distributed import launch
    from rerank.training.lang import LangConfig, train_language_module

    cfg = LangConfig(kind="shira", max_steps=10, head_steps=2, seq_len=64, batch_size=4, eval_every=5, patience=None)
    kw = dict(lang="en", text_files=[udhr_dir / "docs.en.jsonl"], cfg=cfg, model=still_bert, progress=False)
    a = train_language_module(out=tmp_path / "one", **kw).config.recipe
    assert launch(train_language_module, {**kw, "out": tmp_path / "two"}, 2) is None
    b = json.loads((tmp_path / "two" / "module_config.json").read_text())["recipe"]
    assert (a["processes"], b["processes"]) == (1, 2) and b["tokens"] == a["tokens"]
    # each process's loss is weighted by its share of the masked tokens: the mean over the whole batch
    assert [v for _, v in b["train_loss"]] == pytest.approx([v for _, v in a["train_loss"]], abs=1e-3)
    assert [v for _, v in b["dev_loss"]] == pytest.approx([v for _, v in a["dev_loss"]], abs=1e-3)
    assert b["dev_loss_before"] == a["dev_loss_before"]


def test_torchrun_starts_the_processes_and_they_train_what_launch_does(udhr_dir, still_bert, tmp_path):
    """Several nodes are torchrun's job: under it, `rerank train` joins the group torchrun started (its
    rendezvous from the environment, here --standalone on this machine) instead of spawning its own."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from rerank.distributed import launch
    from rerank.training.lang import LangConfig, train_language_module

    cfg = LangConfig(kind="shira", max_steps=10, head_steps=2, seq_len=64, batch_size=4, eval_every=5, patience=None)
    kw = dict(lang="en", text_files=[udhr_dir / "docs.en.jsonl"], cfg=cfg, model=still_bert, progress=False)
    assert launch(train_language_module, {**kw, "out": tmp_path / "spawned"}, 2) is None
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    done = subprocess.run(
        [bin_dir / "torchrun", "--standalone", "--nproc-per-node", "2", "--no-python", bin_dir / "rerank", "train",
         "lang", "--lang", "en", "--text", udhr_dir / "docs.en.jsonl", "--kind", "shira", "--max-steps", "10",
         "--head-steps", "2", "--seq-len", "64", "--batch-size", "4", "--eval-every", "5", "--patience", "0",
         "--model", still_bert, "--out", tmp_path / "torchrun", "-q"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count(f"wrote {tmp_path / 'torchrun'}") == 1  # rank 0 reports, rank 1 exits quietly
    a = json.loads((tmp_path / "spawned" / "module_config.json").read_text())["recipe"]
    b = json.loads((tmp_path / "torchrun" / "module_config.json").read_text())["recipe"]
    assert (a["processes"], b["processes"]) == (2, 2) and b["tokens"] == a["tokens"]
    assert [v for _, v in b["train_loss"]] == pytest.approx([v for _, v in a["train_loss"]], abs=1e-5)
    assert [v for _, v in b["dev_loss"]] == pytest.approx([v for _, v in a["dev_loss"]], abs=1e-5)


def test_a_torchrun_world_refuses_its_own_process_count(monkeypatch):
    from rerank.distributed import launch, torchrun_world

    monkeypatch.delenv("RANK", raising=False)
    assert torchrun_world() is None
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert torchrun_world() == (0, 2)
    with pytest.raises(RerankError, match="under torchrun, which started 2 processes"):
        launch(print, {}, 2)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RerankError, match="MASTER_ADDR/MASTER_PORT are not"):
        launch(print, {}, 1)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert torchrun_world() is None  # a world of one is no group


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_from_rank_0s_checkpoint(udhr_dir, still_bert, tmp_path):
    """`rerank train lang --processes 2` killed (SIGKILL to its process group) after its first checkpoint, then
    run again with the same command: every process resumes from rank 0's checkpoint at the step it left, and
    the module equals an uninterrupted two-process run's."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from safetensors.torch import load_file

    rerank = Path(sys.executable).parent / "rerank"

    def command(out):
        return [rerank, "train", "lang", "--lang", "en", "--text", udhr_dir / "docs.en.jsonl", "--kind", "shira",
                "--max-steps", "200", "--head-steps", "2", "--seq-len", "32", "--batch-size", "4", "--eval-every",
                "50", "--patience", "0", "--model", still_bert, "--processes", "2", "--out", out, "-q"]  # fmt: skip

    whole = subprocess.run(command(tmp_path / "whole"), capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = subprocess.Popen(command(tmp_path / "m"), start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    marker = tmp_path / "m.work" / "sparse" / "checkpoint" / "state.json"
    deadline = time.time() + 600
    while not marker.is_file() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert marker.is_file() and not (tmp_path / "m" / "module_config.json").exists()
    again = subprocess.run(command(tmp_path / "m"), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    a = json.loads((tmp_path / "whole" / "module_config.json").read_text())["recipe"]
    b = json.loads((tmp_path / "m" / "module_config.json").read_text())["recipe"]
    assert b["resumed_from"] == 50 and b["sessions"] == 2 and b["steps"] == a["steps"] == 200
    assert [s for s, _ in b["dev_loss"]] == [s for s, _ in a["dev_loss"]] == [50, 100, 150, 200]
    assert [v for _, v in b["dev_loss"]] == pytest.approx([v for _, v in a["dev_loss"]], abs=1e-5)
    ta = load_file(str(tmp_path / "whole" / "module.safetensors"))
    tb = load_file(str(tmp_path / "m" / "module.safetensors"))
    assert ta.keys() == tb.keys()
    for k in ta:
        torch.testing.assert_close(tb[k], ta[k], atol=1e-5, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
