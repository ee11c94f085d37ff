"""Training sources as relevance collections: question–passage data (QED / Natural Questions JSON lines, SQuAD
JSON), parallel text (TSV, Tatoeba, gettext catalogues, LibreOffice's help aligned by paragraph id), the split
cut by hash before training, and the refusal of a dev set that shares queries with training data. The records
below are format fixtures in the sources' own layouts."""

import json
import struct

import pytest

from rerank.errors import RerankError
from tests.conftest import raises_at, write

QED_LINE = {
    "example_id": -6245382849917687110,
    "question_text": "what is the medical term for webbed toes",
    "paragraph_text": "Webbed toes is the common name for syndactyly affecting the feet .",
    "title_text": "Webbed toes",
    "answer_text": ["syndactyly affecting the feet"],
    "answer_spans": [[35, 64]],
}


def _qed(tmp_path, n=40):
    lines = []
    for i in range(n):
        rec = dict(
            QED_LINE,
            example_id=1000 + i,
            question_text=f"question {i} about item {i // 2}",
            paragraph_text=f"Paragraph {i // 2} says where item {i // 2} is .",
            answer_text=[f"item {i // 2}"],
        )
        lines.append(json.dumps(rec))
    return write(tmp_path / "qed.jsonlines", "\n".join(lines) + "\n")


def test_qed_lines_become_a_collection_split_by_passage(tmp_path):
    from rerank.collections.qa import build_qa_collection, read_qa
    from rerank.collections.topics import read_topics
    from rerank.collections.trec import read_qrels

    f = _qed(tmp_path)
    recs = list(read_qa(f))
    assert len(recs) == 40 and recs[0].answers == ("item 0",) and recs[0].title == "Webbed toes"
    facts = build_qa_collection(recs, tmp_path / "c", name="qed", dev_fraction=0.3)
    out = tmp_path / "c"
    dev, train = read_topics(out / "topics.dev.en.tsv"), read_topics(out / "topics.train.en.tsv")
    assert len(dev) + len(train) == 40 and dev and train and facts["documents"] == 20
    judged = read_qrels(out / "qrels.dev.en.txt") + read_qrels(out / "qrels.train.en.txt")
    qrels = {q.query_id: q.doc_id for q in judged}
    # the two questions of one passage are on the same side of the split
    side = {q.query_id: s for s, qs in (("dev", dev), ("train", train)) for q in qs}
    by_doc = {}
    for qid, doc in qrels.items():
        by_doc.setdefault(doc, set()).add(side[qid])
    assert all(len(sides) == 1 for sides in by_doc.values())
    answers = [json.loads(line) for line in (out / "answers.dev.en.jsonl").read_text().splitlines()]
    assert {a["qid"] for a in answers} == {q.query_id for q in dev}
    # the same source splits the same way every time
    build_qa_collection(read_qa(f), tmp_path / "again", name="qed", dev_fraction=0.3)
    assert (tmp_path / "again" / "topics.dev.en.tsv").read_text() == (out / "topics.dev.en.tsv").read_text()


def test_squad_json_and_bad_records(tmp_path):
    from rerank.collections.qa import read_qa

    squad = {
        "data": [
            {
                "title": "Webbed toes",
                "paragraphs": [
                    {
                        "context": QED_LINE["paragraph_text"],
                        "qas": [
                            {
                                "id": "a1",
                                "question": QED_LINE["question_text"],
                                "answers": [{"text": "syndactyly", "answer_start": 35}],
                            },
                            {"id": "a2", "question": "an unanswerable one", "answers": [], "is_impossible": True},
                        ],
                    }
                ],
            }
        ]
    }
    recs = list(read_qa(write(tmp_path / "squad.json", json.dumps(squad))))
    assert [(r.qid, r.answers) for r in recs] == [("a1", ("syndactyly",))]
    bad = write(tmp_path / "bad.jsonl", json.dumps(QED_LINE) + "\n" + json.dumps({"question_text": "q?"}) + "\n")
    raises_at(bad, 2, "no passage text", read_qa, bad)
    dup = write(tmp_path / "dup.jsonl", json.dumps(QED_LINE) + "\n" + json.dumps(QED_LINE) + "\n")
    with pytest.raises(RerankError, match="appears twice"):
        list(read_qa(dup))
    broken = write(tmp_path / "broken.json", '{"data": [{"paragraphs": [{"qas": []}]}]}')
    with pytest.raises(RerankError, match=r"data\[0\]\.paragraphs\[0\]"):
        list(read_qa(broken))


def test_tatoeba_tsv_with_a_byte_order_mark(tmp_path):
    from rerank.collections.parallel import build_parallel_collection, read_parallel_tsv

    rows = [f"{i}\tئۇيغۇرچە جۈملە {i}\t{900 + i // 2}\tEnglish sentence {i // 2}." for i in range(30)]
    f = tmp_path / "ug-en.tsv"
    f.write_bytes(("\ufeff" + "\n".join(rows) + "\n").encode("utf-8"))
    pairs = list(read_parallel_tsv(f, "uig"))
    assert len(pairs) == 30 and pairs[0].lang == "ug" and pairs[0].pair_id == "0" and pairs[0].en_id == "900"
    facts = build_parallel_collection(pairs, tmp_path / "c", name="tat", dev_fraction=0.3)
    assert facts["documents"] == 15 and sum(facts["topics"][s]["ug"] for s in facts["topics"]) == 30
    bad = write(tmp_path / "bad.tsv", "a\tb\tc\n")
    raises_at(bad, 1, "3 tab-separated fields", read_parallel_tsv, bad, "ug")


