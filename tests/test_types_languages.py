import ir_measures
import pytest
from ir_measures import MAP, P, nDCG

from rerank import languages
from rerank.errors import RerankError
from rerank.indexes.tokenize import TOKENIZER_NAME, tokenize
from rerank.types import Document, Qrel, ScoredDoc


def test_records_are_what_ir_measures_computes_on():
    qrels = [Qrel("q1", "d1", 2), Qrel("q1", "d2", 0), Qrel("q1", "d3", 1), Qrel("q2", "d9", 1)]
    run = [
        ScoredDoc("q1", "d2", 3.0),
        ScoredDoc("q1", "d1", 2.0),
        ScoredDoc("q1", "d3", 1.0),
        ScoredDoc("q2", "d8", 1.0),
    ]
    ours = ir_measures.calc_aggregate([MAP, nDCG @ 10, P @ 1], qrels, run)
    theirs = ir_measures.calc_aggregate(
        [MAP, nDCG @ 10, P @ 1], [ir_measures.Qrel(*q) for q in qrels], [ir_measures.ScoredDoc(*r) for r in run]
    )
    assert ours == theirs
    assert ours[MAP] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 0) / 2)
    assert Qrel._fields[:3] == ir_measures.Qrel._fields[:3] and ScoredDoc._fields == ir_measures.ScoredDoc._fields


def test_document_contents_joins_title():
    assert Document("d", "body", "Head").contents == "Head\nbody"
    assert Document("d", "body").contents == "body"


@pytest.mark.parametrize(
    "given, code",
    [
        ("ky", "ky"),
        ("kir", "ky"),
        ("kg", "ky"),
        ("Kyrgyz", "ky"),
        ("uig", "ug"),
        ("uig_arab", "ug"),
        ("tur", "tr"),
        ("TR", "tr"),
        ("ger", "de"),
        ("deu", "de"),
        ("de-CH", "de"),
        ("eng", "en"),
        ("fas", "fa"),
        ("zho", "zh"),
    ],
)
def test_aliases_resolve_to_iso_639_1(given, code):
    assert languages.code(given) == code


def test_unknown_language_suggests_the_nearest():
    with pytest.raises(RerankError) as e:
        languages.resolve("kyr")
    assert "unknown language code 'kyr'" in str(e.value) and "ky (" in str(e.value)
    with pytest.raises(RerankError, match="no language given"):
        languages.resolve("  ")


def test_analyzers_lucene_or_declared_pretokenizer():
    from rerank.indexes.analyzers import analyzer_for

    assert analyzer_for(languages.code("de")) == "lucene-de"
    assert analyzer_for(languages.code("tr")) == "lucene-tr"
    for code in ("ky", "ug", "kk", "sw"):  # no Lucene analyzer: never English's
        assert analyzer_for(languages.code(code)) == TOKENIZER_NAME


def test_tokenizer_keeps_scripts_and_marks_whole():
    assert tokenize("Ар бир адам жашоого, эркиндикке укуктуу.") == [
        "ар",
        "бир",
        "адам",
        "жашоого",
        "эркиндикке",
        "укуктуу",
    ]
    assert tokenize("ھەممە ئادەم ئەركىن، ئىززەت-ھۆرمەت") == ["ھەممە", "ئادەم", "ئەركىن", "ئىززەت", "ھۆرمەت"]
    # a decomposed letter (i + combining dot above) stays one token; full-width digits are normalised
    assert tokenize("İSTANBUL ２０２４") == ["i̇stanbul", "2024"]
    assert tokenize("...!!") == []
