"""Document sources: local files (FineWeb2 layout, fields), HF datasets, MDS shards, the bundled corpus;
bad input is reported with file and line, or counted with a SkipReport."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from mmbert.data.prepare import prepare
from mmbert.data.shards import TokenStore
from mmbert.data.sources import (
    BadInputError,
    BundledSource,
    Document,
    HFSource,
    LocalFilesSource,
    MdsSource,
    SkipReport,
    lang_from_path,
    normalize_lang,
    open_source,
)
from tests.helpers.corpora import make_texts
from tests.helpers.mds import write_mds
from tests.helpers.tokenizer import make_tokenizer

# --------------------------------------------------------------------------------------------------
# Helpers


def _jsonl(path: Path, rows: list, raw_lines: dict[int, bytes] | None = None) -> Path:
    """Rows as JSON lines; `raw_lines` replaces 1-based lines with raw bytes (to plant bad input)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in rows]
    for lineno, raw in (raw_lines or {}).items():
        lines[lineno - 1] = raw
    data = b"\n".join(lines) + b"\n"
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _read_all(source, report=None):
    return [d for u in source.units() for d in source.read(u, "src", report)]


# --------------------------------------------------------------------------------------------------
# Languages


def test_lang_keys_and_paths():
    assert normalize_lang("fra_Latn", "f") == "fra_Latn"
    assert normalize_lang("deu_Latn-1996", "f") == "deu_Latn-1996"
    assert normalize_lang("code", "f") == "code"
    assert normalize_lang("fra", "f") == "fra_Latn"  # plain ISO 639-3 through mmbert.languages
    assert normalize_lang("cmn", "f") == "cmn_Hans"
    with pytest.raises(BadInputError, match=r"f:7: unknown language code: 'klingon'"):
        normalize_lang("klingon", "f", 7)
    with pytest.raises(BadInputError, match="unknown language code"):
        normalize_lang("zzz", "f", 1)  # well-formed but no known script
    assert lang_from_path(Path("data/fra_Latn/train/000.parquet")) == "fra_Latn"
    assert lang_from_path(Path("data/fra_Latn_removed/train/000.parquet")) is None
    assert lang_from_path(Path("fra_Latn.parquet")) is None


# --------------------------------------------------------------------------------------------------
# Local files


def test_local_files_fineweb2_layout(tmp_path):
    root = tmp_path / "data"
    _jsonl(root / "fra_Latn" / "train" / "a.jsonl", [{"text": "bonjour", "id": "x1"}, {"text": "salut"}])
    _jsonl(root / "deu_Latn" / "train" / "b.jsonl.gz", [{"text": "hallo"}])
    (root / "spa_Latn").mkdir()
    pq.write_table(pa.table({"text": ["hola", "adiós"], "extra": [1, 2]}), root / "spa_Latn" / "c.parquet")
    (root / "ell_Grek").mkdir()
    (root / "ell_Grek" / "d.txt").write_text("Γειά σου\nκόσμε\n", encoding="utf-8")
    (root / "README.md").write_text("not data")

    src = LocalFilesSource(root)
    assert len(src.units()) == 4
    docs = _read_all(src)
    got = sorted((d.lang, d.text) for d in docs)
    assert got == sorted(
        [("fra_Latn", "bonjour"), ("fra_Latn", "salut"), ("deu_Latn", "hallo"), ("spa_Latn", "hola"),
         ("spa_Latn", "adiós"), ("ell_Grek", "Γειά σου\nκόσμε\n")]
    )  # fmt: skip
    ids = {d.text: d.doc_id for d in docs}
    assert ids["bonjour"] == "x1" and ids["salut"] == "fra_Latn/train/a.jsonl:2"
    assert all(d.source == "src" for d in docs)
    # unit ids are stable and file-name safe
    assert [u.uid for u in src.units()] == [u.uid for u in LocalFilesSource(root).units()]
    assert all("/" not in u.uid for u in src.units())


def test_local_files_lang_field_and_fixed_lang(tmp_path):
    f = _jsonl(
        tmp_path / "mixed.jsonl",
        [{"content": "a", "language": "fra"}, {"content": "b", "language": "eng_Latn"}],
    )
    docs = _read_all(LocalFilesSource(f, text_field="content", lang_field="language"))
    assert [(d.lang, d.text) for d in docs] == [("fra_Latn", "a"), ("eng_Latn", "b")]
    docs = _read_all(LocalFilesSource(f, text_field="content", lang="ita_Latn"))
    assert {d.lang for d in docs} == {"ita_Latn"}
    # a .txt file has no fields: with --lang-field its language still comes from the path
    (tmp_path / "mixed" / "fra_Latn").mkdir(parents=True)
    (tmp_path / "mixed" / "fra_Latn" / "a.txt").write_text("le chat")
    _jsonl(tmp_path / "mixed" / "b.jsonl", [{"text": "x", "lang": "deu_Latn"}])
    docs = _read_all(LocalFilesSource(tmp_path / "mixed", lang_field="lang"))
    assert sorted((d.lang, d.text) for d in docs) == [("deu_Latn", "x"), ("fra_Latn", "le chat")]
    with pytest.raises(BadInputError, match="cannot tell the language"):
        _read_all(LocalFilesSource(f, text_field="content"))


