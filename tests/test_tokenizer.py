"""Tokenizer: mmBERT's special-token layout, lossless round trip on every bundled language and on
unseen scripts (byte fallback), language-balanced sampling, HF save/load, the CLI."""

from __future__ import annotations

import copy
import json
import logging

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mmbert import cli
from mmbert import tokenizer as T
from mmbert import tokenizer_training as TT
from mmbert.data import corpus
from mmbert.merge import tokenizer_identity
from tests.helpers.files import dir_with
from tests.helpers.tokenizer import make_gemma_like_tokenizer, train_bundled

# Scripts absent from the bundled corpus (cuneiform, runic, Gothic, Braille, emoji), control characters,
# odd whitespace, and strings that look like byte tokens or SentencePiece's space marker.
UNSEEN = [
    "𒀀𒀁 𒀂",
    "ᚠᚢᚦᚨᚱᚲ ᚷᚹ",
    "𐌰𐌱𐌲 𐌳",
    "⠁⠃⠉ ⠙",
    "🙂🙃 👍🏽 family: 👨‍👩‍👧",
    "tab\tand  two spaces\n\nand\r\nCRLF \u00a0nbsp\u3000ideographic space",
    "literal <0x41> <0xZZ> ▁word <mask-like",
    "   leading and trailing spaces   ",
    "\x00\x07 control",
]


def _check_lossless(tok, texts, where):
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, (where, text)
        assert tok.decode(ids) == text, (where, text)


@pytest.fixture(scope="module")
def bpe() -> PreTrainedTokenizerFast:
    return train_bundled(1000)


@pytest.fixture(scope="module")
def unigram_and_texts():
    # a small Unigram tokenizer: one article of every 12th language keeps training well under a second
    texts = TT.bundled_texts("train", articles=(1,), code_chars=0)
    sub = {lang: texts[lang] for lang in sorted(texts)[::12]}
    return TT.train_tokenizer(sub, 500, model="unigram"), sub


def test_special_layout(bpe, unigram_and_texts):
    for tok, size in ((bpe, 1000), (unigram_and_texts[0], 500)):
        assert len(tok) == size
        assert T.special_token_mismatches(tok) == []
        assert [tok.convert_ids_to_tokens(i) for i in range(5)] == [
            "<pad>",
            "<eos>",
            "<bos>",
            "<unk>",
            "<mask>",
        ]
        assert tok.convert_ids_to_tokens(5) == "<0x00>" and tok.convert_ids_to_tokens(260) == "<0xFF>"
        single = tok("human rights")["input_ids"]
        assert single[0] == 2 and single[-1] == 1 and 1 not in single[1:-1]
        pair = tok("human rights", "for all")["input_ids"]
        assert pair[0] == 2 and pair.count(1) == 2 and pair[-1] == 1
        assert tok("a <mask> b", add_special_tokens=False)["input_ids"].count(4) == 1
        assert tok.model_max_length == T.MODEL_MAX_LENGTH
        assert "token_type_ids" not in tok("x")


def test_every_bundled_language_lossless(bpe):
    # held-out articles (never trained on) of every declaration; the few short declarations without
    # any held-out article are checked on all their articles
    texts: dict[str, list[str]] = {}
    for d in corpus.load_udhr():
        held = [a.text for a in d.articles if a.number in corpus.HELDOUT_ARTICLES]
        texts[d.key] = held or [a.text for a in d.articles]
    report = TT.evaluate_coverage(bpe, texts)
    assert len(report) == 532
    assert [k for k, r in report.items() if r["unk"]] == []
    assert [k for k, r in report.items() if not r["roundtrip"]] == []
    # the learned pieces do real work: far fewer tokens than UTF-8 bytes
    eng = report["eng_Latn"]
    assert eng["tokens_per_char"] < 0.65
    total_tokens = sum(r["tokens"] for r in report.values())
    total_bytes = sum(len(t.encode()) for ts in texts.values() for t in ts)
    assert total_tokens < 0.6 * total_bytes


def test_code_lossless(bpe):
    docs = [d.text for d in corpus.iter_code_documents()][-3:]  # files not in the 100k training prefix
    _check_lossless(bpe, docs, "code")


def test_unseen_scripts_byte_fallback(bpe, unigram_and_texts):
    for tok in (bpe, unigram_and_texts[0]):
        _check_lossless(tok, UNSEEN, type(tok.backend_tokenizer.model).__name__)
        ids = tok("𒀀", add_special_tokens=False)["input_ids"]
        assert tok.convert_ids_to_tokens(ids) == ["<0xF0>", "<0x92>", "<0x80>", "<0x80>"]


