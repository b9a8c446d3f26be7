"""TokenStore: the manifest's tables, random access across shards and languages, clear errors for a
missing or corrupt shard."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmbert.data.prepare import prepare
from mmbert.data.shards import ShardError, TokenStore, UnionStore, open_data
from mmbert.data.sources import LocalFilesSource
from tests.helpers.corpora import WORDS, expected_docs, make_texts, write_corpus
from tests.helpers.tokenizer import make_tokenizer


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
    # a source spread over two directories, one language in each (a language added to a mixture,
    # prepared from other data: another fingerprint)
    manifest["sources"] = {"web": {"ell_Grek": manifest["sources"]["web2"].pop("ell_Grek")}}
    manifest["source_info"]["web"]["fingerprint"] = {"kind": "files", "sha256": "another"}
    (other / "manifest.json").write_text(json.dumps(manifest))
    (data / "manifest.json").write_text(
        json.dumps({**json.loads((data / "manifest.json").read_text()), "sources": {"web": {
            lang: entry for lang, entry in store.manifest["sources"]["web"].items() if lang != "ell_Grek"}}})
    )  # fmt: skip
    union = open_data([data, other])
    assert union.sources() == ["web"] and union.languages("web") == sorted(WORDS)
    assert union.doc("web", "ell_Grek", 3).tolist() == store.doc("web", "ell_Grek", 3).tolist()
    assert union.doc("web", "fra_Latn", 3).tolist() == store.doc("web", "fra_Latn", 3).tolist()
    # one cell in two directories (prepared in pieces): its documents are the first's, then the second's
    whole = store.manifest["sources"]["web"]["fra_Latn"]
    assert len(whole["shards"]) > 2
    halves = []
    for part in (slice(0, 2), slice(2, None)):
        entry = {key: whole[key][part] for key in ("shards", "ranges", "ids")}
        entry["docs"] = sum(b - a for a, b in entry["ranges"])
        entry["tokens"] = -1  # recomputed below
        halves.append(entry)
    lengths = store.doc_lengths("web", "fra_Latn")
    halves[0]["tokens"] = int(lengths[: halves[0]["docs"]].sum())
    halves[1]["tokens"] = int(lengths[halves[0]["docs"] :].sum())
    for root, entry in zip((data, other), halves, strict=True):
        m = json.loads((root / "manifest.json").read_text())
        m["sources"] = {"web": {"fra_Latn": entry}}
        (root / "manifest.json").write_text(json.dumps(m))
    union = open_data([data, other])
    assert union.num_docs("web", "fra_Latn") == store.num_docs("web", "fra_Latn") == 50
    assert union.num_tokens("web", "fra_Latn") == store.num_tokens("web", "fra_Latn")
    assert [union.doc("web", "fra_Latn", i).tolist() for i in range(50)] == [
        store.doc("web", "fra_Latn", i).tolist() for i in range(50)
    ]
    with pytest.raises(IndexError):
        union.doc("web", "fra_Latn", 50)
    assert [union.doc_length("web", "fra_Latn", i) for i in range(50)] == lengths.tolist()


def _tiny_shards(data, n_shards: int, docs: int = 3) -> None:
    """`n_shards` shards of one language written directly (document j of shard k is [k, j])."""
    from mmbert.data.manifest import language_entries, new_manifest, write_manifest

    (data / "web").mkdir(parents=True)
    shards = []
    for k in range(n_shards):
        np.save(data / f"web/u.{k}.offsets.npy", np.arange(0, 2 * docs + 1, 2, dtype=np.int64))
        np.save(data / f"web/u.{k}.tokens.npy", np.array([[k, j] for j in range(docs)], np.uint32).ravel())
        shards.append({"path": f"web/u.{k}.tokens.npy", "langs": {"fra_Latn": [0, docs, 2 * docs]},
                       "ids": [0, max(k, docs - 1)]})  # fmt: skip
    manifest = new_manifest()
    manifest["tokenizer"] = {"vocab_size": 1 << 20, "special_ids": {}, "sha256": "x"}
    manifest["sources"]["web"] = language_entries(shards)
    write_manifest(data, manifest)


LOW_LIMIT = """
import os, resource, sys
import numpy as np
from mmbert.data.shards import OpenFilesError, TokenStore
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
data, n, cache = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = TokenStore(data, vocab_size=1 << 20, max_open_shards=cache)
order = np.random.default_rng(0).permutation(3 * n)
for i in list(order) + list(range(3 * n)):  # random, then every shard in turn
    assert store.doc("web", "fra_Latn", int(i)).tolist() == [i // 3, i % 3]
fds = len(os.listdir("/proc/self/fd"))
print("open shards", store.open_shards, "cache", store.max_open_shards, "fds", fds, "opens", store.shard_opens)
store.close()
held = []
try:  # use up every descriptor: the limit is named, not the shard
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
try:
    store.doc("web", "fra_Latn", 5)
except OpenFilesError as e:
    print("limit:", e)
"""


@pytest.mark.parametrize("cache", [64, 1000])
def test_thousands_of_shards_under_a_low_descriptor_limit(tmp_path, cache):
    """3,000 shards read at random under `ulimit -n 256`: open shards stay bounded (a cache larger than
    the limit allows shrinks to what fits), and running out of descriptors is reported as such."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    _tiny_shards(tmp_path / "data", 3000)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", LOW_LIMIT, str(tmp_path / "data"), "3000", str(cache)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    words = proc.stdout.split()
    open_shards, kept, fds = int(words[2]), int(words[4]), int(words[6])
    assert open_shards <= kept <= min(cache, 128) and fds < 256
    assert "limit: " in proc.stdout and "cannot open the shard: Too many open files" in proc.stdout
    assert "corrupt" not in proc.stdout + proc.stderr


def test_token_id_ranges_come_from_the_manifest(prepared, tmp_path):
    """prepare records each shard's id range; a run checks it without reading shards; an old manifest
    (no ranges) is checked once and upgraded in place."""
    data, shard = _copy(prepared, tmp_path)
    manifest = json.loads((data / "manifest.json").read_text())
    ranges = manifest["sources"]["web"]["deu_Latn"]["ids"]
    assert all(0 <= lo <= hi < 300 for lo, hi in ranges)
    top = max(hi for langs in manifest["sources"].values() for e in langs.values() for _, hi in e["ids"])
    store = TokenStore(data, vocab_size=top + 1)
    store.check_vocabulary()
    assert store.shard_opens == 0  # nothing read to check the ids
    with pytest.raises(ShardError, match=rf"{data}/\w+/\S+\.tokens\.npy: token id {top} is outside"):
        TokenStore(data, vocab_size=top).doc("web", "fra_Latn", 0)  # the first read checks them all
    # an old manifest: the ranges are recorded once, the manifest rewritten with them
    for langs in manifest["sources"].values():
        for e in langs.values():
            del e["ids"]
    (data / "manifest.json").write_text(json.dumps(manifest))
    TokenStore(data)  # without a vocabulary nothing is checked or written
    assert "ids" not in json.loads((data / "manifest.json").read_text())["sources"]["web"]["deu_Latn"]
    TokenStore(data, vocab_size=1000).doc("web", "fra_Latn", 0)
    upgraded = json.loads((data / "manifest.json").read_text())
    assert upgraded["sources"]["web"]["deu_Latn"]["ids"] == ranges
    # a shard changed after prepare: caught when one of its documents is read
    tokens = np.load(shard)
    tokens[:] = 999
    np.save(shard, tokens)
    store = TokenStore(data, vocab_size=500)
    with pytest.raises(ShardError, match=rf"{shard}: token id 999 .* the shard changed after `prepare`"):
        for i in range(store.num_docs("web", "deu_Latn")):
            store.doc("web", "deu_Latn", i)
    with pytest.raises(ShardError, match=rf"{shard}: holds ids in \[999, 999\]"):
        TokenStore(data).verify()


def test_a_reopened_shard_reads_only_its_document(prepared, tmp_path):
    """With more shards than the cache holds, a draw reopens its shard: its headers and end offsets,
    checked at the first open, are not read again (a file whose size changed is checked again)."""
    data, _ = _copy(prepared, tmp_path)
    store = TokenStore(data, max_open_shards=1)
    entry = store.manifest["sources"]["web"]["deu_Latn"]
    n0 = entry["ranges"][0][1] - entry["ranges"][0][0]  # documents 0 .. n0 - 1 are in shard 0
    store.doc("web", "deu_Latn", n0 - 1)
    store.doc("web", "deu_Latn", n0)  # shard 1: closes shard 0
    before = store.bytes_read
    tokens = store.doc("web", "deu_Latn", n0 - 1)  # reopens shard 0
    assert store.bytes_read - before == 16 + tokens.nbytes and store.shard_opens == 3
    tokens_file = data / entry["shards"][0]
    np.save(tokens_file, np.load(tokens_file)[:-1])  # changed: checked again, and found wrong
    store.doc("web", "deu_Latn", n0)
    with pytest.raises(ShardError, match=rf"{tokens_file}: .*tokens but its offsets end"):
        store.doc("web", "deu_Latn", 0)


def test_ranks_upgrading_an_old_manifest_together_scan_it_once(prepared, tmp_path):
    """Ranks starting at once on a manifest without id ranges: one scans and records them (under the
    data directory's lock), the others wait and read them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    data, _ = _copy(prepared, tmp_path)
    manifest = json.loads((data / "manifest.json").read_text())
    for langs in manifest["sources"].values():
        for entry in langs.values():
            del entry["ids"]
    (data / "manifest.json").write_text(json.dumps(manifest))
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from mmbert.data.shards import TokenStore\n"
        "TokenStore(sys.argv[1], vocab_size=1000).check_vocabulary()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    ranks = [
        subprocess.Popen([sys.executable, "-c", code, str(data)], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    logs = [rank.communicate(timeout=120)[1] for rank in ranks]
    assert all(rank.returncode == 0 for rank in ranks), logs
    assert sum("recording each shard's token-id range" in log for log in logs) == 1
    assert "ids" in json.loads((data / "manifest.json").read_text())["sources"]["web"]["fra_Latn"]


def test_an_old_manifest_in_a_read_only_directory_is_not_scanned(prepared, tmp_path, monkeypatch, caplog):
    """A shared read-only dataset prepared before id ranges were recorded: the run goes on without
    reading every shard (each document is checked as it is read), and the warning says how to record
    them. A corrupt shard met while recording them is named."""
    import errno
    import logging
    import os

    from mmbert.process import LOCK_FILE

    data, shard = _copy(prepared, tmp_path)
    manifest = json.loads((data / "manifest.json").read_text())
    for langs in manifest["sources"].values():
        for entry in langs.values():
            del entry["ids"]
    (data / "manifest.json").write_text(json.dumps(manifest))
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    store = TokenStore(data, vocab_size=1000)
    with caplog.at_level(logging.WARNING, logger="mmbert.data.shards"):
        doc = store.doc("web", "deu_Latn", 0)
    assert doc.size and store.shard_opens == 1  # the document's shard only
    assert f"{data / LOCK_FILE}: Read-only file system" in caplog.text and "record_id_ranges(" in caplog.text
    assert "ids" not in json.loads((data / "manifest.json").read_text())["sources"]["web"]["deu_Latn"]
    with pytest.raises(ShardError, match="outside the model's vocabulary of 5"):  # still checked per document
        TokenStore(data, vocab_size=5).doc("web", "deu_Latn", 0)
    monkeypatch.setattr(os, "open", real_open)
    caplog.clear()
    with monkeypatch.context() as m, caplog.at_level(logging.WARNING, logger="mmbert.data.shards"):
        m.setattr(os, "access", lambda path, mode: False)  # a lock file it may write, a directory it may not
        TokenStore(data, vocab_size=1000).check_vocabulary()
    assert f"{data}: not writable" in caplog.text
    np.save(shard, np.load(shard)[:-1])  # corrupt: shorter than its offsets say
    with pytest.raises(ShardError, match=rf"{shard}: .*tokens but its offsets end"):
        TokenStore(data, vocab_size=1000).check_vocabulary()
    assert "ids" not in json.loads((data / "manifest.json").read_text())["sources"]["web"]["deu_Latn"]
