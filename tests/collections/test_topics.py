import json

import pytest

from rerank.collections.topics import read_hc4_topics, read_sgml_topics, read_topics, read_tsv_topics, write_tsv_topics
from rerank.errors import RerankError
from rerank.types import Query
from tests.conftest import raises_at, write

TREC = """<top>
<num> Number: 301
<title> International Organized Crime

<desc> Description:
Identify organizations that participate in international criminal activity.

<narr> Narrative:
A relevant document must as a minimum identify the organization.
</top>

<top>
<num> Number: 302 </num>
<title> Poliomyelitis and Post-Polio </title>
<desc> Description: Is the disease coming back? </desc>
</top>
"""

CLEF = """<top>
<num> C041 </num>
<DE-title> Pestizide in Babykost </DE-title>
<DE-desc> Berichte über Pestizide in Babynahrung. </DE-desc>
<DE-narr> Relevante Dokumente nennen Pestizide. </DE-narr>
</top>
<top>
<num>C042</num>
<DE-title>U-Bahn-Bau</DE-title>
</top>
"""


def test_trec_topics_fields(tmp_path):
    p = write(tmp_path / "t.trec", TREC)
    qs = read_sgml_topics(p)
    assert [q.query_id for q in qs] == ["301", "302"]
    assert qs[0].text == "International Organized Crime"
    assert qs[0].description == "Identify organizations that participate in international criminal activity."
    assert qs[0].narrative.startswith("A relevant document must")
    assert read_topics(p, field="desc")[1].text == "Is the disease coming back?"
    assert read_topics(p, field="title+desc", lang="en")[1] == Query(
        "302", "Poliomyelitis and Post-Polio Is the disease coming back?", "en", "Is the disease coming back?", ""
    )


def test_clef_topics_language_from_tags(tmp_path):
    qs = read_topics(write(tmp_path / "t.sgml", CLEF))
    assert qs[0] == Query(
        "C041",
        "Pestizide in Babykost",
        "de",
        "Berichte über Pestizide in Babynahrung.",
        "Relevante Dokumente nennen Pestizide.",
    )
    assert qs[1].text == "U-Bahn-Bau"
    ky = write(
        tmp_path / "ky.sgml",
        "<top>\n<num> C041 </num>\n<KY-title> Балдар тамагындагы пестициддер </KY-title>\n</top>\n",
    )
    assert read_topics(ky)[0].lang == "ky"


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("<top>\n<title> x\n</top>\n", 1, "without a <num>"),
        ("<top>\n<num> 1\n<desc> only a description\n</top>\n", 1, "no <title>"),
        ("<top>\n<num> 1\n<title> x\n<top>\n", 4, "is open"),
        ("<top>\n<num> 1\n<title> x\n", 1, "never closed"),
        ("hello\n", 1, "text outside a topic"),
        ("<top><num>1</num><title>a</title></top>\n<top><num>1</num><title>b</title></top>\n", 2, "duplicate"),
    ],
)
def test_sgml_topic_errors(tmp_path, text, line, problem):
    p = write(tmp_path / "t.trec", text)
    raises_at(p, line, problem, read_sgml_topics, p)


def test_empty_field_is_refused(tmp_path):
    p = write(tmp_path / "t.trec", "<top>\n<num> 1\n<title> x\n</top>\n")
    with pytest.raises(RerankError, match="topic 1 has an empty desc"):
        read_topics(p, field="desc")
    with pytest.raises(RerankError, match="unknown topic field"):
        read_topics(p, field="body")


def test_tsv_topics(tmp_path):
    p = write(tmp_path / "t.tsv", "a01\tБардык адамдар эркин.\n\na02\tЭч ким\n")
    assert read_tsv_topics(p, "kir") == [Query("a01", "Бардык адамдар эркин.", "ky"), Query("a02", "Эч ким", "ky")]
    out = tmp_path / "w.tsv"
    write_tsv_topics(read_tsv_topics(p), out)
    assert out.read_text(encoding="utf-8") == "a01\tБардык адамдар эркин.\na02\tЭч ким\n"


def test_tsv_topics_with_a_language_column(tmp_path):
    p = write(tmp_path / "t.tsv", "a01\tБардык адамдар эркин.\tkir\na02\tHer insan\ttr\na03\tEveryone\n")
    got = read_tsv_topics(p, "en")
    assert [q.lang for q in got] == ["ky", "tr", "en"]  # the column wins; --lang serves lines without one
    assert [q.lang for q in read_tsv_topics(p)] == ["ky", "tr", ""]


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("q1 no tab\n", 1, "1 tab-separated fields"),
        ("q1\ta\tb\tc\n", 1, "4 tab-separated fields"),
        ("q1\ta\tbq\n", 1, "unknown language code 'bq'"),
        ("q1\t   \n", 1, "has no text"),
        ("q1\tx\nq1\ty\n", 2, "duplicate query id"),
        ("q 1\tx\n", 1, "bad query id"),
    ],
)
def test_tsv_errors(tmp_path, text, line, problem):
    p = write(tmp_path / "t.tsv", text)
    raises_at(p, line, problem, read_tsv_topics, p)


HC4 = [
    {
        "topic_id": "1",
        "topics": [
            {
                "lang": "eng",
                "source": "original",
                "topic_title": "Mask mandates",
                "topic_description": "Who wears masks?",
            },
            {"lang": "rus", "source": "machine translation", "topic_title": "MT title", "topic_description": "MT"},
            {
                "lang": "rus",
                "source": "human translation",
                "topic_title": "Масочный режим",
                "topic_description": "Кто носит маски?",
            },
        ],
        "narratives": {"rus": {"very_valuable": "…"}},
        "report": {"text": "r", "url": "u", "date": "d"},
        "languages_with_qrels": ["rus"],
    },
    {
        "topic_id": "2",
        "topics": [{"lang": "eng", "source": "original", "topic_title": "Olympics", "topic_description": "Games"}],
        "languages_with_qrels": ["fas"],
    },
]


def test_hc4_topics(tmp_path):
    p = write(tmp_path / "topics.jsonl", "\n".join(json.dumps(t, ensure_ascii=False) for t in HC4) + "\n")
    en = read_topics(p)
    assert [(q.query_id, q.text, q.lang) for q in en] == [("1", "Mask mandates", "en"), ("2", "Olympics", "en")]
    ru = read_hc4_topics(p, lang="ru", field="title+desc")
    assert [(q.query_id, q.text) for q in ru] == [("1", "Масочный режим Кто носит маски?")]  # human over machine
    assert read_hc4_topics(p, lang="rus", source="machine translation")[0].text == "MT title"
    with pytest.raises(RerankError, match="no topic has a Chinese"):
        read_hc4_topics(p, lang="zh")
    bad = write(tmp_path / "bad.jsonl", '{"topic_id": "1"}\n')
    with pytest.raises(RerankError, match=r"bad.jsonl:1: not an HC4 topic record"):
        read_hc4_topics(bad)


def test_unknown_format_and_empty_file(tmp_path):
    with pytest.raises(RerankError, match="unknown topics format"):
        read_topics(write(tmp_path / "t.tsv", "q\tx\n"), fmt="xml")
    with pytest.raises(RerankError, match="topics file is empty"):
        read_topics(write(tmp_path / "e.tsv", "\n"))