def test_unigram_lossless_on_its_languages(unigram_and_texts):
    tok, texts = unigram_and_texts
    assert type(tok.backend_tokenizer.model).__name__ == "Unigram"
    report = TT.evaluate_coverage(tok, texts)
    assert all(r["unk"] == 0 and r["roundtrip"] for r in report.values())


def test_balanced_sample_shares():
    texts = {"big": ["x" * 100] * 1000, "small": ["y" * 100] * 10, "empty": []}
    for tau in (0.0, 0.3, 1.0):
        chars = {"big": 0, "small": 0}
        for lang, text in TT.balanced_sample(texts, tau, None, seed=0):
            chars[lang] += len(text)
        w_big, w_small = 100_000**tau, 1_000**tau
        total = 101_000
        # each language stops at the first document that reaches its target: within one document
        assert abs(chars["big"] - total * w_big / (w_big + w_small)) <= 100
        assert abs(chars["small"] - total * w_small / (w_big + w_small)) <= 100
    capped = sum(len(t) for _, t in TT.balanced_sample(texts, 0.3, 5_000, seed=0))
    assert 5_000 <= capped <= 5_200
    with pytest.raises(ValueError, match="no training text"):
        list(TT.balanced_sample({"a": []}, 0.3, None, 0))


def test_balancing_feeds_small_languages():
    # Finnish (18k characters) next to 430k of Python: with tau=0.3 Finnish gets a real share of the
    # vocabulary and far fewer tokens per character than with proportional sampling (tau=1)
    train = {
        "code": [d.text for d in corpus.iter_code_documents()][:12],
        "fin_Latn": [d.text for d in corpus.iter_documents("train", langs={"fin_Latn"})],
    }
    held = {"fin_Latn": [d.text for d in corpus.iter_documents("heldout", langs={"fin_Latn"})]}
    fert = {
        tau: TT.evaluate_coverage(TT.train_tokenizer(train, 600, tau=tau), held)["fin_Latn"][
            "tokens_per_char"
        ]
        for tau in (0.3, 1.0)
    }
    assert fert[0.3] < 0.85 * fert[1.0], fert


def test_save_load_roundtrip(bpe, tmp_path, caplog):
    T.save_tokenizer(bpe, tmp_path / "tok")
    assert json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())["tokenizer_class"] == (
        "PreTrainedTokenizerFast"
    )
    auto = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert (auto.pad_token_id, auto.eos_token_id, auto.bos_token_id, auto.unk_token_id, auto.mask_token_id) == (
        0, 1, 2, 3, 4,
    )  # fmt: skip
    text = "Everyone has the right to life, liberty and security of person."
    assert auto(text)["input_ids"] == bpe(text)["input_ids"]
    with caplog.at_level(logging.WARNING, logger="mmbert.tokenizer"):
        loaded = T.load_tokenizer(tmp_path / "tok")
    assert not caplog.records
    assert T.fingerprint(loaded) == T.fingerprint(bpe)
    assert not list((tmp_path / "tok").glob(".tokenizer.*"))  # temp dir cleaned up


def test_load_foreign_layout_warns(tmp_path, caplog):
    # a BERT-like layout: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, no mask token
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4, "b": 5}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    foreign = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    foreign.save_pretrained(tmp_path / "foreign")
    with caplog.at_level(logging.WARNING, logger="mmbert.tokenizer"):
        tok = T.load_tokenizer(tmp_path / "foreign")
    assert tok("a b", add_special_tokens=False)["input_ids"] == [4, 5]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "unk token '[UNK]' has id 1, mmBERT uses 3" in messages and "mask token None" in messages
    assert T.fingerprint(tok) != T.fingerprint(train_bundled(1000))