@pytest.mark.parametrize(
    "raw, reason, lineno",
    [
        (b'{"text": "caf\xe9"}', "invalid UTF-8", 2),
        (b'{"text": "broken', "broken JSON line", 2),
        (b'{"body": "no text"}', "missing text field", 2),
        (b'{"text": "x", "lang": "xx_Yyyy_z"}', "unknown language code", 2),
        (b'{"text": "x", "lang": "qqq"}', "unknown language code", 2),
        (b'["a list"]', "not a JSON object", 2),
        (b'{"text": "   "}', "empty text", 2),
    ],
)
def test_bad_jsonl_lines_name_file_and_line(tmp_path, raw, reason, lineno):
    rows = [{"text": "good one", "lang": "fra_Latn"}] * 3
    f = _jsonl(tmp_path / "in.jsonl", rows, {lineno: raw})
    src = LocalFilesSource(f, lang_field="lang")
    with pytest.raises(BadInputError) as err:
        _read_all(src)
    assert err.value.reason == reason
    assert err.value.line == lineno
    assert str(err.value).startswith(f"{f}:{lineno}: {reason}")
    report = SkipReport()
    docs = _read_all(src, report)
    assert len(docs) == 2 and report.counts == {reason: 1}
    assert report.examples[0].startswith(f"{f}:{lineno}")


def test_bad_files(tmp_path):
    (tmp_path / "fra_Latn").mkdir()
    empty = tmp_path / "fra_Latn" / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(BadInputError, match=r"empty\.jsonl: empty file"):
        _read_all(LocalFilesSource(empty))
    blank = tmp_path / "fra_Latn" / "blank.jsonl"
    blank.write_bytes(b"\n\n")
    with pytest.raises(BadInputError, match="empty file"):
        _read_all(LocalFilesSource(blank))
    bad_txt = tmp_path / "fra_Latn" / "bad.txt"
    bad_txt.write_bytes(b"line one\nline \xff two\n")
    with pytest.raises(BadInputError, match=r"bad\.txt:2: invalid UTF-8"):
        _read_all(LocalFilesSource(bad_txt))
    truncated = tmp_path / "fra_Latn" / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(b'{"text": "a"}\n' * 100)[:40])
    with pytest.raises(BadInputError, match="unreadable file"):
        _read_all(LocalFilesSource(truncated))
    bad_parquet = tmp_path / "fra_Latn" / "x.parquet"
    bad_parquet.write_bytes(b"not parquet at all")
    with pytest.raises(BadInputError, match="unreadable parquet"):
        _read_all(LocalFilesSource(bad_parquet))
    # skip_bad carries on past every bad file and counts each
    report = SkipReport()
    docs = _read_all(LocalFilesSource(tmp_path), report)
    # the truncated gzip's readable lines come before its error
    assert {d.doc_id.split(":")[0] for d in docs} == {"fra_Latn/cut.jsonl.gz"}
    assert report.total == 5
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="no .jsonl"):
        LocalFilesSource(tmp_path / "nothing").units()


def test_parquet_missing_text_column_or_value(tmp_path):
    (tmp_path / "fra_Latn").mkdir()
    f = tmp_path / "fra_Latn" / "a.parquet"
    pq.write_table(pa.table({"body": ["a", "b"]}), f)
    with pytest.raises(BadInputError, match=r"a\.parquet: missing text field: no column 'text'"):
        _read_all(LocalFilesSource(f))
    report = SkipReport()
    assert _read_all(LocalFilesSource(f), report) == [] and report.counts == {"missing text field": 1}
    pq.write_table(pa.table({"text": ["a", None, "c"]}), f)
    with pytest.raises(BadInputError, match=r"a\.parquet:2: missing text field"):
        _read_all(LocalFilesSource(f))


def test_fingerprint_tracks_files_and_options(tmp_path):
    f = _jsonl(tmp_path / "fra_Latn" / "a.jsonl", [{"text": "a"}])
    fp = LocalFilesSource(tmp_path).fingerprint()
    assert LocalFilesSource(tmp_path).fingerprint() == fp
    assert LocalFilesSource(tmp_path, text_field="body").fingerprint() != fp
    _jsonl(f, [{"text": "a"}, {"text": "b"}])
    assert LocalFilesSource(tmp_path).fingerprint() != fp


