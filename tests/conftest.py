"""Shared fixtures and builders: everything is built in the test, nothing is downloaded.

The one tiny model config is the `tiny` preset (`TINY`): 4 layers (global, local, local, global), hidden
64, a 16-token window shorter than the test sequences, different global and local RoPE thetas so that a
mix-up shows. Builders that several test files use live here and nowhere else:

- `ragged_batch`: a right-padded batch with lengths from 3 tokens to longer than the window;
- `make_tokenizer`: a tiny byte-level BPE tokenizer with mmBERT's special ids;
- `WORDS` / `make_texts` / `write_corpus` / `expected_docs`: a FineWeb2-layout corpus of three small
  languages and the token ids `prepare` must make of it;
- `FAKE_LANGUAGES` / `fake_documents` / `train_inputs` / `write_recipe` / `read_metrics`: prepared data,
  a three-phase recipe and its metrics for the training tests;
- `FakeStore`: an in-memory stand-in for `TokenStore`;
- `write_mds`: MosaicML streaming (MDS) shards written from the format description;
- `udhr_texts` / `save_tiny` / `make_tiny_export` / `resave_with_transformers`: tiny HF-format exports;
- `hf_model` / `real_logits`: transformers' ModernBERT with the tiny preset's shapes, its logits;
- `make_gemma_like_tokenizer`: a small tokenizer with Gemma 2's properties as Google ships it;
- `train_bundled`: a tokenizer trained on (part of) the bundled corpus, cached in-process;
- `composer_names` / `write_composer_checkpoint`: ModernBERT training checkpoints (Composer `.pt`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
import zstandard
from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from mmbert import MmBertConfig, MmBertForMaskedLM
from mmbert.data.corpus import load_udhr
from mmbert.data.prepare import prepare
from mmbert.data.sources import LocalFilesSource, open_source
from mmbert.tokenizer import save_tokenizer, wrap
from mmbert.tokenizer_training import bundled_texts, train_tokenizer
from mmbert.tokens import SPECIAL_TOKENS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY = MmBertConfig.preset("tiny")


@pytest.fixture
def tiny_config() -> MmBertConfig:
    return MmBertConfig.preset("tiny")


@pytest.fixture
def one_thread():
    """For the tiny model a second thread only adds overhead (and spinning threads cost on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ragged_batch(batch: int = 4, max_len: int = 45, vocab: int = TINY.vocab_size, seed: int = 0):
    """Right-padded ids + mask with lengths from 3 to max_len (longer than the tiny window of 16)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [max_len, 3, max_len // 2 + 1, 17][:batch] + [max_len - i for i in range(max(0, batch - 4))]
    ids = torch.randint(5, vocab, (batch, max_len), generator=g)
    mask = torch.zeros(batch, max_len, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids[mask == 0] = 0
    return ids, mask


# ---------------------------------------------------------------------------------------------- tokenizers
def make_tokenizer(out: Path, texts: list[str], vocab_size: int = 300) -> Path:
    """A tiny byte-level BPE tokenizer with mmBERT's special ids (pad 0, eos 1, bos 2, unk 3, mask 4)."""
    specials = list(SPECIAL_TOKENS.values())
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 1)]
    )
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    names = {f"{name}_token": token for name, token in SPECIAL_TOKENS.items()}
    (out / "tokenizer_config.json").write_text(json.dumps(names))
    return out


GEMMA_EXTRA_TOKENS = ("<2mass>", "[@BOS@]", "<unused0>", "<unused1>", "<start_of_turn>", "<end_of_turn>")


_BUNDLED_CACHE: dict[tuple, str] = {}


def train_bundled(
    vocab_size: int = 1000,
    model: str = "bpe",
    tau: float = 0.3,
    seed: int = 0,
    articles: Sequence[int] | None = (0, 1, 2, 3),
    code_chars: int | None = 100_000,
) -> PreTrainedTokenizerFast:
    """A tokenizer trained on (part of) the bundled corpus: the tests' tiny tokenizer.

    The default (1,000 ids, preamble + articles 1-3 of every declaration, 100k characters of code)
    trains in seconds. Results are cached in-process by arguments; each call returns a new object.
    """
    arts = None if articles is None else tuple(sorted(articles))
    key = (vocab_size, model, tau, seed, arts, code_chars)
    if key not in _BUNDLED_CACHE:
        texts = bundled_texts("train", arts, code_chars)
        tok = train_tokenizer(texts, vocab_size, model, tau, seed)  # type: ignore[arg-type]
        _BUNDLED_CACHE[key] = tok.backend_tokenizer.to_str()
    return wrap(Tokenizer.from_str(_BUNDLED_CACHE[key]))