def test_fingerprint_is_what_decides_the_ids(bpe, tmp_path):
    """One identity per tokenizer, the same in `tokenizer info`, the manifest and `merge`: Gemma 2's
    tokenizer as shipped (`<mask>` not special, `<bos>` only added) is the one adapted to mmBERT's
    layout, and so is a re-saved file; a changed vocabulary entry is another tokenizer."""
    text = bpe.backend_tokenizer.to_str()  # mmBERT's layout: <mask> special, <bos> text <eos>
    state = json.loads(text)
    for token in state["added_tokens"]:
        token["special"] = token["content"] != "<mask>"
    shipped = Tokenizer.from_str(json.dumps(state))
    shipped.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B:1", special_tokens=[("<bos>", 2)]
    )
    assert shipped.encode("a b").ids[-1] != 1 and bpe("a b")["input_ids"][-1] == 1
    assert T.fingerprint(shipped) == T.fingerprint(bpe) == T.fingerprint(text)
    resaved = json.dumps(json.loads(text), indent=4, sort_keys=True, ensure_ascii=True)
    assert resaved != text and T.fingerprint(resaved) == T.fingerprint(bpe)
    padded = Tokenizer.from_str(text)
    padded.enable_padding(pad_id=0, pad_token="<pad>", length=64)
    padded.enable_truncation(32)
    assert T.fingerprint(padded) == T.fingerprint(bpe)

    changed = copy.deepcopy(json.loads(text))
    vocab = changed["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[300:302]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    assert T.fingerprint(json.dumps(changed)) != T.fingerprint(bpe)

    for name, tok in (("shipped", shipped), ("adapted", bpe.backend_tokenizer)):
        (tmp_path / name).mkdir()
        tok.save(str(tmp_path / name / "tokenizer.json"))
    for name in ("shipped", "adapted"):
        identity = T.read_tokenizer_files(tmp_path / name, require_layout=True).identity()
        assert identity["sha256"] == T.fingerprint_sha256(bpe)
        assert identity["fingerprint"] == T.fingerprint(bpe)
        assert tokenizer_identity(tmp_path / name) == ("tokenizer.json", T.fingerprint_sha256(bpe))


def test_load_missing(tmp_path):
    with pytest.raises(ValueError, match="not in the local Hugging Face cache"):
        T.load_tokenizer("no-such-org/no-such-tokenizer-xyz")
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(NotADirectoryError):
        T.load_tokenizer(tmp_path / "file.json")


def test_train_validation():
    with pytest.raises(ValueError, match="too small"):
        TT.train_tokenizer(["abc"], 100)
    with pytest.raises(ValueError, match="model must be"):
        TT.train_tokenizer(["abc"], 1000, model="wordpiece")  # type: ignore[arg-type]


def test_cli_train_and_info(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "fra_Latn").mkdir(parents=True)
    for d in corpus.iter_documents("train", langs={"fra_Latn"}):
        (data / "fra_Latn" / f"{d.meta['article']}.txt").write_text(d.text, encoding="utf-8")
    rows = [
        {"text": d.text, "lang": d.lang}
        for d in corpus.iter_documents("train", langs={"deu_Latn", "rus_Cyrl"})
    ]
    (data / "mixed.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8"
    )
    (tmp_path / "plain.txt").write_text("no language directory: und_Zzzz", encoding="utf-8")
    texts = TT.read_text_files([data / "fra_Latn", tmp_path / "plain.txt"])
    assert sorted(texts) == ["fra_Latn", "und_Zzzz"] and len(texts["fra_Latn"]) == 25
    out = tmp_path / "tok"
    args = ["train", "--out", str(out), "--vocab-size", "400", "--quiet", "--lang-field", "lang", "--input"]
    assert cli.main(["tokenizer", *args, str(data / "mixed.jsonl")]) == 0
    printed = capsys.readouterr().out
    assert "2 languages" in printed and "0 unknown tokens" in printed and "round trip exact" in printed
    args = ["train", "--out", str(out), "--vocab-size", "400", "--quiet", "--input", str(data / "fra_Latn")]
    assert cli.main(["tokenizer", *args]) == 0
    assert "1 languages" in capsys.readouterr().out
    auto = AutoTokenizer.from_pretrained(out)
    assert len(auto) == 400 and auto.mask_token_id == 4
    assert cli.main(["tokenizer", "info", str(out)]) == 0
    assert "special ids match mmBERT's layout" in capsys.readouterr().out


def test_cli_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken\n', encoding="utf-8")
    args = ["train", "--out", str(tmp_path / "o"), "--vocab-size", "400", "--lang", "eng_Latn", "--input"]
    assert cli.main(["tokenizer", *args, str(bad)]) == 2
    assert f"{bad}:2: broken JSON line" in capsys.readouterr().err
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9\n".encode("latin-1"))
    assert cli.main(["tokenizer", *args, str(latin1)]) == 2
    assert "invalid UTF-8" in capsys.readouterr().err
    assert cli.main(["tokenizer", *args, str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err


def test_train_never_replaces_a_model_directory_tokenizer_unasked(tmp_path, capsys):
    model = dir_with(tmp_path / "model", "config.json", "{}")
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "tokenizer.json").write_text("old")
    data = tmp_path / "fra_Latn"
    data.mkdir()
    for d in corpus.iter_documents("train", langs={"fra_Latn"}):
        (data / f"{d.meta['article']}.txt").write_text(d.text, encoding="utf-8")
    args = ["tokenizer", "train", "--vocab-size", "400", "--quiet", "--input", str(data), "--out"]
    for out in (model, data):
        assert cli.main([*args, str(out)]) == 2
        err = capsys.readouterr().err
        assert "--overwrite" in err and err.count("\n") == 1
    assert (model / "tokenizer.json").read_text() == "old"
    assert cli.main([*args, str(model), "--overwrite"]) == 0  # the tokenizer files only are replaced
    assert (model / "model.safetensors").read_bytes() == b"weights" and (
        model / "config.json"
    ).read_text() == "{}"
    assert len(T.load_tokenizer(model)) == 400
    assert cli.main([*args, str(tmp_path / "tok")]) == 0
    assert cli.main([*args, str(tmp_path / "tok")]) == 0  # its own earlier output: replaced


# --------------------------------------------------------------------------------------------------
# Tokenizers as shipped: Gemma 2's (mmBERT's) layout read from the files, adapted


@pytest.fixture(scope="module")
def gemma_texts() -> list[str]:
    return [t for ts in TT.bundled_texts("train", articles=(1, 2), code_chars=0).values() for t in ts][::4]


def test_gemma_as_shipped_is_accepted_and_adapted(gemma_texts, tmp_path, capsys):
    shipped = make_gemma_like_tokenizer(tmp_path / "gemma", gemma_texts)
    assert cli.main(["tokenizer", "info", str(shipped)]) == 0
    info = capsys.readouterr().out
    assert "special ids match mmBERT's layout" in info
    for line in (
        "tokenizer_class is GemmaTokenizer: write PreTrainedTokenizerFast",
        "'<mask>' (id 4) is not marked special: mark it special",
        "mask_token is not set: set it to '<mask>'",
        "cls_token is not set: set it to '<bos>'",
        "sep_token is not set: set it to '<eos>'",
        "one text is encoded as `<bos> a`: encode it as `<bos> a <eos>`",
        "a pair of texts is encoded as `<bos> a <bos> b`: encode it as `<bos> a <eos> b <eos>`",
        "model_max_length is 1000000000000000019884624838656: set it to 8192",
    ):
        assert line in info
    assert "differs from mmBERT's layout in 8 ways" in info
    padded = Tokenizer.from_file(str(shipped / "tokenizer.json"))  # padding and truncation are no layout
    padded.enable_padding(pad_id=0, pad_token="<pad>", length=16)
    padded.enable_truncation(8)
    files = T.read_tokenizer_files(shipped)
    assert T.layout_changes(files) == T.layout_changes(T.TokenizerFiles(**{**vars(files), "backend": padded}))
    out = tmp_path / "adapted"
    assert cli.main(["tokenizer", "adapt", str(shipped), "--out", str(out), "--model-max-length", "512"]) == 0
    assert "(the same token ids)" in capsys.readouterr().out
    tok = AutoTokenizer.from_pretrained(out)
    assert (tok.mask_token, tok.mask_token_id, tok.cls_token, tok.sep_token, tok.pad_token_id) == (
        "<mask>", 4, "<bos>", "<eos>", 0,
    )  # fmt: skip
    assert tok.model_max_length == 512 and tok.padding_side == "right"
    text = "Everyone has the right to life"
    plain = Tokenizer.from_file(str(shipped / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    assert tok(text)["input_ids"] == [2, *plain, 1]
    assert tok(text, "liberty")["input_ids"][: len(plain) + 2] == [2, *plain, 1]
    assert tok(text, "liberty")["input_ids"][-1] == 1
    assert tok("a <mask> b", add_special_tokens=False)["input_ids"].count(4) == 1
    assert "<mask>" not in tok.decode(tok("a <mask> b")["input_ids"], skip_special_tokens=True)
    assert {"<start_of_turn>", "<end_of_turn>"} <= {
        t.content for t in tok.added_tokens_decoder.values() if t.special
    }
    # one identity everywhere: info, the manifest's, merge's; shipped = adapted
    printed = []
    for directory in (shipped, out):
        assert cli.main(["tokenizer", "info", str(directory), "--model-max-length", "512"]) == 0
        printed.append(capsys.readouterr().out)
    fingerprints = {line for text in printed for line in text.splitlines() if line.startswith("fingerprint")}
    identity = T.read_tokenizer_files(shipped, require_layout=True).identity()
    assert fingerprints == {f"fingerprint {identity['fingerprint']}"}
    assert T.read_tokenizer_files(out, require_layout=True).identity() == {**identity, "path": str(out)}
    assert tokenizer_identity(shipped) == tokenizer_identity(out) == ("tokenizer.json", identity["sha256"])
    assert "layout: mmBERT's (nothing to adapt)" in printed[1]
    # adapting what is adapted changes nothing; the source and an existing tokenizer are not overwritten
    files = T.read_tokenizer_files(out)
    assert T.layout_changes(files, 512) == []
    assert T.adapt_tokenizer(files, 512).backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    for target in (shipped, out):
        assert cli.main(["tokenizer", "adapt", str(shipped), "--out", str(target)]) == 2
        assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    "specials, config, message",
    [
        (
            ("<bos>", "<pad>", "<eos>", "<unk>", "<mask>"),  # XLM-R's order with Gemma's names
            {},
            "pad token '<pad>' has id 1, mmBERT's layout needs id 0, where it has '<bos>'",
        ),
        (
            ("<pad>", "<eos>", "<bos>", "<unk>", "<sep>"),
            {},
            "no mask token (the config names none and the vocabulary has no '<mask>')",
        ),
        (
            ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>"),
            {"mask_token": "[MASK]"},
            "no mask token (its mask_token '[MASK]' is not in the vocabulary)",
        ),
    ],
)
def test_tokenizer_without_the_special_ids_is_refused(
    gemma_texts, tmp_path, capsys, specials, config, message
):
    src = make_gemma_like_tokenizer(tmp_path / "src", gemma_texts[:40], vocab_size=400, specials=specials)
    path = src / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    assert cli.main(["tokenizer", "info", str(src)]) == 0
    assert (
        f"cannot take mmBERT's layout (`mmbert tokenizer adapt` refuses it): {message}"
        in capsys.readouterr().out
    )
    assert cli.main(["tokenizer", "adapt", str(src), "--out", str(tmp_path / "out")]) == 2
    assert f"cannot take mmBERT's layout: {message}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # nor is any data prepared with it
    (tmp_path / "docs.txt").write_text("some text")
    args = ["--source", str(tmp_path / "docs.txt"), "--lang", "eng_Latn", "--out", str(tmp_path / "data")]
    assert cli.main(["prepare", *args, "--tokenizer", str(src), "--no-progress"]) == 2
    assert f"tokenizer {src} cannot take mmBERT's layout: {message}" in capsys.readouterr().err


def test_adapt_never_replaces_an_input_or_a_model_unasked_and_writes_whole(
    gemma_texts, tmp_path, capsys, monkeypatch
):
    shipped = make_gemma_like_tokenizer(tmp_path / "gemma", gemma_texts[:40], vocab_size=400)
    vocab = T.read_tokenizer_files(shipped).vocab_size
    model = dir_with(tmp_path / "model", "config.json", json.dumps({"vocab_size": vocab + 200}))
    (model / "model.safetensors").write_bytes(b"weights")
    # A model folder whose vocabulary differs: refused, --overwrite too (its weights would meet wrong ids)
    assert cli.main(["tokenizer", "adapt", str(shipped), "--out", str(model), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"has {vocab} ids, but the model in {model} has {vocab + 200}" in err and err.count("\n") == 1
    (model / "config.json").write_text(json.dumps({"vocab_size": vocab, "pad_token_id": 0}))
    for out, message in [
        (tmp_path, f"--out {tmp_path} would overwrite the input"),
        (model, f"--out {model} is a non-empty directory that this command did not write"),
    ]:
        assert cli.main(["tokenizer", "adapt", str(shipped), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "--overwrite" in err and err.count("\n") == 1
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "model.safetensors"]
    # --overwrite into the model: its files stay, the tokenizer joins them; a failure half-way changes nothing
    assert cli.main(["tokenizer", "adapt", str(shipped), "--out", str(model), "--overwrite"]) == 0
    before = {f.name: f.read_bytes() for f in model.iterdir()}
    assert before["model.safetensors"] == b"weights" and "tokenizer.json" in before

    def disk_full(config: bytes) -> bytes:
        raise OSError("No space left on device")

    monkeypatch.setattr(T, "_loadable_by_transformers_4", disk_full)  # after tokenizer.json is written
    assert cli.main(["tokenizer", "adapt", str(shipped), "--out", str(model), "--overwrite"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in model.iterdir()} == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_vocabulary_the_text_cannot_fill_is_said(caplog):
    """`--vocab-size 100000` on a page of text gives a few hundred ids: a warning says so."""
    with caplog.at_level(logging.WARNING, logger="mmbert.tokenizer_training"):
        tok = TT.train_tokenizer(["hello world, hello there"] * 5, vocab_size=2000, model="bpe")
    assert len(tok) < 2000
    assert f"vocabulary of {len(tok)} ids, not the 2000 asked for" in caplog.text
