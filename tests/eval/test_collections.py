"""CLEF-2003 and HC4 collections, from fixture files written in the official formats with the bundled UDHR
text (German documents, Kyrgyz topics; English documents, HC4 topics), turned into the grid's layout."""

import json

import pytest

from rerank.errors import RerankError


def clef_root(tmp_path, udhr_dir):
    from rerank.collections.docs import read_docs
    from rerank.collections.topics import read_topics

    root = tmp_path / "clef"
    (root / "german" / "sda94").mkdir(parents=True)
    (root / "topics").mkdir()
    (root / "qrels").mkdir()
    docs = list(read_docs(udhr_dir / "docs.de.jsonl"))
    for part, chunk in enumerate((docs[:30], docs[30:])):
        with (root / "german" / "sda94" / f"sda.94{part:04d}").open("w", encoding="latin-1", errors="replace") as f:
            for d in chunk:
                f.write(f"<DOC>\n<DOCNO>{d.doc_id}</DOCNO>\n<TI>{d.title}</TI>\n<TEXT>\n{d.text}\n</TEXT>\n</DOC>\n")
    with (root / "topics" / "Top-ky03.txt").open("w", encoding="utf-8") as f:
        for q in read_topics(udhr_dir / "topics.ky.tsv", lang="ky"):
            f.write(
                f"<top>\n<num> {q.query_id} </num>\n<KY-title> {q.text[:60]} </KY-title>\n"
                f"<KY-desc> {q.text} </KY-desc>\n<KY-narr> </KY-narr>\n</top>\n\n"
            )
    (root / "qrels" / "qrels_german").write_text((udhr_dir / "qrels.de.txt").read_text(), encoding="utf-8")
    return root


def test_clef_layout_to_grid_files(tmp_path, udhr_dir):
    from rerank.collections.topics import read_topics
    from rerank.eval.collections import prepare
    from rerank.eval.grid import load_grid

    root = clef_root(tmp_path, udhr_dir)
    facts = prepare("clef2003", tmp_path / "out", root=root, doc_lang="de", topic_lang="kir")
    assert facts["documents"] == 59 and facts["topics"] == 31 and facts["topics_with_relevant"] == 31
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "docs.de.jsonl",
        "grid.toml",
        "qrels.de.txt",
        "topics.ky.desc.tsv",
        "topics.ky.tsv",
    ]
    title = read_topics(out / "topics.ky.tsv")[1]
    desc = read_topics(out / "topics.ky.desc.tsv")[1]
    assert len(desc.text) > len(title.text) and desc.text.startswith(title.text)
    g = load_grid(out / "grid.toml")
    assert g.collection["doc_langs"] == ["de"] and g.collection["query_langs"] == ["ky"]
    # two candidate topic files: the user is asked to choose
    (root / "topics" / "Top-ky03-old.txt").write_text("x")
    with pytest.raises(RerankError, match="2 topics files .* could be it"):
        prepare("clef2003", tmp_path / "o2", root=root, doc_lang="de", topic_lang="ky")
    with pytest.raises(RerankError, match="no document folder .* for ru"):
        prepare("clef2003", tmp_path / "o3", root=root, doc_lang="ru", topic_lang="ky")
    with pytest.raises(RerankError, match="does not exist"):
        prepare("clef2003", tmp_path / "o4", root=tmp_path / "nope", doc_lang="de", topic_lang="ky")


def test_hc4_layout_and_cli(cli, tmp_path, udhr_dir, capsys):
    from rerank.collections.docs import read_docs
    from rerank.collections.topics import read_topics

    root = tmp_path / "hc4"
    (root / "eng").mkdir(parents=True)
    with (root / "eng" / "hc4_docs.jsonl").open("w", encoding="utf-8") as f:
        for d in read_docs(udhr_dir / "docs.en.jsonl"):
            f.write(json.dumps({"id": d.doc_id, "title": d.title, "text": d.text, "url": "", "time": ""}) + "\n")
    en = read_topics(udhr_dir / "topics.en.tsv", lang="en")
    tr = {q.query_id: q for q in read_topics(udhr_dir / "topics.tr.tsv", lang="tr")}
    with (root / "hc4-test.topics.v1-0.jsonl").open("w", encoding="utf-8") as f:
        for q in en:
            topics = [
                {"lang": "eng", "source": "original", "topic_title": q.text, "topic_description": q.text},
                {
                    "lang": "tur",
                    "source": "human translation",
                    "topic_title": tr[q.query_id].text,
                    "topic_description": tr[q.query_id].text,
                },
            ]
            f.write(json.dumps({"topic_id": q.query_id, "topics": topics}, ensure_ascii=False) + "\n")
    (root / "eng" / "test.qrels.v1-0.txt").write_text((udhr_dir / "qrels.en.txt").read_text(), encoding="utf-8")

    run = cli

    code, out, err = run(
        "eval", "collection", "hc4", "--root", root, "--lang", "en", "--topic-lang", "tr", "--out", tmp_path / "out"
    )
    assert code == 0, err
    flat = " ".join(out.split())  # the console wraps long lines where the temporary path makes them long
    assert "60 documents, 31 topics (31 with a relevant document)" in flat and "rerank eval grid" in flat
    assert read_topics(tmp_path / "out" / "topics.tr.tsv")[0].text == tr["a00"].text
    code, _, err = run(
        "eval", "collection", "hc4", "--dataset", "hc4/fa/test", "--lang", "fa", "--out", tmp_path / "x"
    )
    assert code == 2 and "ir_datasets" in err and "Traceback" not in err
    code, _, err = run("eval", "collection", "clef2003", "--root", root, "--out", tmp_path / "y")
    assert code == 2 and "which document language" in err
