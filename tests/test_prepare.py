"""`mmbert prepare`: shards and manifest, parallel = serial, resume after an error or a kill,
fingerprint/tokenizer checks, several sources in one DATA dir, MDS and HF sources, the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mmbert import cli
from mmbert.data import prepare as prep
from mmbert.data.manifest import ManifestError
from mmbert.data.prepare import PrepareError, prepare
from mmbert.data.shards import ShardError, TokenStore
from mmbert.data.sources import BadInputError, LocalFilesSource, open_source
from mmbert.io import OutputRefusedError, UnsafePathError
from mmbert.tokenizer import read_tokenizer_files
from tests.helpers.corpora import WORDS, expected_docs, make_texts, write_corpus
from tests.helpers.files import dir_with
from tests.helpers.mds import write_mds
from tests.helpers.processes import child_pids, running
from tests.helpers.tokenizer import make_tokenizer


@pytest.fixture(scope="module")
def tokdir(tmp_path_factory) -> Path:
    texts = [t for lang in WORDS for t in make_texts(lang, 50, seed=7)]
    return make_tokenizer(tmp_path_factory.mktemp("tok"), texts)


def store_docs(store: TokenStore, source: str) -> dict[str, list[list[int]]]:
    return {
        lang: [store.doc(source, lang, i).tolist() for i in range(store.num_docs(source, lang))]
        for lang in store.languages(source)
    }


def no_temporaries(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_prepare_local_files(tmp_path, tokdir):
    root = write_corpus(tmp_path / "corpus")
    data = tmp_path / "data"
    result = prepare(LocalFilesSource(root), tokdir, data, name="web", workers=1, progress=False)
    assert result.units_total == 6 and result.units_resumed == 0 and result.docs == 120

    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["version"] == 1
    tok = manifest["tokenizer"]
    assert tok["special_ids"] == {"pad": 0, "eos": 1, "bos": 2, "unk": 3, "mask": 4}
    assert tok["vocab_size"] == 300 and len(tok["sha256"]) == 64
    assert set(manifest["sources"]["web"]) == set(WORDS)
    info = manifest["source_info"]["web"]
    assert info["fingerprint"] == LocalFilesSource(root).fingerprint() and info["kind"] == "files"

    expected = expected_docs(root, tokdir)
    store = TokenStore(data)
    assert store.sources() == ["web"] and store.languages() == sorted(WORDS)
    assert store_docs(store, "web") == expected
    for lang, docs in expected.items():
        assert store.num_docs("web", lang) == len(docs) == 40
        assert store.num_tokens("web", lang) == sum(map(len, docs))
        assert manifest["sources"]["web"][lang]["tokens"] == sum(map(len, docs))
    # no special tokens in the shards
    assert all(min(d) > 4 for docs in expected.values() for d in docs)
    assert no_temporaries(data)


def test_workers_and_shard_size_do_not_change_the_data(tmp_path, tokdir):
    root = write_corpus(tmp_path / "corpus", files_per_lang=2, docs_per_file=15)
    prepare(LocalFilesSource(root), tokdir, tmp_path / "one", workers=1, progress=False)
    result = prepare(
        LocalFilesSource(root), tokdir, tmp_path / "two", workers=2, shard_tokens=50, progress=False
    )
    one, two = TokenStore(tmp_path / "one"), TokenStore(tmp_path / "two")
    name = result.name
    assert one.manifest["sources"][name].keys() == two.manifest["sources"][name].keys()
    assert store_docs(one, name) == store_docs(two, name)
    for lang in WORDS:  # small shards: several per language, the last one may be short
        assert len(two.manifest["sources"][name][lang]["shards"]) > len(
            one.manifest["sources"][name][lang]["shards"]
        )
        assert one.num_tokens(name, lang) == two.num_tokens(name, lang)


def test_bad_input_stops_then_resume_finishes(tmp_path, tokdir):
    root = write_corpus(tmp_path / "corpus", files_per_lang=1)
    bad = root / "fra_Latn" / "train" / "000.jsonl"  # the last unit in (path) order
    good_text = bad.read_text()
    lines = good_text.splitlines()
    lines[4] = '{"text": "broken'
    bad.write_text("\n".join(lines) + "\n")
    data = tmp_path / "data"
    with pytest.raises(BadInputError, match=rf"{bad}:5: broken JSON line"):
        prepare(LocalFilesSource(root), tokdir, data, name="web", workers=1, progress=False)
    # the finished units are recorded; nothing half-written; no manifest for an unfinished source
    assert len(list((data / "web" / "_units").glob("*.json"))) == 2
    assert not (data / "manifest.json").exists() and no_temporaries(data)
    # the same data again is refused: the fingerprint is the same, so it resumes -- and stops again
    with pytest.raises(BadInputError):
        prepare(LocalFilesSource(root), tokdir, data, name="web", workers=2, progress=False)
    # --skip-bad resumes: only the bad unit is redone, the bad line is counted
    result = prepare(LocalFilesSource(root), tokdir, data, name="web", skip_bad=True, progress=False)
    assert result.units_resumed == 2 and result.skipped["counts"] == {"broken JSON line": 1}
    assert result.docs == 59
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["source_info"]["web"]["skipped"]["counts"] == {"broken JSON line": 1}


def _prepare_command(root: Path, tokdir: Path, data: Path, workers: int) -> list[str]:
    """`mmbert prepare` of the corpus at `root` into `data`, as a process of its own (to be killed)."""
    return [sys.executable, "-m", "mmbert.cli", "prepare", "--source", str(root), "--tokenizer", str(tokdir),
            "--out", str(data), "--name", "web", "--workers", str(workers), "--no-progress"]  # fmt: skip


def test_interrupted_run_resumes_to_the_same_result(tmp_path, tokdir):
    """Kill a prepare process mid-run: what is on disk is whole, and a rerun finishes the rest."""
    root = write_corpus(tmp_path / "corpus", files_per_lang=12, docs_per_file=400)
    data = tmp_path / "data"
    cmd = _prepare_command(root, tokdir, data, workers=1)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    units = data / "web" / "_units"
    while time.monotonic() < deadline and proc.poll() is None:
        if units.exists() and len(list(units.glob("*.json"))) >= 2:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "prepare finished before it could be killed: make the corpus larger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (data / "manifest.json").exists()
    # every shard under a real name is complete
    for tokens in data.rglob("*.tokens.npy"):
        offsets = np.load(str(tokens).replace(".tokens.npy", ".offsets.npy"))
        assert offsets[-1] == len(np.load(tokens))
    finished = len(list(units.glob("*.json")))
    assert 2 <= finished < 36  # killed after two units, before the last
    result = prepare(LocalFilesSource(root), tokdir, data, name="web", progress=False)
    assert result.units_resumed == finished and result.units_total == 36
    assert no_temporaries(data)
    assert store_docs(TokenStore(data), "web") == expected_docs(root, tokdir)


def test_exception_mid_unit_leaves_no_partial_files(tmp_path, tokdir, monkeypatch):
    """An exception while a unit has written some shards: the unit is not recorded and its files are
    replaced on the rerun (small --shard-tokens so the unit writes shards before failing)."""
    root = write_corpus(tmp_path / "corpus", files_per_lang=1, docs_per_file=600)
    data = tmp_path / "data"
    real_read = LocalFilesSource.read

    def failing_read(self, unit, source_name, report=None):
        for i, doc in enumerate(real_read(self, unit, source_name, report)):
            if i == 550 and "deu_Latn" in unit.arg:  # after two batches of 256 documents
                raise RuntimeError("disk on fire")
            yield doc

    monkeypatch.setattr(LocalFilesSource, "read", failing_read)
    with pytest.raises(RuntimeError, match="disk on fire"):
        prepare(LocalFilesSource(root), tokdir, data, name="web", shard_tokens=2000, progress=False)
    assert list((data / "web").glob("deu_Latn*.npy"))  # whole shards under real names, but no record
    assert no_temporaries(data)
    assert len(list((data / "web" / "_units").glob("*.json"))) == 0  # deu_Latn is the first unit
    monkeypatch.setattr(LocalFilesSource, "read", real_read)
    prepare(LocalFilesSource(root), tokdir, data, name="web", shard_tokens=2000, progress=False)
    assert store_docs(TokenStore(data), "web") == expected_docs(root, tokdir)


def test_changed_source_or_tokenizer_needs_overwrite(tmp_path, tokdir):
    root = write_corpus(tmp_path / "corpus", files_per_lang=1, docs_per_file=5)
    data = tmp_path / "data"
    prepare(LocalFilesSource(root), tokdir, data, name="web", progress=False)
    again = prepare(LocalFilesSource(root), tokdir, data, name="web", progress=False)
    assert again.units_resumed == again.units_total == 3  # nothing to do
    # change a file: the fingerprint changes
    f = root / "fra_Latn" / "train" / "000.jsonl"
    f.write_text(f.read_text() + json.dumps({"text": "le chat"}) + "\n")
    with pytest.raises(PrepareError, match="fingerprint changed"):
        prepare(LocalFilesSource(root), tokdir, data, name="web", progress=False)
    # --overwrite drops the old shards from the manifest before it starts: a failed rerun lists none
    f.write_text(f.read_text() + "{broken\n")
    with pytest.raises(BadInputError):
        prepare(LocalFilesSource(root), tokdir, data, name="web", overwrite=True, progress=False)
    assert "web" not in json.loads((data / "manifest.json").read_text())["sources"]
    f.write_text("".join(f.read_text().splitlines(keepends=True)[:-1]))
    result = prepare(LocalFilesSource(root), tokdir, data, name="web", overwrite=True, progress=False)
    assert result.units_resumed == 0 and TokenStore(data).num_docs("web", "fra_Latn") == 6
    # another tokenizer: refused, then --overwrite starts DATA afresh
    other = make_tokenizer(tmp_path / "tok2", make_texts("deu_Latn", 30), vocab_size=280)
    with pytest.raises(PrepareError, match="another tokenizer"):
        prepare(LocalFilesSource(root), other, data, name="more", progress=False)
    prepare(LocalFilesSource(root), other, data, name="more", overwrite=True, progress=False)
    store = TokenStore(data)
    assert store.sources() == ["more"] and store.tokenizer["vocab_size"] == 280
    assert not (data / "web").exists()


def _prepared_without_its_tokenizer(tmp_path: Path, tokdir: Path, docs_per_file: int) -> tuple[Path, Path]:
    """A small corpus prepared into DATA whose manifest then lost its `tokenizer` entry: (corpus, DATA)."""
    root = write_corpus(tmp_path / "corpus", files_per_lang=1, docs_per_file=docs_per_file)
    data = tmp_path / "data"
    prepare(LocalFilesSource(root), tokdir, data, name="web", progress=False)
    manifest = json.loads((data / "manifest.json").read_text())
    del manifest["tokenizer"]
    (data / "manifest.json").write_text(json.dumps(manifest))
    return root, data


def test_prepare_repairs_a_manifest_and_a_shard_cut_short(tmp_path, tokdir):
    """What the errors promise: `--overwrite` rebuilds a manifest without its tokenizer entry, and a
    rerun prepares again the unit of a shard cut short."""
    root, data = _prepared_without_its_tokenizer(tmp_path, tokdir, docs_per_file=5)
    with pytest.raises(ManifestError, match="no 'tokenizer' entry.*--overwrite"):
        prepare(LocalFilesSource(root), tokdir, data, name="web", progress=False)
    repaired = prepare(LocalFilesSource(root), tokdir, data, name="web", overwrite=True, progress=False)
    assert repaired.units_total == 3 and repaired.manifest_path.is_file()
    store = TokenStore(data)
    assert store.tokenizer is not None and store.num_docs("web", "fra_Latn") == 5
    shard = next((data / "web").glob("*.tokens.npy"))
    whole = shard.read_bytes()
    shard.write_bytes(whole[: len(whole) // 2])
    again = prepare(LocalFilesSource(root), tokdir, data, name="web", progress=False)
    assert again.units_resumed == 2 and again.tokens_this_run > 0 and shard.read_bytes() == whole


def test_sources_merge_into_one_manifest(tmp_path, tokdir):
    data = tmp_path / "data"
    a = write_corpus(tmp_path / "a", files_per_lang=1, docs_per_file=4, seed=1)
    b = write_corpus(tmp_path / "b", files_per_lang=1, docs_per_file=6, seed=2)
    prepare(LocalFilesSource(a), tokdir, data, name="web", progress=False)
    prepare(LocalFilesSource(b), tokdir, data, name="books", progress=False)
    store = TokenStore(data)
    assert store.sources() == ["books", "web"]
    assert store.num_docs("web", "fra_Latn") == 4 and store.num_docs("books", "fra_Latn") == 6
    assert store_docs(store, "books") == expected_docs(b, tokdir)
    with pytest.raises(PrepareError, match="source name"):
        prepare(LocalFilesSource(a), tokdir, data, name="../evil", progress=False)


def test_bundled_heldout_source(tmp_path, tokdir):
    from mmbert.data import corpus

    result = prepare(open_source("bundled:heldout"), tokdir, tmp_path / "data", workers=1, progress=False)
    docs = list(corpus.iter_documents(split="heldout"))
    assert result.name == "udhr-heldout" and result.docs == len(docs)
    store = TokenStore(tmp_path / "data")
    assert len(store.languages("udhr-heldout")) == len({d.lang for d in docs})


def test_hf_source(tmp_path, tokdir):
    import datasets

    texts = make_texts("fra_Latn", 9) + make_texts("deu_Latn", 5)
    rows = {"text": texts, "lang": ["fra"] * 9 + ["deu_Latn"] * 5}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"))
    src = open_source(f"hf:{tmp_path / 'ds'}", lang_field="lang")
    src.chunk_rows = 4
    result = prepare(src, tokdir, tmp_path / "data", name="hf", workers=2, progress=False)
    assert result.units_total == 4 and result.langs["fra_Latn"]["docs"] == 9
    store = TokenStore(tmp_path / "data")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(read_tokenizer_files(tokdir).text)
    assert store.doc("hf", "deu_Latn", 4).tolist() == tok.encode(texts[13], add_special_tokens=False).ids


def test_mds_source_strips_specials_and_checks_ids(tmp_path, tokdir):

    rng = np.random.default_rng(0)
    bodies = [rng.integers(5, 300, rng.integers(1, 30)).astype(np.uint32) for _ in range(12)]
    samples = [
        {"id": f"d{i}", "input_ids": np.concatenate([[2], b, [1]]).astype(np.uint32)}
        for i, b in enumerate(bodies)
    ]
    write_mds(tmp_path / "mds" / "fra_Latn", {"id": "str", "input_ids": "ndarray:uint32"}, samples,
              compression="zstd", samples_per_shard=5)  # fmt: skip
    prepare(open_source(f"mds:{tmp_path / 'mds'}"), tokdir, tmp_path / "data", name="mds", progress=False)
    store = TokenStore(tmp_path / "data")
    assert [store.doc("mds", "fra_Latn", i).tolist() for i in range(12)] == [b.tolist() for b in bodies]
    # ids beyond the tokenizer's vocabulary: another tokenizer's data
    write_mds(
        tmp_path / "big" / "fra_Latn",
        {"input_ids": "ndarray:uint32"},
        [{"input_ids": np.array([7, 300_000], np.uint32)}],
    )
    with pytest.raises(BadInputError, match="token id out of range.*another tokenizer"):
        prepare(open_source(f"mds:{tmp_path / 'big'}"), tokdir, tmp_path / "data2", progress=False)


def test_real_tokenizer_directory(tmp_path):
    """A directory written by `mmbert tokenizer` (transformers' save_pretrained) is read the same way."""
    from mmbert.tokenizer import load_tokenizer, save_tokenizer
    from mmbert.tokenizer_training import train_tokenizer

    texts = {lang: make_texts(lang, 40) for lang in WORDS}
    tokdir = save_tokenizer(train_tokenizer(texts, vocab_size=400, model="bpe"), tmp_path / "tok")
    root = write_corpus(tmp_path / "corpus", files_per_lang=1, docs_per_file=5)
    prepare(LocalFilesSource(root), tokdir, tmp_path / "data", name="web", progress=False)
    store = TokenStore(tmp_path / "data")
    assert store.tokenizer["special_ids"] == {"pad": 0, "eos": 1, "bos": 2, "unk": 3, "mask": 4}
    hf = load_tokenizer(tokdir)
    assert store.tokenizer["vocab_size"] == len(hf)
    text = json.loads((root / "ell_Grek" / "train" / "000.jsonl").read_text().splitlines()[2])["text"]
    assert store.doc("web", "ell_Grek", 2).tolist() == hf(text, add_special_tokens=False)["input_ids"]


def test_cli(tmp_path, tokdir, capsys):
    root = write_corpus(tmp_path / "corpus", files_per_lang=1, docs_per_file=3)
    bad = root / "fra_Latn" / "train" / "000.jsonl"
    bad.write_bytes(bad.read_bytes() + b'{"text": "caf\xe9"}\n')
    args = [
        "--source",
        str(root),
        "--tokenizer",
        str(tokdir),
        "--out",
        str(tmp_path / "data"),
        "--no-progress",
    ]
    assert cli.main(["prepare", *args]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4: invalid UTF-8" in err and "--skip-bad" in err
    assert cli.main(["prepare", *args, "--skip-bad", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "prepared corpus: 9 documents" in out and "skipped 1 bad records: invalid UTF-8 1" in out
    missing = ["--source", str(tmp_path / "missing"), "--tokenizer", str(tokdir)]
    assert cli.main(["prepare", *missing, "--out", str(tmp_path / "d")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "badtok").mkdir()
    (tmp_path / "badtok" / "tokenizer.json").write_text("{}")
    badtok = ["--source", str(root), "--tokenizer", str(tmp_path / "badtok"), "--out", str(tmp_path / "d")]
    assert cli.main(["prepare", *badtok]) == 2
    assert "badtok/tokenizer.json: not a tokenizer" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- hardening
def test_paths_from_the_manifest_or_a_unit_record_never_leave_data(tmp_path, tokdir):
    """A manifest naming a source `../victim` (the seen bug: --overwrite deleted it), a shard path
    outside DATA, a unit record pointing elsewhere: each is a clear error, and nothing is deleted."""
    root = write_corpus(tmp_path / "corpus", files_per_lang=1, docs_per_file=3)
    data = tmp_path / "data"
    prepare(LocalFilesSource(root), tokdir, data, name="web", progress=False)
    victim = dir_with(tmp_path / "victim", "keep.txt", "mine")
    good = (data / "manifest.json").read_text()
    other = make_tokenizer(tmp_path / "tok2", make_texts("deu_Latn", 30), vocab_size=280)
    for change, message in [
        (lambda m: m["sources"].update({"../victim": m["sources"]["web"]}), "'../victim' is not a source name"),
        (lambda m: m["sources"].update({str(victim): m["sources"]["web"]}), "is not a source name"),
        (lambda m: m["sources"]["web"]["fra_Latn"]["shards"].__setitem__(0, "../../victim/keep.tokens.npy"),
         "is not a shard path"),
    ]:  # fmt: skip
        manifest = json.loads(good)
        change(manifest)
        (data / "manifest.json").write_text(json.dumps(manifest))
        for tokenizer in (tokdir, other):  # resume, and a new tokenizer with --overwrite
            with pytest.raises(ManifestError, match=message):
                prepare(LocalFilesSource(root), tokenizer, data, name="web", overwrite=True, progress=False)
        with pytest.raises(ShardError, match=message):
            TokenStore(data)
        assert (victim / "keep.txt").read_text() == "mine"
    (data / "manifest.json").write_text(good)
    record = next((data / "web" / "_units").glob("*.json"))
    unit = json.loads(record.read_text())
    unit["shards"][0]["path"] = "../victim/keep.tokens.npy"
    record.write_text(json.dumps(unit))
    with pytest.raises(UnsafePathError, match=f"{record}: shards: '../victim/keep.tokens.npy'"):
        prepare(LocalFilesSource(root), tokdir, data, name="web", progress=False)
    record.write_text("{broken")
    with pytest.raises(PrepareError, match=f"{record}: damaged record"):
        prepare(LocalFilesSource(root), tokdir, data, name="web", progress=False)


def test_a_manifest_without_its_tokenizer_is_a_clear_error(tmp_path, tokdir):
    root, data = _prepared_without_its_tokenizer(tmp_path, tokdir, docs_per_file=3)
    for action in (lambda: TokenStore(data), lambda: prepare(LocalFilesSource(root), tokdir, data, name="x")):
        with pytest.raises((ShardError, ManifestError), match="manifest.json: no 'tokenizer' entry"):
            action()


def test_unknown_language_keys_are_refused_with_the_closest_known_ones(tmp_path, tokdir, capsys):
    docs = tmp_path / "docs.jsonl"
    rows = [
        {"text": "le chat", "lang": "fra_Latn"},
        {"text": "zzz", "lang": "zzz_Zzzz"},
        {"text": "x", "lang": "fra_Lant"},
    ]
    docs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BadInputError, match=rf"{docs}:2: unknown language key: 'zzz_Zzzz' \(closest known: "):
        prepare(LocalFilesSource(docs, lang_field="lang"), tokdir, tmp_path / "d1", progress=False)
    result = prepare(
        LocalFilesSource(docs, lang_field="lang"), tokdir, tmp_path / "d2", skip_bad=True, progress=False
    )
    assert result.skipped["counts"] == {"unknown language key": 2} and list(result.langs) == ["fra_Latn"]
    assert "closest known: fra_Latn" in " ".join(result.skipped["examples"])
    result = prepare(
        LocalFilesSource(docs, lang_field="lang"),
        tokdir,
        tmp_path / "d3",
        progress=False,
        allow_unknown_languages=True,
    )
    assert sorted(result.langs) == ["fra_Lant", "fra_Latn", "zzz_Zzzz"]
    args = [
        "prepare",
        "--source",
        str(docs),
        "--lang",
        "zzz_Zzzz",
        "--tokenizer",
        str(tokdir),
        "--no-progress",
    ]
    assert cli.main([*args, "--out", str(tmp_path / "d4")]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "unknown language key: 'zzz_Zzzz'" in err
        and "--allow-unknown-languages" in err
    )
    assert cli.main([*args, "--out", str(tmp_path / "d4"), "--allow-unknown-languages"]) == 0


def test_out_is_not_an_input_nor_a_foreign_directory(tmp_path, tokdir):
    root = write_corpus(tmp_path / "corpus", files_per_lang=1, docs_per_file=3)
    foreign = dir_with(tmp_path / "home", "notes.txt", "mine")
    for out in (root, tokdir, foreign):
        with pytest.raises(OutputRefusedError):
            prepare(LocalFilesSource(root), tokdir, out, name="web", progress=False)
    prepare(LocalFilesSource(root), tokdir, foreign, name="web", progress=False, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"  # --overwrite writes beside it, deletes nothing


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_die_with_a_killed_prepare_and_the_rerun_finishes(tmp_path, tokdir, sig):
    root = write_corpus(tmp_path / "corpus", files_per_lang=6, docs_per_file=1000)
    data = tmp_path / "data"
    cmd = _prepare_command(root, tokdir, data, workers=2)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None and len(workers) < 2:
        workers = [p for p in child_pids(proc.pid) if running(p)]
        time.sleep(0.01)
    assert len(workers) >= 2, "the workers never started"
    proc.send_signal(sig)
    proc.wait()
    deadline = time.monotonic() + 15
    while any(running(p) for p in workers):
        assert time.monotonic() < deadline, "a worker outlived its parent"
        time.sleep(0.05)
    result = prepare(LocalFilesSource(root), tokdir, data, name="web", progress=False)  # the lock is free
    assert result.units_total == 18 and store_docs(TokenStore(data), "web") == expected_docs(root, tokdir)


def test_long_documents_are_tokenized_in_bounded_pieces_with_the_same_ids(tmp_path, tokdir, monkeypatch):
    from tokenizers import Tokenizer

    rng = np.random.default_rng(0)
    words = [w for lang in WORDS for w in WORDS[lang]]
    lines = [" ".join(rng.choice(words, 15)) for _ in range(12_000)]
    with_lines = "\n".join(lines)  # ~750K characters: 3 pieces
    one_line = " ".join(lines)
    no_space = "".join(lines).replace(" ", "")[: 3 * prep.PIECE_CHARS]
    for text in (with_lines, one_line, no_space):
        bounds = prep.piece_bounds(text)
        assert bounds[0][0] == 0 and bounds[-1][1] == len(text) and len(bounds) >= 3
        assert all(a < b <= a + prep.PIECE_CHARS for a, b in bounds)
        assert all(b == c for (_, b), (c, _) in zip(bounds, bounds[1:], strict=False))
    # Tokenized in pieces, in calls of bounded size: the ids of the whole text (where a cut has a space).
    tok = Tokenizer.from_file(str(tokdir / "tokenizer.json"))
    calls: list[int] = []

    class Recording:
        def encode_batch_fast(self, texts, add_special_tokens):
            calls.append(sum(map(len, texts)))
            return tok.encode_batch_fast(texts, add_special_tokens=add_special_tokens)

        encode_batch = encode_batch_fast

    monkeypatch.setattr(prep, "_tokenizer", Recording())
    short = ["le chat", "der hund"]
    ids = prep._encode([with_lines, *short, one_line])
    assert max(calls) <= prep.BATCH_CHARS and len(calls) >= 2
    for text, got in zip([with_lines, *short, one_line], ids, strict=True):
        assert got.tolist() == tok.encode(text, add_special_tokens=False).ids


# The command's peak resident memory in KB, printed by a small process that starts it: a process's peak
# counts the memory of the process it was forked from (kept across exec), here the test runner's.
_MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _peak_rss_mb(cmd: list[str]) -> float:
    done = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KB")
def test_memory_of_one_huge_document_is_that_of_many_small_ones(tmp_path, tokdir):
    """4M characters: as one document they took 440 MB more than as 1,000 documents, before the pieces."""
    rng = np.random.default_rng(1)
    words = [w for lang in WORDS for w in WORDS[lang]]
    text = "\n".join(" ".join(rng.choice(words, 12)) for _ in range(70_000))[:4_000_000]
    rss = {}
    for name, docs in {
        "one": [text],
        "many": [text[i : i + 4000] for i in range(0, len(text), 4000)],
    }.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        rss[name] = _peak_rss_mb([sys.executable, "-m", "mmbert.cli", "prepare", "--source", str(path), "--lang",
                                  "fra_Latn", "--tokenizer", str(tokdir), "--out", str(tmp_path / name),
                                  "--workers", "1", "--no-progress"])  # fmt: skip
    assert rss["one"] < rss["many"] + 100, rss


def test_cli_shows_progress_in_units_documents_and_tokens(tmp_path, tokdir, capsys):
    """The progress bar (on unless --no-progress): units done, documents and tokens so far, a rate."""
    root = write_corpus(tmp_path / "corpus", files_per_lang=2, docs_per_file=5)
    args = ["prepare", "--source", str(root), "--tokenizer", str(tokdir), "--out", str(tmp_path / "data")]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    store = TokenStore(tmp_path / "data")
    total = sum(store.num_tokens("corpus", lang) for lang in store.languages("corpus"))
    # tqdm: "prepare corpus: 100%|...| 6/6 [00:00<00:00, 40.1unit/s, 30 docs, 391 tok, 2,604 tok/s]"
    assert re.search(
        rf"prepare corpus: 100%\|.*\| 6/6 \[.*unit/s, 30 docs, {total:,} tok, [\d,]+ tok/s\]", err
    ), err


def test_parts_on_several_machines_then_join(tmp_path, tokdir, capsys):
    """`--part I/N` runs tokenize disjoint units into one DATA at once (no manifest); `--join` records
    them all: the same data as one machine's run. Parts run concurrently here as processes."""
    root = write_corpus(tmp_path / "corpus", files_per_lang=2, docs_per_file=10)  # 6 units
    prepare(LocalFilesSource(root), tokdir, tmp_path / "one", name="web", progress=False)
    data = tmp_path / "data"
    args = ["prepare", "--source", str(root), "--tokenizer", str(tokdir), "--out", str(data), "--name", "web",
            "--no-progress", "--workers", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    procs = [
        subprocess.Popen([sys.executable, "-m", "mmbert.cli", *args, "--part", f"{i}/4"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in (0, 2, 3)
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert all("no manifest yet" in out for out, _ in outs)
    assert not (data / "manifest.json").exists()
    with pytest.raises(ShardError, match="no manifest"):
        TokenStore(data)
    assert cli.main([*args, "--join"]) == 2
    assert re.search(r"2 of 6 units are not prepared yet .*owned by parts 1 of 4", capsys.readouterr().err)
    assert cli.main([*args, "--part", "1/4"]) == 0
    assert "part 1/4 of web: " in capsys.readouterr().out
    with pytest.raises(PrepareError, match="--part 4/4: expected I/N"):
        prepare(LocalFilesSource(root), tokdir, data, name="web", part=(4, 4))
    assert cli.main([*args, "--join"]) == 0
    assert "prepared web" in capsys.readouterr().out
    one, joined = TokenStore(tmp_path / "one"), TokenStore(data)
    assert store_docs(one, "web") == store_docs(joined, "web")
    assert one.manifest["sources"] == joined.manifest["sources"]  # same units, same shard names and order
    assert no_temporaries(data)


def test_an_mds_index_is_parsed_once_per_process(tmp_path, tokdir):
    """A merged index names every unit's shard: parsed per unit it would cost O(units^2)."""
    from mmbert.data.sources.mds import _parsed_index

    samples = [{"input_ids": np.arange(5, 9 + i % 5, dtype=np.uint32)} for i in range(40)]
    write_mds(tmp_path / "mds" / "fra_Latn", {"input_ids": "ndarray:uint32"}, samples, samples_per_shard=2)
    _parsed_index.cache_clear()
    result = prepare(open_source(f"mds:{tmp_path / 'mds'}"), tokdir, tmp_path / "data", progress=False)
    assert result.units_total == 20 and result.docs == 40
    assert _parsed_index.cache_info().misses == 1


def test_parts_started_at_once_with_different_tokenizers_cannot_be_joined(tmp_path, tokdir, monkeypatch):
    """Parts started together on several machines each find no `_source.json` to check against (and the
    last one to write it wins): a part cut with another tokenizer is caught by its units' records at
    `--join`, not joined into a dataset mixing two tokenizers' ids."""
    root = write_corpus(tmp_path / "corpus", files_per_lang=2, docs_per_file=5)
    other = make_tokenizer(
        tmp_path / "other", [t for lang in WORDS for t in make_texts(lang, 50, seed=8)], 280
    )
    data = tmp_path / "data"
    prepare(LocalFilesSource(root), other, data, name="web", progress=False, part=(1, 2))
    with monkeypatch.context() as m:  # part 0 checked before part 1 wrote anything
        m.setattr(prep, "_check_source", lambda *args: None)
        prepare(LocalFilesSource(root), tokdir, data, name="web", progress=False, part=(0, 2))
    with pytest.raises(
        PrepareError, match=r"web/_units/\S+\.json: this unit was prepared with another tokenizer"
    ):
        prepare(LocalFilesSource(root), tokdir, data, name="web", progress=False, join=True)
    assert not (data / "manifest.json").exists()