# --------------------------------------------------------------------------------------------------
# Hugging Face datasets (local only)


def test_hf_saved_to_disk_and_parquet_dir(tmp_path):
    import datasets

    rows = {"text": [f"doc {i}" for i in range(7)], "lang": ["fra_Latn", "deu"] * 3 + ["eng_Latn"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"))
    src = HFSource(str(tmp_path / "saved"), lang_field="lang")
    src.chunk_rows = 3
    assert [u.docs for u in src.units()] == [3, 3, 1]
    docs = _read_all(src)
    assert [d.text for d in docs] == rows["text"]
    assert [d.lang for d in docs][:2] == ["fra_Latn", "deu_Latn"]
    assert src.fingerprint() == HFSource(str(tmp_path / "saved"), lang_field="lang").fingerprint()

    # a DatasetDict saved to disk, its split chosen by name
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "dd"))
    assert len(_read_all(HFSource(str(tmp_path / "dd"), lang_field="lang"))) == 7
    with pytest.raises(ValueError, match="no split 'test'"):
        HFSource(str(tmp_path / "dd"), lang_field="lang", split="test").units()

    # a local directory of parquet files through load_dataset, streaming and not
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table(rows), tmp_path / "pq" / "train-0.parquet")
    for streaming in (False, True):
        src = open_source(f"hf:{tmp_path / 'pq'}", lang_field="lang", streaming=streaming)
        assert [d.text for d in _read_all(src)] == rows["text"]


def test_hf_bad_rows_and_columns(tmp_path):
    import datasets

    rows = {"text": ["ok", "", "fine"], "lang": ["fra_Latn", "fra_Latn", "nope"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"))
    src = HFSource(str(tmp_path / "saved"), lang_field="lang")
    with pytest.raises(BadInputError, match=r"\[train\]:1: empty text"):
        _read_all(src)
    report = SkipReport()
    assert [d.text for d in _read_all(src, report)] == ["ok"]
    assert report.counts == {"empty text": 1, "unknown language code": 1}
    with pytest.raises(BadInputError, match="missing column"):
        HFSource(str(tmp_path / "saved"), text_field="body", lang_field="lang").units()
    with pytest.raises(ValueError, match="--lang-field"):
        HFSource(str(tmp_path / "saved"))


# --------------------------------------------------------------------------------------------------
# MDS shards


def _mds_samples(n: int, seed: int = 0, dtype=np.uint32) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"id": f"doc{i}", "input_ids": rng.integers(5, 250, rng.integers(1, 40)).astype(dtype)}
        for i in range(n)
    ]


@pytest.mark.parametrize("encoding", ["ndarray:uint32", "ndarray", "ndarray:uint16"])
@pytest.mark.parametrize("compression", [None, "zstd"])
def test_mds_roundtrip(tmp_path, encoding, compression):
    dtype = np.uint16 if encoding.endswith("uint16") else np.uint32
    samples = _mds_samples(25, dtype=dtype)
    root = tmp_path / "mds" / "fra_Latn"
    write_mds(
        root, {"id": "str", "input_ids": encoding}, samples, compression=compression, samples_per_shard=10
    )
    src = open_source(f"mds:{tmp_path / 'mds'}")
    units = src.units()
    assert len(units) == 3 and [u.docs for u in units] == [10, 10, 5]
    docs = _read_all(src)
    assert len(docs) == 25 and {d.lang for d in docs} == {"fra_Latn"}
    for d, s in zip(docs, samples, strict=True):
        np.testing.assert_array_equal(d.tokens, s["input_ids"])


