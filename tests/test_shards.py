"""TokenStore: the manifest's tables, random access across shards and languages, clear errors for a
missing or corrupt shard."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmbert.data.prepare import prepare
from mmbert.data.shards import ShardError, TokenStore, UnionStore, open_data
from mmbert.data.sources import LocalFilesSource
from tests.conftest import WORDS, expected_docs, make_texts, make_tokenizer, write_corpus


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Two sources, three languages, small shards (several per language, shared across languages)."""
    base = tmp_path_factory.mktemp("store")
    tok = make_tokenizer(base / "tok", [t for lang in WORDS for t in make_texts(lang, 50, seed=3)])
    web = write_corpus(base / "web", files_per_lang=2, docs_per_file=25, seed=1)
    # a file mixing languages: its shards hold several languages
    mixed = base / "mixed"
    mixed.mkdir()
    rows = [{"text": t, "lang": lang} for lang in WORDS for t in make_texts(lang, 30, seed=5)]
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    (mixed / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = base / "data"
    prepare(LocalFilesSource(web), tok, data, name="web", shard_tokens=100, progress=False)
    prepare(
        LocalFilesSource(mixed, lang_field="lang"), tok, data, name="mixed", shard_tokens=200, progress=False
    )
    return data, tok, web, rows


def test_tables(prepared):
    data, _, _, _ = prepared
    store = TokenStore(data)
    assert store.sources() == ["mixed", "web"]
    assert store.languages() == sorted(WORDS) == store.languages("web") == store.languages("mixed")
    assert store.num_docs("web", "fra_Latn") == 50 and store.num_docs("mixed", "ell_Grek") == 30
    assert store.tokenizer["special_ids"]["mask"] == 4
    for source in store.sources():
        for lang in store.languages(source):
            lengths = store.doc_lengths(source, lang)
            assert len(lengths) == store.num_docs(source, lang)
            assert int(lengths.sum()) == store.num_tokens(source, lang)
    store.verify()
    with pytest.raises(KeyError, match="no source 'nope'"):
        store.num_docs("nope", "fra_Latn")
    with pytest.raises(KeyError, match="no language 'eng_Latn'"):
        store.doc("web", "eng_Latn", 0)


def test_random_access_matches_tokenizer(prepared):
    data, tok, web, rows = prepared
    store = TokenStore(data)
    expected = expected_docs(web, tok)
    assert len(store.manifest["sources"]["web"]["fra_Latn"]["shards"]) > 2
    rng = np.random.default_rng(0)
    for _ in range(200):  # random order: bisection across shards, lazily opened
        lang = str(rng.choice(sorted(WORDS)))
        i = int(rng.integers(0, store.num_docs("web", lang)))
        assert store.doc("web", lang, i).tolist() == expected[lang][i]
    # the mixed file: every language's documents in file order, though shards interleave languages
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(str(tok / "tokenizer.json"))
    for lang in WORDS:
        texts = [r["text"] for r in rows if r["lang"] == lang]
        got = [store.doc("mixed", lang, i).tolist() for i in range(store.num_docs("mixed", lang))]
        assert got == [t.encode(x, add_special_tokens=False).ids for x in texts]
    shards = {p for entry in store.manifest["sources"]["mixed"].values() for p in entry["shards"]}
    assert len(shards) < sum(len(e["shards"]) for e in store.manifest["sources"]["mixed"].values())
    doc = store.doc("web", "fra_Latn", 3)
    assert doc.dtype == np.uint32 and not doc.flags.writeable  # a view on the memory map
    with pytest.raises(IndexError, match="out of range"):
        store.doc("web", "fra_Latn", 50)
    with pytest.raises(IndexError):
        store.doc("web", "fra_Latn", -1)


def _copy(prepared, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(prepared[0], data)
    store = TokenStore(data)
    rel = store.manifest["sources"]["web"]["deu_Latn"]["shards"][1]
    return data, data / rel


def test_missing_shard_names_the_file(prepared, tmp_path):
    data, shard = _copy(prepared, tmp_path)
    shard.unlink()
    store = TokenStore(data)  # opening is lazy: the manifest alone is read
    store.doc("web", "fra_Latn", 0)
    with pytest.raises(ShardError, match=rf"{shard}: shard file missing"):
        store.verify()


def test_corrupt_shards_name_the_file(prepared, tmp_path):
    data, shard = _copy(prepared, tmp_path)
    raw = shard.read_bytes()
    shard.write_bytes(raw[:-8])  # truncated
    with pytest.raises(ShardError, match=rf"{shard}: "):
        TokenStore(data).verify()
    shard.write_bytes(b"garbage" * 20)
    with pytest.raises(ShardError, match=rf"{shard}: corrupt shard file"):
        TokenStore(data).verify()
    np.save(shard, np.zeros(3, dtype=np.int64))  # wrong dtype
    with pytest.raises(ShardError, match=rf"{shard}: expected a 1-D uint32 array"):
        TokenStore(data).verify()
    shard.write_bytes(raw)
    offsets = shard.with_name(shard.name.replace(".tokens.npy", ".offsets.npy"))
    o = np.load(offsets)
    np.save(offsets, o[:-1])  # fewer documents than the manifest's range
    with pytest.raises(ShardError, match=rf"{shard}: .*tokens but its offsets end"):
        TokenStore(data).verify()


def test_bad_manifest(prepared, tmp_path):
    data, _ = _copy(prepared, tmp_path)
    with pytest.raises(ShardError, match="no manifest"):
        TokenStore(tmp_path / "empty")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["sources"]["web"]["fra_Latn"]["docs"] += 1
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=r"web/fra_Latn lists 51 documents"):
        TokenStore(data)
    (data / "manifest.json").write_text("{")
    with pytest.raises(ShardError, match="corrupt manifest"):
        TokenStore(data)


def test_open_data_reads_several_directories_as_one(prepared, tmp_path):
    data, _ = _copy(prepared, tmp_path)
    assert isinstance(open_data([data]), TokenStore)
    # a second directory whose one source has another name (its shard paths are unchanged)
    other = tmp_path / "other"
    other.mkdir()
    (other / "web").symlink_to(data / "web")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["sources"] = {"web2": manifest["sources"]["web"]}
    (other / "manifest.json").write_text(json.dumps(manifest))
    union = open_data([data, other])
    assert isinstance(union, UnionStore)
    assert union.sources() == ["mixed", "web", "web2"] and union.languages() == sorted(WORDS)
    assert union.languages("web2") == sorted(WORDS)
    store = TokenStore(data)
    assert union.num_docs("web2", "ell_Grek") == store.num_docs("web", "ell_Grek")
    assert union.num_tokens("mixed", "deu_Latn") == store.num_tokens("mixed", "deu_Latn")
    assert union.doc("web2", "fra_Latn", 7).tolist() == store.doc("web", "fra_Latn", 7).tolist()
    with pytest.raises(ShardError, match="mixed/deu_Latn is in both"):
        open_data([data, prepared[0]])
    # a source spread over two directories, one language in each (a language added to a mixture)
    manifest["sources"] = {"web": {"ell_Grek": manifest["sources"]["web2"].pop("ell_Grek")}}
    (other / "manifest.json").write_text(json.dumps(manifest))
    (data / "manifest.json").write_text(
        json.dumps({**json.loads((data / "manifest.json").read_text()), "sources": {"web": {
            lang: entry for lang, entry in store.manifest["sources"]["web"].items() if lang != "ell_Grek"}}})
    )  # fmt: skip
    union = open_data([data, other])
    assert union.sources() == ["web"] and union.languages("web") == sorted(WORDS)
    assert union.doc("web", "ell_Grek", 3).tolist() == store.doc("web", "ell_Grek", 3).tolist()
    assert union.doc("web", "fra_Latn", 3).tolist() == store.doc("web", "fra_Latn", 3).tolist()
