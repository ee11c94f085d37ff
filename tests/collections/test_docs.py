import gzip
import json

import pytest

from rerank.collections.docs import read_docs, read_jsonl_docs, read_sgml_docs, write_jsonl_docs
from rerank.errors import RerankError
from rerank.types import Document
from tests.conftest import raises_at, write


def test_jsonl_both_shapes_and_gzip(tmp_path):
    lines = [
        {"id": "a", "contents": "Pyserini shape"},
        {"id": "b", "title": "HC4 shape", "text": "body", "url": "http://x", "cc_file": "f"},
        {"doc_id": 7, "text": "integer id"},
    ]
    p = write(tmp_path / "d.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    docs = list(read_jsonl_docs(p))
    assert docs == [Document("a", "Pyserini shape"), Document("b", "body", "HC4 shape"), Document("7", "integer id")]
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    assert list(read_docs(gz)) == docs


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"id": "x", "contents": "ok"', "not valid JSON"),
        ('["x", "y"]', "a JSON list, not an object"),
        ('{"contents": "no id"}', "document without an id"),
        ('{"id": "x"}', 'neither "contents" nor "text"'),
        ('{"id": "a b", "contents": "t"}', "contains whitespace"),
        ('{"id": "a", "contents": 3}', "must be strings"),
        ('{"id": "d1", "contents": "again"}', "duplicate document id 'd1'"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, line, problem):
    p = write(tmp_path / "d.jsonl", '{"id": "d1", "contents": "first"}\n\n' + line + "\n")
    with pytest.raises(RerankError) as e:
        list(read_jsonl_docs(p))
    msg = str(e.value)
    assert msg.startswith(f"{p}:3: ") and problem in msg and "expected" in msg


def test_not_utf8_is_reported_with_its_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"id": "a", "contents": "ok"}\n{"id": "b", "contents": "caf\xe9"}\n')
    with pytest.raises(RerankError, match=r"d.jsonl:2: not valid UTF-8"):
        list(read_docs(p))


CLEF_SGML = """<DOC>
<DOCNO>LA010194-0001</DOCNO>
<DOCID>1</DOCID>
<DATE><P>January 1, 1994</P></DATE>
<HEADLINE><P>Pesticide rules &amp; baby food</P></HEADLINE>
<TEXT>
<P>First paragraph.</P>
<P>Second   paragraph.</P>
</TEXT>
</DOC>
<DOC><DOCNO> SDA.940101.0001 </DOCNO><TI>Titel</TI><LD>Vorspann.</LD><TX>Text der Meldung.</TX></DOC>
"""


def test_sgml_trec_and_clef_fields(tmp_path):
    p = write(tmp_path / "la.sgml", CLEF_SGML)
    docs = list(read_sgml_docs(p))
    assert docs[0] == Document("LA010194-0001", "First paragraph. Second paragraph.", "Pesticide rules & baby food")
    assert docs[1] == Document("SDA.940101.0001", "Vorspann.\nText der Meldung.", "Titel")
    assert list(read_docs(write(tmp_path / "noext", CLEF_SGML))) == docs  # detected by content


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("<DOC>\n<TEXT>x</TEXT>\n</DOC>\n", 1, "without a <DOCNO>"),
        ("<DOC>\n<DOCNO>a</DOCNO>\n<DOC>\n", 3, "still open"),
        ("<DOC>\n<DOCNO>a</DOCNO>\n<TEXT>x</TEXT>\n", 1, "never closed"),
        ("stray text\n<DOC><DOCNO>a</DOCNO></DOC>\n", 1, "text outside a document"),
        ("<DOC><DOCNO>a</DOCNO></DOC>\n<DOC><DOCNO>a</DOCNO></DOC>\n", 2, "duplicate DOCNO"),
    ],
)
def test_sgml_errors(tmp_path, text, line, problem):
    p = write(tmp_path / "d.sgml", text)
    raises_at(p, line, problem, read_sgml_docs, p)


def test_missing_folder_and_unknown_format(tmp_path):
    with pytest.raises(RerankError, match="documents file not found"):
        read_docs(tmp_path / "nope.jsonl")
    with pytest.raises(RerankError, match="is a folder"):
        read_docs(tmp_path)
    with pytest.raises(RerankError, match="cannot tell the format"):
        read_docs(write(tmp_path / "d.txt", "just text\n"))
    with pytest.raises(RerankError, match="empty"):
        read_docs(write(tmp_path / "e.txt", "\n\n"))


def test_writer_roundtrip_and_atomicity(tmp_path):
    docs = [Document("a", "x"), Document("b", "y", "T")]
    p = tmp_path / "out" / "d.jsonl"
    assert write_jsonl_docs(docs, p) == 2
    assert list(read_jsonl_docs(p)) == docs
    with pytest.raises(RerankError, match="already exists"):
        write_jsonl_docs(docs, p)

    def broken():
        yield Document("c", "z")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        write_jsonl_docs(broken(), p, overwrite=True)
    assert list(read_jsonl_docs(p)) == docs  # the old file is intact
    assert [f.name for f in p.parent.iterdir()] == ["d.jsonl"]  # no temporary left behind


def test_unreadable_file(tmp_path, monkeypatch):
    import os

    p = write(tmp_path / "d.jsonl", '{"id": "a", "contents": "x"}\n')
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False)  # as root, chmod 000 would not stop us
    with pytest.raises(RerankError, match="is not readable.*fix its permissions"):
        read_docs(p)