def test_mds_merged_index_lang_column_and_fixed_columns(tmp_path):
    # a merged index (shards in sub-directories) with a fixed-size column before the token column
    root = tmp_path / "ds"
    samples = [
        {"input_ids": s["input_ids"], "lang": lang, "n": i}
        for i, (s, lang) in enumerate(zip(_mds_samples(6), ["fra_Latn", "deu_Latn", "eng"] * 2, strict=True))
    ]
    write_mds(
        root,
        {"input_ids": "ndarray:uint32", "lang": "str", "n": "int"},
        samples,
        compression="zstd",
        samples_per_shard=4,
        basename_prefix="part_a/",
    )
    src = MdsSource(root, lang_column="lang")
    docs = _read_all(src)
    assert [d.lang for d in docs] == ["fra_Latn", "deu_Latn", "eng_Latn"] * 2
    assert docs[5].doc_id.endswith("part_a/shard.00001.mds.zstd:1")
    # a tree of datasets without a top index: each index.json is a dataset
    write_mds(tmp_path / "tree" / "x" / "deu_Latn", {"input_ids": "ndarray"}, _mds_samples(3))
    write_mds(tmp_path / "tree" / "y" / "ita_Latn" / "split_0", {"input_ids": "ndarray"}, _mds_samples(2))
    docs = _read_all(MdsSource(tmp_path / "tree"))
    assert sorted(d.lang for d in docs) == ["deu_Latn"] * 3 + ["ita_Latn"] * 2


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_mds_text_column_is_tokenized_by_prepare(tmp_path, compression):
    """ModernBERT's pipeline writes a `text` column (`str`, often zstd): read as text, then tokenized."""
    texts = make_texts("fra_Latn", 25) + ["émigré \u00e0 Zürich \U0001f642", "x" * 3000]
    samples = [{"id": f"doc{i}", "text": t} for i, t in enumerate(texts)]
    write_mds(tmp_path / "mds" / "fra_Latn", {"id": "str", "text": "str"}, samples, compression=compression,
              samples_per_shard=10)  # fmt: skip
    docs = _read_all(open_source(f"mds:{tmp_path / 'mds'}"))
    assert all(isinstance(d, Document) for d in docs) and [d.text for d in docs] == texts
    assert (
        {d.lang for d in docs} == {"fra_Latn"}
        and ":1" in docs[11].doc_id
        and "shard.00001.mds" in docs[11].doc_id
    )
    tok = make_tokenizer(tmp_path / "tok", texts)
    prepare(open_source(f"mds:{tmp_path / 'mds'}"), tok, tmp_path / "data", name="web", progress=False)
    store = TokenStore(tmp_path / "data")
    assert store.num_docs("web", "fra_Latn") == len(texts)
    encoder = Tokenizer.from_file(str(tok / "tokenizer.json"))
    for i, text in enumerate(texts):
        expected = encoder.encode(text, add_special_tokens=False).ids
        assert store.doc("web", "fra_Latn", i).tolist() == expected
    # a named column wins over the defaults; a column that is neither token ids nor text is refused
    write_mds(tmp_path / "both" / "deu_Latn", {"input_ids": "ndarray:uint32", "text": "str", "meta": "json"},
              [{"input_ids": np.array([7, 8], np.uint32), "text": "hallo", "meta": {"a": 1}}])  # fmt: skip
    assert [d.tokens.tolist() for d in _read_all(MdsSource(tmp_path / "both"))] == [[7, 8]]
    assert [d.text for d in _read_all(MdsSource(tmp_path / "both", column="text"))] == ["hallo"]
    with pytest.raises(BadInputError, match="'meta' is 'json', not ndarray .token ids. or str .text."):
        _read_all(MdsSource(tmp_path / "both", column="meta"))
    write_mds(tmp_path / "other" / "deu_Latn", {"body": "str"}, [{"body": "x"}])
    with pytest.raises(BadInputError, match=r"missing MDS column.*none of \['input_ids', 'text'\]"):
        _read_all(MdsSource(tmp_path / "other"))


def test_mds_corrupt_and_missing(tmp_path):
    root = tmp_path / "fra_Latn"
    write_mds(root, {"input_ids": "ndarray:uint32"}, _mds_samples(5))
    shard = root / "shard.00000.mds"
    good = shard.read_bytes()
    shard.write_bytes(good[:-7])  # truncated
    with pytest.raises(BadInputError, match=r"shard\.00000\.mds: corrupt MDS shard"):
        _read_all(MdsSource(root))
    shard.unlink()
    with pytest.raises(BadInputError, match="missing MDS shard"):
        _read_all(MdsSource(root))
    shard.write_bytes(good)
    with pytest.raises(BadInputError, match="missing MDS column"):
        _read_all(MdsSource(root, column="tokens"))
    (root / "index.json").write_text("{not json")
    with pytest.raises(BadInputError, match=r"index\.json: corrupt MDS index"):
        MdsSource(root).units()
    write_mds(tmp_path / "zz", {"input_ids": "ndarray:uint32"}, _mds_samples(2), compression="zstd")
    (tmp_path / "zz" / "shard.00000.mds.zstd").write_bytes(b"garbage")
    with pytest.raises(BadInputError, match="corrupt MDS shard.*zstd"):
        _read_all(MdsSource(tmp_path / "zz", lang="fra_Latn"))


# --------------------------------------------------------------------------------------------------
# The bundled corpus


def test_bundled_units_partition_the_corpus():
    from mmbert.data import corpus

    src = BundledSource("train")
    units = src.units()
    docs = _read_all(src)
    expected = list(corpus.iter_documents(split="train"))
    assert sum(u.docs for u in units) == len(expected) == len(docs)
    assert sorted(d.doc_id for d in docs) == sorted(d.doc_id for d in expected)
    heldout = {d.doc_id for d in corpus.iter_documents(split="heldout")}
    assert heldout and not heldout & {d.doc_id for d in docs}
    assert all(normalize_lang(lang, "x") == lang for lang in {d.lang for d in docs})
    assert open_source("bundled:code").default_name == "code"