def make_gemma_like_tokenizer(
    out: Path,
    texts: list[str],
    vocab_size: int = 600,
    specials: Sequence[str] = tuple(SPECIAL_TOKENS.values()),
) -> Path:
    """A small tokenizer with the properties of Gemma 2's as Google ships it (mmBERT's tokenizer).

    SentencePiece-style BPE with byte fallback (spaces become `▁`, no pre-tokenizer); `specials` at ids
    0.. (mmBERT's by default), then Gemma's other control tokens, the 256 byte tokens and the learned
    pieces; every one of them an added token, `<mask>` (and the other unused ones) *not* marked
    special; a post-processor that adds `<bos>` only (`<bos> a`, `<bos> a <bos> b`); a
    `tokenizer_config.json` of class GemmaTokenizer naming no mask, cls or sep token, with an
    unbounded `model_max_length`. Passing other `specials` puts other tokens at the special ids.
    """
    head = [*specials, *GEMMA_EXTRA_TOKENS, *(f"<0x{b:02X}>" for b in range(256))]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    state = json.loads(tok.to_str())["model"]
    vocab = {t: i for i, t in enumerate(head)}
    for piece, _ in sorted(state["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    gemma = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    gemma.normalizer = normalizers.Replace(" ", "\u2581")
    gemma.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    control = {"<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"}
    gemma.add_tokens([AddedToken(t, special=t in control, normalized=False) for t in head[:-256]])
    gemma.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos>:1 $B:1", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    out.mkdir(parents=True, exist_ok=True)
    gemma.save(str(out / "tokenizer.json"))
    flags = dict(lstrip=False, normalized=False, rstrip=False, single_word=False)
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(i): {"content": t, **flags, "special": t in control} for i, t in enumerate(head[:-256])
        },
        "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
        "bos_token": "<bos>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<eos>",
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<pad>",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    specials_map = {"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]}
    specials_map.update({f"{r}_token": f"<{r}>" for r in ("bos", "eos", "pad", "unk")})
    (out / "special_tokens_map.json").write_text(json.dumps(specials_map, indent=2))
    return out


# ---------------------------------------------------------------------------------------------- corpora
WORDS = {
    "fra_Latn": "le la les un une et est dans pour avec maison chat".split(),
    "deu_Latn": "der die das und ist mit haus katze nicht ein".split(),
    "ell_Grek": "και το της η ο σε για σπίτι γάτα".split(),
}


def make_texts(lang: str, n: int, seed: int = 0, words: int = 12) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = WORDS[lang]
    return [" ".join(rng.choice(vocab, rng.integers(1, words + 1))) for _ in range(n)]


def write_corpus(root: Path, files_per_lang: int = 2, docs_per_file: int = 20, seed: int = 0) -> Path:
    """FineWeb2 layout: root/<lang>/train/NNN.jsonl."""
    for li, lang in enumerate(WORDS):
        for k in range(files_per_lang):
            d = root / lang / "train"
            d.mkdir(parents=True, exist_ok=True)
            texts = make_texts(lang, docs_per_file, seed=seed + 100 * li + k)
            (d / f"{k:03d}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return root


def expected_docs(root: Path, tokdir: Path) -> dict[str, list[list[int]]]:
    """What prepare must produce: each file's texts (in file order) tokenized without special tokens."""
    tok = Tokenizer.from_file(str(tokdir / "tokenizer.json"))
    out: dict[str, list[list[int]]] = {}
    src = LocalFilesSource(root)
    for unit in src.units():
        for doc in src.read(unit, "x"):
            out.setdefault(doc.lang, []).append(tok.encode(doc.text, add_special_tokens=False).ids)
    return out


class FakeStore:
    """A TokenStore stand-in: (source, lang) -> documents of given lengths (token values = doc index)."""

    def __init__(self, cells: dict[tuple[str, str], list[int]]) -> None:
        self.cells = cells

    def sources(self) -> list[str]:
        return sorted({s for s, _ in self.cells})

    def languages(self, source: str | None = None) -> list[str]:
        return sorted({lang for s, lang in self.cells if source in (None, s)})

    def num_tokens(self, source: str, lang: str) -> int:
        return sum(self.cells[(source, lang)])

    def num_docs(self, source: str, lang: str) -> int:
        return len(self.cells[(source, lang)])

    def doc(self, source: str, lang: str, i: int) -> np.ndarray:
        return np.full(self.cells[(source, lang)][i], i, dtype=np.uint32)

    def doc_length(self, source: str, lang: str, i: int) -> int:
        return self.cells[(source, lang)][i]

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: {lang: self.num_tokens(s, lang) for lang in self.languages(s)} for s in self.sources()}