def _mo(path, messages: dict[str, str]):
    """A gettext catalogue in GNU .mo layout (little-endian, no hash table)."""
    keys = sorted(messages)
    ids = b"".join(k.encode() + b"\0" for k in keys)
    strs = b"".join(messages[k].encode() + b"\0" for k in keys)
    n = len(keys)
    start = 7 * 4 + 16 * n
    key_off, val_off, o = [], [], 0
    for k in keys:
        key_off += [len(k.encode()), start + o]
        o += len(k.encode()) + 1
    o = 0
    for k in keys:
        val_off += [len(messages[k].encode()), start + len(ids) + o]
        o += len(messages[k].encode()) + 1
    head = struct.pack("<7I", 0x950412DE, 0, n, 7 * 4, 7 * 4 + 8 * n, 0, 0)
    path.write_bytes(head + struct.pack(f"<{2 * n}I", *key_off) + struct.pack(f"<{2 * n}I", *val_off) + ids + strs)
    return path


def test_mo_catalogues_give_translated_messages(tmp_path):
    from rerank.collections.parallel import read_mo

    f = _mo(
        tmp_path / "ky.mo",
        {
            "": "Content-Type: text/plain; charset=UTF-8\n",
            "~Open File": "Файлды ~ачуу",
            "Same": "Same",
            "menu\x04Save": "Сактоо",
        },
    )
    got = {(p.text, p.en) for p in read_mo(f, "ky")}
    assert got == {("Файлды ачуу", "Open File"), ("Сактоо", "Save")}
    with pytest.raises(RerankError, match="not a readable .mo"):
        list(read_mo(write(tmp_path / "x.mo", "not a catalogue"), "ky"))


def test_lohelp_pages_align_by_paragraph_id_and_split_by_page(tmp_path):
    from rerank.collections.parallel import build_parallel_collection, lohelp_paragraphs
    from rerank.collections.topics import read_topics

    def page(words, n):
        paras = "".join(f'<p id="par_{i}">{w} number {i} of page {n} about it.</p>' for i, w in enumerate(words))
        return f'<html><body><div id="DisplayArea"><h1 id="hd_1">T</h1>{paras}</div></body></html>'

    for i in range(20):
        rel = f"text/shared/p{i}.html"
        for lang, word in (("en-US", "Paragraph"), ("tr", "Paragraf")):
            f = tmp_path / lang / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            # paragraph 2 is left in English by the translator: it is no pair
            f.write_text(page([word, word, "Paragraph"], i), encoding="utf-8")
    pairs = list(lohelp_paragraphs(tmp_path / "en-US", tmp_path / "tr", "tr"))
    assert len(pairs) == 40 and all(p.group == p.pair_id.split("#")[0] for p in pairs)
    facts = build_parallel_collection(
        pairs, tmp_path / "c", name="lo", dev_fraction=0.3, max_train=10, separate_train_pool=True
    )
    train = read_topics(tmp_path / "c" / "topics.train.tr.tsv")
    assert 10 <= len(train) <= 11  # whole pages: the cap stops at a page boundary
    assert facts["train_documents"] and (tmp_path / "c" / "docs.train.en.jsonl").is_file()


def test_a_dev_set_sharing_a_training_query_is_refused(tmp_path):
    from rerank.collections.splits import check_disjoint

    dev = write(tmp_path / "topics.dev.en.tsv", "d1\twhat is the medical term for webbed toes\n")
    assert check_disjoint(["another question"], [dev]) == 1
    with pytest.raises(RerankError, match="also a training query"):
        check_disjoint(["What is the  medical term for WEBBED toes"], [dev])


def test_the_commands_build_collections_and_bad_input_is_one_line(tmp_path, capsys):
    from tests.cli.test_cli import assert_one_line_error, rerank

    code, out, err = rerank(
        capsys, "collections", "build-qa", "--qa", _qed(tmp_path), "--out", tmp_path / "qa", "--dev-fraction", "0.3"
    )
    assert code == 0 and "20 passages" in out and "dev en" in out, err
    assert json.loads((tmp_path / "qa" / "collection.json").read_text())["split"]["dev_fraction"] == 0.3
    code, _, err = rerank(capsys, "collections", "build-qa", "--qa", _qed(tmp_path), "--out", tmp_path / "qa")
    assert_one_line_error(code, err, "already exists")
    tsv = write(tmp_path / "p.tsv", "Бул сүйлөм.\tThis sentence.\n")
    code, out, err = rerank(capsys, "collections", "build-parallel", "--tsv", f"ky={tsv}", "--out", tmp_path / "par")
    assert code == 0 and "1 English documents" in out, err
    code, _, err = rerank(capsys, "collections", "build-parallel", "--tsv", str(tsv), "--out", tmp_path / "p2")
    assert_one_line_error(code, err, "is not LANG=PATH")
    code, _, err = rerank(capsys, "collections", "build-parallel", "--out", tmp_path / "p3")
    assert_one_line_error(code, err, "no parallel text given")
    code, _, err = rerank(
        capsys, "collections", "build-parallel", "--lohelp", f"tr={tmp_path}", "--out", tmp_path / "p4"
    )
    assert_one_line_error(code, err, "--lohelp needs --lohelp-en")
    code, _, err = rerank(capsys, "collections", "build-qa", "--qa", tmp_path / "missing", "--out", tmp_path / "q2")
    assert_one_line_error(code, err, "not found")
