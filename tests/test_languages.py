"""Language keys, the released mmBERT counts and the phase language sets."""

from __future__ import annotations

import pytest

from mmbert import languages
from mmbert.data import corpus


def test_key_parts():
    assert languages.iso3("cmn_Hans") == "cmn"
    assert languages.iso3("deu_Latn-1996") == "deu"
    assert languages.iso3("code") == "code"
    assert languages.script("cmn_Hant") == "Hant"
    assert languages.script("deu_Latn-1996") == "Latn"
    assert languages.script("code") is None
    assert languages.base_key("deu_Latn-1996") == "deu_Latn"


def test_released_counts():
    counts = languages.released_counts()
    assert set(counts) == set(languages.PHASES)
    assert len(counts["pretrain"]) == 1834
    nonzero = {phase: sum(v > 0 for v in c.values()) for phase, c in counts.items()}
    assert (nonzero["pretrain"], nonzero["ext"], nonzero["decay-all"]) == (61, 110, 1834)
    total = sum(counts["pretrain"].values())
    assert 1.9e12 < total < 2.1e12
    assert 0.33 < counts["pretrain"]["eng"] / total < 0.36  # English 34.5% of pre-training
    counts["pretrain"]["eng"] = 0  # callers get a copy
    assert languages.released_counts()["pretrain"]["eng"] > 0


def test_language_sets():
    s60, s110, s1833 = (languages.language_set(n) for n in ("mmbert-60", "mmbert-110", "mmbert-1833"))
    assert (len(s60), len(s110), len(s1833)) == (61, 110, 1834)
    assert "code" in s60 and "eng" in s60 and "cmn" in s60
    assert s60 <= s110 <= s1833
    with pytest.raises(ValueError, match="mmbert-60"):
        languages.language_set("mmbert-61")


def test_bundled_corpus_covers_pretraining_languages():
    # every pre-training language but code has a bundled declaration (through counts_code for 4 of them)
    have = {languages.counts_code(d.key) for d in corpus.load_udhr()}
    assert languages.language_set("mmbert-60") - have == {"code"}
    assert languages.counts_code("pes_Arab") == "fas" and languages.counts_code("eng_Latn") == "eng"


def test_to_key():
    assert languages.to_key("cmn") == "cmn_Hans"
    assert languages.to_key("eng") == "eng_Latn"
    assert languages.to_key("deu_Latn") == "deu_Latn"
    assert languages.to_key("code") == "code"
    assert languages.to_key("xyz", "Latn") == "xyz_Latn"
    with pytest.raises(ValueError, match="xyz"):
        languages.to_key("xyz")


def test_resolve_languages():
    keys = ["eng_Latn", "deu_Latn", "deu_Latn-1996", "cmn_Hans", "pes_Arab", "wol_Latn", "abc_Latn", "code"]
    assert languages.resolve_languages("all", keys) == sorted(keys)
    assert languages.resolve_languages("mmbert-60", keys) == [
        "cmn_Hans", "code", "deu_Latn", "deu_Latn-1996", "eng_Latn", "pes_Arab",
    ]  # fmt: skip
    assert "wol_Latn" in languages.resolve_languages("mmbert-1833", keys)
    assert languages.resolve_languages(["deu"], keys) == ["deu_Latn", "deu_Latn-1996"]
    assert languages.resolve_languages(["deu_Latn-1996", "fas"], keys) == ["deu_Latn-1996", "pes_Arab"]
    assert languages.resolve_languages("eng_Latn, code", keys) == ["code", "eng_Latn"]
    with pytest.raises(ValueError, match="fra, jpn_Jpan"):
        languages.resolve_languages(["eng", "fra", "jpn_Jpan"], keys)
    with pytest.raises(ValueError, match="unknown language set 'mmbert-99'"):
        languages.resolve_languages("mmbert-99", keys)


def test_unknown_keys_and_the_closest_known_ones():
    for key in ("eng_Latn", "deu_Latn-1996", "cmn_Hans", "code", "ory_Orya", "fil_Latn", "srp_Cyrl"):
        assert languages.check_key(key) == key
    for key, close in (
        ("zzz_Zzzz", "zul_Latn"),
        ("eng_Lant", "eng_Latn"),
        ("en_Latn", "eng_Latn"),
        ("fra_Cyrk", "fra_Latn"),
    ):
        with pytest.raises(languages.UnknownLanguageError, match=r"f.txt:3: unknown language key") as err:
            languages.check_key(key, "f.txt:3")
        assert close in str(err.value) and "--allow-unknown-languages" in str(err.value)
        assert close in languages.closest_keys(key)