# ---------------------------------------------------------------------------------------------- training
# Four fake languages, each with its own alphabet: the recipe's phases add them one group at a time.
FAKE_LANGUAGES = {
    "aaa_Latn": "abcdefghij",
    "bbb_Latn": "klmnopqrst",
    "ccc_Cyrl": "абвгдежзик",
    "ddd_Grek": "αβγδεζηθικ",
}
TRAIN_RECIPE = """\
name: test
seed: 0
model: {{preset: tiny}}
tokenizer: {tok}
data: [{data}]
train: {{lr: 3e-3, batch_tokens: 128, batch_warmup_start_tokens: 64, batch_warmup_tokens: 300,
         checkpoint_every_tokens: 250, keep_last: 2}}
phases:
  - {{name: pre, tokens: 900, languages: [aaa_Latn, bbb_Latn], tau: 0.7, mask_rate: 0.3, seq_len: 32,
      warmup_tokens: 200}}
  - {{name: mid, tokens: 500, languages: [aaa_Latn, bbb_Latn, ccc_Cyrl], tau: 0.5, mask_rate: 0.15,
      seq_len: 64, global_rope_theta: 160000, local_rope_theta: 160000}}
  - name: decay
    tokens: 300
    languages: all
    tau: 0.3
    mask_rate: 0.05
    seq_len: 64
    global_rope_theta: 160000
    local_rope_theta: 160000
    decay: one_minus_sqrt
{variants}"""
TRAIN_VARIANTS = """\
    variants:
      eng: {languages: [aaa_Latn]}
      all: {languages: all}
"""


def fake_documents(n_docs: int = 30, seed: int = 0) -> list[tuple[str, str]]:
    """(language, text) pairs: each fake language has its own alphabet and a 40-word lexicon."""
    rng = random.Random(seed)
    docs = []
    for lang, alphabet in FAKE_LANGUAGES.items():
        lexicon = ["".join(rng.choice(alphabet) for _ in range(rng.randint(2, 6))) for _ in range(40)]
        docs += [(lang, " ".join(rng.choices(lexicon, k=rng.randint(5, 60))) + ".") for _ in range(n_docs)]
    return docs


def write_recipe(path: Path, tok: Path, data: Path, variants: bool = True) -> Path:
    path.write_text(TRAIN_RECIPE.format(tok=tok, data=data, variants=TRAIN_VARIANTS if variants else ""))
    return path


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def train_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """(recipe without variants, recipe with variants) over a tokenizer and prepared data (source `web`,
    4 fake languages x 30 documents), built once for the training and distributed tests."""
    root = tmp_path_factory.mktemp("train_inputs")
    docs = fake_documents()
    tok = make_tokenizer(root / "tok", [text for _, text in docs])
    path = root / "docs.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, (lang, text) in enumerate(docs):
            f.write(json.dumps({"text": text, "lang": lang, "id": str(i)}, ensure_ascii=False) + "\n")
    source = open_source(str(path), lang_field="lang")
    # The fake languages' keys are not real ones.
    prepare(source, tok, root / "data", name="web", progress=False, allow_unknown_languages=True)
    plain = write_recipe(root / "recipe.yaml", tok, root / "data", variants=False)
    return plain, write_recipe(root / "variants.yaml", tok, root / "data")


# ---------------------------------------------------------------------------------------------- MDS
# An MDS writer written from the format description (mosaicml-streaming's MDSWriter, index version 2),
# to build fixtures. mosaicml-streaming does not install beside our torch; in a throwaway environment
# (streaming 0.13.0, a torchvision stand-in) its StreamingDataset read this writer's output back, and
# `MdsSource` read its MDSWriter's output (ndarray uint16/uint32/int64, fixed and dynamic dtype, raw and
# zstd, merged indexes): identical samples (`python scripts/crosscheck.py mds`, which records its result in
# scripts/results/crosscheck-mds.json).
_DTYPE_CODES = {
    "uint8": 8,
    "int8": 9,
    "uint16": 16,
    "int16": 17,
    "uint32": 32,
    "int32": 33,
    "uint64": 64,
    "int64": 65,
}
_SHAPE_CODES = {"uint8": 0, "uint16": 1, "uint32": 2, "uint64": 3}
FIXED_SIZES = {"int": 8}


