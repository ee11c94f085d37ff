"""Loading a backbone folder for inference: device, threads, tokenizer, weights (safetensors only)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from rerank.errors import RerankError


def cpu_threads() -> int:
    """Threads for torch on the CPU: ``RERANK_THREADS`` if set, else every core this process may use."""
    env = os.environ.get("RERANK_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise RerankError(f"RERANK_THREADS={env!r} is not a positive whole number", hint="e.g. RERANK_THREADS=4")
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def pick_device(device: str | None = None):
    """``None`` picks CUDA when present, else the CPU (with :func:`cpu_threads` threads)."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise RerankError(f"unknown device {device!r}", hint="use cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RerankError(f"device {device!r} asked for, but torch sees no CUDA device", hint="use --device cpu")
    if dev.type == "cpu" and torch.get_num_threads() != cpu_threads():
        torch.set_num_threads(cpu_threads())
    return dev


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    # transformers 4.57.6 warns about a "Mistral regex" for any folder it saved itself; not our tokenizers
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoTokenizer.from_pretrained(str(path), local_files_only=True, use_fast=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for a broken folder
        raise RerankError(
            f"cannot load the tokenizer in {path}: {' '.join(str(e).split())[:200]}",
            hint="the folder needs tokenizer.json (or the files AutoTokenizer reads)",
        ) from e
    finally:
        hf_logging.set_verbosity(verbosity)


def load_weights(path: Path, head: bool, device, new_head: bool = False):
    """The encoder (``head=False``: no pooler, no task head) or the sequence-classification model with
    one output (``head=True``), fp32, in eval mode, on ``device``. Only safetensors are read.
    ``new_head``: the folder has no ranking head; make one (random: a task module brings its values)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    cfg = AutoConfig.from_pretrained(str(path), local_files_only=True, **({"num_labels": 1} if new_head else {}))
    kwargs = dict(local_files_only=True, use_safetensors=True, torch_dtype=torch.float32, attn_implementation="sdpa")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights were not used" for the head we drop is expected
    try:
        if head:
            if getattr(cfg, "num_labels", 1) != 1:
                raise RerankError(
                    f"{path} has a classification head with {cfg.num_labels} outputs; a ranking head has one",
                    hint="use a cross-encoder folder with num_labels=1",
                )
            model = AutoModelForSequenceClassification.from_pretrained(str(path), config=cfg, **kwargs)
        else:
            extra = {"add_pooling_layer": False} if cfg.model_type in ("bert", "xlm-roberta", "roberta") else {}
            model = AutoModel.from_pretrained(str(path), **kwargs, **extra)
    except RerankError:
        raise
    except Exception as e:  # noqa: BLE001
        raise RerankError(
            f"cannot load the model in {path}: {' '.join(str(e).split())[:200]}",
            hint="a Hugging Face BERT/XLM-R folder with config.json and model.safetensors is needed",
        ) from e
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.to(device).eval()
