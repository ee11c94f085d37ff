"""The LibreOffice help reader on a page written in the help's own HTML layout (a format fixture)."""

from rerank.collections.lohelp import build, page_documents

PAGE = """<html><body><aside><p>navigation, not content</p></aside>
<div id="DisplayArea" itemprop="softwareHelp">
  <meta itemprop="keywords" content="Find toolbar">
  <h1 id="hd_1" dir="auto">Find Bar</h1>
  <p id="par_1" class="paragraph">The <span class="menuitem">Find</span> toolbar can be used to quickly search the
  contents of documents, and it opens at the bottom of the window.</p>
  <div class="tip"><p id="par_2">Use the shortcut <span class="switchinline"><span hidden="true" class="MAC">
  <span class="keycode">Command</span></span><span hidden="true">Ctrl</span></span><span class="keycode"> + F</span>
  to quickly open the <span class="menuitem">Find</span> toolbar.<br></p></div>
  <h2 id="hd_2">Find Text</h2>
  <p id="par_3">Enter the text to be searched in the document. Press <span class="keycode">Enter</span> to perform
  the search from the position of the cursor.</p>
</div><footer><p>footer text</p></footer></body></html>
"""


def test_sections_become_titled_documents(tmp_path):
    page = tmp_path / "help" / "text" / "shared" / "find_toolbar.html"
    page.parent.mkdir(parents=True)
    page.write_text(PAGE, encoding="utf-8")
    docs = page_documents(page, "text/shared/find_toolbar.html")
    assert [d.title for d in docs] == ["Find Bar", "Find Bar: Find Text"]
    assert (
        docs[0].text.startswith("The Find toolbar can be used") and "Use the shortcut + F to quickly" in docs[0].text
    )
    assert "Command" not in docs[0].text and "navigation" not in docs[0].text and "footer" not in docs[1].text
    assert docs[1].doc_id == "text/shared/find_toolbar.html#1"
    facts = build(tmp_path / "help", tmp_path / "out", "en")
    assert facts == {"pages": 1, "held_out_pages": 0, "documents": 2, "characters": sum(len(d.text) for d in docs)}


def test_the_pages_dev_sets_are_cut_from_are_left_out(tmp_path):
    """Language modules are trained on this text, and the help's cross-lingual dev sets are cut from the pages
    whose path hashes into the dev share: those pages, and their paragraphs wherever else they appear, never reach
    the training text."""
    from rerank.collections.splits import is_dev

    kept, held = "text/shared/find_toolbar.html", "text/shared/p44.html"
    assert not is_dev(kept, 0.05) and is_dev(held, 0.05)
    for rel in (kept, held):
        page = tmp_path / "help" / rel
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(PAGE.replace("Find Bar", rel).replace("Find", f"Find ({rel})"), encoding="utf-8")
    facts = build(tmp_path / "help", tmp_path / "out", "en")
    # the kept page's section "Find Text" holds only a paragraph the dev page has too: it goes as well
    assert facts["pages"] == 2 and facts["held_out_pages"] == 1 and facts["documents"] == 1
    from rerank.collections.docs import read_docs

    docs = list(read_docs(tmp_path / "out" / "docs.en.jsonl"))
    assert {d.title.split(":")[0] for d in docs} == {kept}
    assert not any("Enter the text to be searched" in d.text for d in docs)
    every = build(tmp_path / "help", tmp_path / "all", "en", dev_fraction=0)
    assert every["held_out_pages"] == 0
    assert {d.title.split(":")[0] for d in read_docs(tmp_path / "all" / "docs.en.jsonl")} == {kept, held}


def test_a_translation_keeps_only_its_translated_paragraphs(tmp_path):
    rel = "text/shared/find_toolbar.html"
    en = tmp_path / "en-US" / rel
    tr = tmp_path / "tr" / rel
    for p in (en, tr):
        p.parent.mkdir(parents=True)
    en.write_text(PAGE, encoding="utf-8")
    # the Turkish page as a translation leaves it: the heading and the first paragraph translated, the rest not
    translated = PAGE.replace("Find Bar", "Bul Çubuğu").replace(
        'The <span class="menuitem">Find</span> toolbar can be used to quickly search the\n  contents of '
        "documents, and it opens at the bottom of the window.",
        '<span class="menuitem">Bul</span> araç çubuğu belgelerin içeriğinde hızlıca arama yapmak için '
        "kullanılır ve pencerenin altında açılır.",
    )
    assert translated != PAGE.replace("Find Bar", "Bul Çubuğu")
    tr.write_text(translated, encoding="utf-8")
    build(tmp_path / "tr", tmp_path / "out", "tr", untranslated_from=tmp_path / "en-US")
    build(tmp_path / "en-US", tmp_path / "out", "en")  # a second language beside the first
    from rerank.collections.docs import read_docs

    docs = list(read_docs(tmp_path / "out" / "docs.tr.jsonl"))
    assert [d.title for d in docs] == ["Bul Çubuğu"]  # the untranslated section is gone entirely
    assert docs[0].text.startswith("Bul araç çubuğu") and "Use the shortcut" not in docs[0].text
    assert len(list(read_docs(tmp_path / "out" / "docs.en.jsonl"))) == 2
    assert (tmp_path / "out" / "README.tr.md").is_file()