def _encode_ndarray(encoding: str, arr: np.ndarray) -> bytes:
    parts = encoding.split(":")
    out = b""
    if len(parts) < 2:  # dynamic dtype
        out += bytes([_DTYPE_CODES[arr.dtype.name]])
    else:
        assert arr.dtype.name == parts[1]
    if len(parts) < 3:  # dynamic shape
        shape = np.array(arr.shape, np.int64)
        sdt = "uint8" if shape.max() < 256 else "uint16" if shape.max() < 65536 else "uint32"
        out += bytes([(arr.ndim << 2) | _SHAPE_CODES[sdt]]) + shape.astype(sdt).tobytes()
    return out + arr.tobytes()


def _encode_column(encoding: str, value) -> bytes:
    if encoding.startswith("ndarray"):
        return _encode_ndarray(encoding, value)
    if encoding == "str":
        return value.encode("utf-8")
    if encoding == "int":
        return np.int64(value).tobytes()
    if encoding == "json":
        return json.dumps(value).encode()
    raise ValueError(encoding)


def write_mds(
    out: Path,
    columns: dict[str, str],
    samples: list[dict],
    *,
    compression: str | None = None,
    samples_per_shard: int = 1000,
    basename_prefix: str = "",
) -> list[dict]:
    """Write samples as MDS shards under `out` (+ index.json); returns the index's shard entries."""
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(columns)
    encodings = [columns[n] for n in names]
    sizes = [FIXED_SIZES.get(e) for e in encodings]
    shards = []
    for k, start in enumerate(range(0, len(samples), samples_per_shard)):
        chunk = samples[start : start + samples_per_shard]
        config = {
            "column_encodings": encodings,
            "column_names": names,
            "column_sizes": sizes,
            "compression": compression,
            "format": "mds",
            "hashes": [],
            "size_limit": 1 << 26,
            "version": 2,
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        encoded = []
        for s in chunk:
            data = [_encode_column(e, s[n]) for n, e in zip(names, encodings, strict=True)]
            head = np.array(
                [len(d) for d, sz in zip(data, sizes, strict=True) if sz is None], np.uint32
            ).tobytes()
            encoded.append(head + b"".join(data))
        offsets = np.array([0] + [len(e) for e in encoded]).cumsum().astype(np.uint32)
        offsets += 4 + offsets.nbytes + len(config_bytes)
        raw = np.uint32(len(chunk)).tobytes() + offsets.tobytes() + config_bytes + b"".join(encoded)
        raw_name = f"{basename_prefix}shard.{k:05d}.mds"
        raw_info = {"basename": raw_name, "bytes": len(raw), "hashes": {}}
        zip_info = None
        if compression:
            zdata = zstandard.ZstdCompressor(level=3).compress(raw)
            zip_info = {"basename": raw_name + ".zstd", "bytes": len(zdata), "hashes": {}}
            (out / zip_info["basename"]).parent.mkdir(parents=True, exist_ok=True)
            (out / zip_info["basename"]).write_bytes(zdata)
        else:
            (out / raw_name).parent.mkdir(parents=True, exist_ok=True)
            (out / raw_name).write_bytes(raw)
        shards.append({**config, "samples": len(chunk), "raw_data": raw_info, "zip_data": zip_info})
    (out / "index.json").write_text(json.dumps({"shards": shards, "version": 2}, sort_keys=True))
    return shards


# ---------------------------------------------------------------------------------------------- exports
# An "export" is what `mmbert train` and `mmbert demo` write and what mmBERT releases look like: a
# directory with `config.json` + `model.safetensors` (HF `ModernBertForMaskedLM` format) beside a
# tokenizer with the mmBERT token layout trained by `mmbert.tokenizer_training`. The tokenizer learns the bundled
# UDHR text of a few languages, so tests that train on them see real pieces, not byte fallback.
# Two Latin-script languages, one Cyrillic, one Arabic: scripts enough for language ID, overlap enough
# (Latin) for cross-lingual pairs to be learnable by a tiny model in a few steps.
TINY_LANGS: tuple[str, ...] = ("eng_Latn", "fra_Latn", "rus_Cyrl", "arb_Arab")


def udhr_texts(langs: Sequence[str] = TINY_LANGS) -> list[str]:
    """Every article of the bundled UDHR declaration whose key is one of `langs`."""
    return [a.text for d in load_udhr() if d.key in langs for a in d.articles]


def save_tiny(path: str | Path, texts: Sequence[str], seed: int = 0, **overrides) -> Path:
    """A BPE tokenizer trained on `texts` + a random `tiny` MLM of ours (preset + `overrides`), in HF format."""
    path = Path(path)
    tok = train_tokenizer(list(texts), vocab_size=512, model="bpe", seed=seed)
    save_tokenizer(tok, path)
    torch.manual_seed(seed)
    MmBertForMaskedLM(MmBertConfig.preset("tiny", vocab_size=len(tok), **overrides)).save_pretrained(path)
    return path


def make_tiny_export(path: str | Path, langs: Sequence[str] = TINY_LANGS, seed: int = 0) -> Path:
    """Write a tiny masked-LM export (our model + our tokenizer) to `path` and return it."""
    return save_tiny(path, udhr_texts(langs), seed)


def hf_model(seed: int = 0, attn: str = "eager", **config):
    """transformers' ModernBertForMaskedLM with the tiny preset's shapes (`config` overrides), norms and
    biases randomized so that a mix-up would show."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM  # seconds to import: see below

    torch.manual_seed(seed)
    model = ModernBertForMaskedLM(ModernBertConfig(**{**TINY.to_hf_dict(), **config})).eval()
    with torch.no_grad():  # norms are 1 at init: randomize them so a mix-up would show
        for name, p in model.named_parameters():
            if "norm" in name or "bias" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.config._attn_implementation = attn
    return model


def real_logits(model, ids, mask):
    """Logits at the real (unpadded) positions of a padded batch."""
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits[mask.bool()]


def resave_with_transformers(src: Path, dst: Path) -> Path:
    """The same model written by transformers' ModernBertForMaskedLM (its own config form)."""
    from transformers import ModernBertForMaskedLM  # seconds to import: only the tests that need it pay

    ModernBertForMaskedLM.from_pretrained(src).save_pretrained(dst)
    for f in src.glob("*token*"):
        shutil.copy(f, dst / f.name)
    return dst


# ---------------------------------------------------------------------------------------------- processes
# For the tests that kill processes and check what is left (Linux: they read /proc).
def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def running(pid: int) -> bool:
    """Whether any thread of process `pid` has yet to exit. A process whose main thread has exited shows
    as a zombie while another of its threads still finishes (and still holds its files and locks)."""
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return True
        except (OSError, IndexError):
            continue
    return False


# ---------------------------------------------------------------------------------------------- Composer
# The released raw mmBERT checkpoints are Composer `.pt` files in ModernBERT's training names, holding
# optimizer state, Composer's own objects and each rank's Python / NumPy / torch RNG states.
def composer_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' ModernBertForMaskedLM names -> ModernBERT's training names inside Composer's `model.`."""
    renames = (("model.layers.", "bert.encoder.layers."), ("model.embeddings.", "bert.embeddings."),
               ("model.final_norm.", "bert.final_norm."))  # fmt: skip
    out = {}
    for key, value in state_dict.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out["model." + key] = value
    return out


class ComposerTimestamp:
    """Stands for Composer's own classes (its `Timestamp`): the loader must skip it, never import it."""

    def __init__(self, batch: int) -> None:
        self.batch = batch


class RunsCode:
    """Pickles as a call of `open(marker, "w")`: a loader that ran pickled code would create `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def write_composer_checkpoint(
    path: Path, state_dict: dict[str, torch.Tensor], marker: Path | None = None, seed: int = 0
) -> Path:
    """A Composer checkpoint of the model `state_dict` (transformers' names) as ModernBERT's training
    writes it: `state.model` in training names, optimizer state, schedulers, Composer objects, seeds, and
    one rank's RNG states (Python, NumPy, torch); with `marker`, also an object whose unpickling would
    create that file."""
    random.seed(seed)
    np.random.seed(seed)
    model = composer_names(state_dict)
    names = [k for k in model if not k.endswith("decoder.weight")]
    optimizer = {
        "state": {k: {"exp_avg": torch.zeros_like(model[k]), "exp_avg_sq": torch.zeros_like(model[k]),
                      "step": torch.tensor(100.0)} for k in names[:3]},
        "param_groups": [{"lr": 8e-4, "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 8e-5, "params": names}],
    }  # fmt: skip
    state = {
        "model": model,
        "optimizers": {"StableAdamW": optimizer},
        "schedulers": [{"base_lrs": [8e-4], "last_epoch": 100}],
        "timestamp": ComposerTimestamp(batch=100),
        "rank_zero_seed": 17,
        "run_name": "mmbert-tiny-ext",
        "algorithms": [],
        "callbacks": {"SpeedMonitor": {"total_eval_wct": 0.0}}
        if marker is None
        else {"Evil": RunsCode(marker)},
        "integrations": {},
        "metadata": {"composer_env_info": {"composer_version": "0.24.1"}},
    }
    rng = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    torch.save({"state": state, "rng": [rng]}, path)
    return path
