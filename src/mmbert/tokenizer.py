"""Tokenizers: load any Hugging Face tokenizer, read its files, identify it, and give it mmBERT's layout.

mmBERT uses Gemma 2's tokenizer, whose special-token layout every recipe here assumes: pad 0 `<pad>`,
eos 1 `<eos>`, bos 2 `<bos>`, unk 3 `<unk>`, mask 4 `<mask>`; a sequence is `<bos> text <eos>` and a
pair `<bos> A <eos> B <eos>`. `mmbert.tokenizer_training` trains tokenizers with that layout, so a
recipe runs unchanged on Gemma 2's tokenizer (which a user downloads and points to) or ours. Gemma 2's
tokenizer as Google ships it has the ids but not the rest of the layout (`<mask>` not special, no
mask/cls/sep token named, `<bos> text` only): `layout_changes` lists what differs, `adapt_tokenizer`
fixes it without changing a token id (the "layout" section below).

Two calls read a tokenizer, at two levels:
- `read_tokenizer_files(path)`: its files as they are (tokenizer.json and its config), without
  transformers: what its identity (`TokenizerFiles.identity`, `fingerprint_sha256`) and its layout are
  read from (`require_layout=True` refuses one that cannot take mmBERT's ids before anything is done
  with it, as `mmbert prepare` and `mmbert tokenizer adapt` do);
- `load_tokenizer(path)`: a transformers tokenizer to encode with; `adapt=True` gives it mmBERT's layout
  in memory when its files differ (what inference and fine-tuning load).

This module reads no corpus: a model and its loaders import it without the document readers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer, processors

from mmbert.config import read_hf_config
from mmbert.errors import MmbertError
from mmbert.hf import check_tokenizer_fits
from mmbert.io import check_output, update_dir
from mmbert.tokens import BOS, BOS_ID, EOS, EOS_ID, ROLE_ALIASES, SPECIAL_IDS, SPECIAL_TOKENS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast


logger = logging.getLogger(__name__)

MODEL_MAX_LENGTH = 8192  # mmBERT's context after mid-training


def post_processor(bos: str = BOS, eos: str = EOS) -> processors.PostProcessor:
    """`<bos> a <eos>` and `<bos> a <eos> b <eos>` (the tokens at mmBERT's bos and eos ids)."""
    return processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} $B:1 {eos}:1",
        special_tokens=[(bos, BOS_ID), (eos, EOS_ID)],
    )


def wrap(
    tok: Tokenizer, tokens: Mapping[str, str] = SPECIAL_TOKENS, model_max_length: int = MODEL_MAX_LENGTH
) -> PreTrainedTokenizerFast:
    """A `tokenizers.Tokenizer` with mmBERT's layout as a transformers tokenizer.

    `tokens` names the token of each role (pad, eos, bos, unk, mask: mmBERT's strings by default);
    cls is the bos token and sep the eos token.
    """
    # transformers (it imports torch) is imported where a transformers tokenizer is made, not at the
    # top: `mmbert prepare` imports this module for `fingerprint_sha256` alone, and with transformers
    # at the top its start-up went from 0.4 s to 6 s (measured here).
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        **{f"{role}_token": tokens[role] for role in SPECIAL_IDS},
        **{f"{alias}_token": tokens[role] for alias, role in ROLE_ALIASES.items()},
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],  # ModernBERT takes no token_type_ids
    )


# Files that make up a tokenizer, in the order their identity is checked (first present wins).
TOKENIZER_IDENTITY_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
TOKENIZER_FILES = TOKENIZER_IDENTITY_FILES + (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)


def save_tokenizer(tok: PreTrainedTokenizerBase, out: str | Path) -> Path:
    """`save_pretrained` into `out`, replacing the tokenizer files there; other files (a model) stay.

    `out` is rebuilt beside itself and swapped in whole (`mmbert.io.update_dir`): it has the old
    tokenizer or the new one, never a mix. The result loads with
    `transformers.AutoTokenizer.from_pretrained(out)` (transformers 4.x and 5.x).
    """
    with update_dir(out, keep=lambda name: name not in TOKENIZER_FILES) as tmp:
        write_tokenizer_files(tok, tmp)
    return Path(out)


def only_tokenizer_files(directory: Path) -> bool:
    return all(f.name in TOKENIZER_FILES for f in directory.iterdir())


def write_tokenizer_files(tok: PreTrainedTokenizerBase, directory: str | Path) -> None:
    """Write a tokenizer's files into an existing `directory` that is being built (the temporary
    directory of `mmbert.io.atomic_dir`, which already holds a model).

    Not atomic by itself: a directory that others may read goes through `save_tokenizer`.
    """
    directory = Path(directory)
    with tempfile.TemporaryDirectory() as saved:
        tok.save_pretrained(saved)
        for name in sorted(f.name for f in Path(saved).iterdir()):
            data = (Path(saved) / name).read_bytes()
            if name == "tokenizer_config.json":
                data = _loadable_by_transformers_4(data)
            (directory / name).unlink(
                missing_ok=True
            )  # a hard link to the old directory's file stays as it was
            (directory / name).write_bytes(data)


def _loadable_by_transformers_4(config: bytes) -> bytes:
    """transformers 5 writes its new class name, which 4.x cannot load; the old name loads in both."""
    cfg = json.loads(config)
    if cfg.get("tokenizer_class") != "TokenizersBackend":
        return config
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    return (json.dumps(cfg, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def special_token_mismatches(tok: PreTrainedTokenizerBase) -> list[str]:
    """How a tokenizer's special ids differ from mmBERT's layout (empty when they match)."""
    problems = []
    for name, expected in SPECIAL_IDS.items():
        actual = getattr(tok, f"{name}_token_id", None)
        if actual != expected:
            token = getattr(tok, f"{name}_token", None)
            problems.append(f"{name} token {token!r} has id {actual}, mmBERT uses {expected}")
    return problems


def _broken_json_file(directory: Path) -> str | None:
    """The first of a tokenizer directory's JSON files that is not JSON (cut short by a copy, edited
    by hand), as an error naming it; transformers' own message names neither the file nor the folder."""
    for name in TOKENIZER_FILES:
        file = directory / name
        if name.endswith(".json") and file.is_file():
            try:
                json.loads(file.read_text(encoding="utf-8"))
            except (ValueError, OSError) as e:  # UnicodeDecodeError and JSONDecodeError included
                return f"{file}: not valid JSON ({e}): the tokenizer files are damaged"
    return None


def _load_as_shipped(path_or_name: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer directory or a locally cached Hub name (offline) as transformers loads it; a warning
    for each special id that differs from mmBERT's layout.

    A different layout (e.g. a tokenizer without a mask token) works where the code takes the ids from
    the tokenizer, but a recipe written for mmBERT's ids will not match it, hence the warning.
    """
    from transformers import AutoTokenizer  # not at the top: see `wrap`

    path = Path(path_or_name)
    local = path.is_dir()
    if not local and path.exists():
        raise NotADirectoryError(f"{path}: a tokenizer is a directory (with tokenizer.json or similar)")
    if not local and (path.is_absolute() or str(path_or_name).startswith(".")):
        raise FileNotFoundError(f"{path}: no such tokenizer directory")
    if local and not any((path / name).is_file() for name in TOKENIZER_FILES):
        what = "an empty directory" if not any(path.iterdir()) else "a directory without tokenizer files"
        raise FileNotFoundError(f"{path}: {what} (a tokenizer has {', '.join(TOKENIZER_IDENTITY_FILES)})")
    try:
        # a name is looked up in the local cache only: nothing is downloaded behind the user's back
        offline = {} if local else {"local_files_only": True}
        tok = AutoTokenizer.from_pretrained(str(path_or_name), **offline)
    except (OSError, ValueError) as e:
        if local and (broken := _broken_json_file(path)) is not None:
            raise ValueError(broken) from e
        where = "directory" if local else "name (not a directory, and not in the local Hugging Face cache)"
        raise ValueError(f"cannot load tokenizer '{path_or_name}' from this {where}: {e}") from e
    for problem in special_token_mismatches(tok):
        logger.warning("tokenizer %s: %s", path_or_name, problem)
    return tok


# ---------------------------------------------------------------------------------------------- layout
# mmBERT's layout on any tokenizer. A tokenizer whose vocabulary holds the five special ids (Gemma 2's as
# Google ships it) is accepted as it is: its ids are the ids of its adapted form (the fingerprint leaves
# out special flags and post-processing), so data prepared with either serves both. What its files say
# beyond the ids (which tokens are special, which are the mask, cls and sep tokens, what a sequence
# looks like, the context length) is read from the files themselves, not from what one transformers
# version makes of them, and `adapt_tokenizer` brings it to mmBERT's layout: in every training export,
# by `mmbert tokenizer adapt`, and in memory when a model is loaded for inference.

TOKENIZER_FILE = "tokenizer.json"


class TokenizerLayoutError(MmbertError, ValueError):
    """A tokenizer that cannot be read, or cannot take mmBERT's layout; the message names what is missing."""


@dataclass
class TokenizerFiles:
    """A tokenizer as its files say: `tokenizer.json` (the `tokenizers` backend) and its transformers config."""

    source: str  # the directory or Hub name it was read from
    directory: Path
    text: str  # tokenizer.json as read
    backend: Tokenizer
    config: dict[str, Any]  # tokenizer_config.json ({} when absent)
    names: dict[str, str]  # role (pad, eos, bos, unk, mask, cls, sep) -> the token the config names

    def role_token(self, role: str) -> str:
        """The token playing `role`: the one the config names, else mmBERT's string."""
        return self.names.get(role) or SPECIAL_TOKENS[role]

    def special_ids(self) -> dict[str, int | None]:
        """Each role's id in the vocabulary (None when its token is not in it)."""
        return {role: self.backend.token_to_id(self.role_token(role)) for role in SPECIAL_IDS}

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def identity(self) -> dict[str, Any]:
        """What prepared data records about the tokenizer that cut it (`mmbert.data.manifest`)."""
        digest = fingerprint_sha256(self.backend)
        return {
            "path": self.source,
            "vocab_size": self.vocab_size,
            "special_ids": self.special_ids(),
            "sha256": digest,
            "fingerprint": digest[:16],
        }


def _config_token(value: Any) -> str | None:
    if isinstance(value, dict):  # tokenizer_config.json may store AddedToken dicts
        value = value.get("content")
    return value if isinstance(value, str) else None


def _cached_snapshot(name: str) -> Path:
    """The local copy of a Hub repository (never downloaded: only what the cache holds)."""
    # huggingface_hub is imported only for a Hub name: a directory, the common case, does not pay for it.
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception as e:  # the hub raises its own types for a bad name or a cache miss
        raise TokenizerLayoutError(
            f"cannot load tokenizer {name!r}: not a directory, and not in the local Hugging Face cache ({e})"
        ) from None


def read_tokenizer_files(path_or_name: str | Path, *, require_layout: bool = False) -> TokenizerFiles:
    """Read a tokenizer directory (or a locally cached Hub name): `tokenizer.json` and its config files.

    With `require_layout`, a tokenizer that cannot take mmBERT's layout (`layout_problems`) is refused
    here, with each missing or misplaced special token named: what must hold before data is cut with
    it or its layout is written.
    """
    path = Path(path_or_name)
    if path.exists() and not path.is_dir():
        raise TokenizerLayoutError(f"{path}: a tokenizer is a directory (with {TOKENIZER_FILE})")
    if not path.exists() and (path.is_absolute() or str(path_or_name).startswith(".")):
        raise TokenizerLayoutError(f"{path}: no such tokenizer directory")  # a path, not a Hub name
    directory = path if path.is_dir() else _cached_snapshot(str(path_or_name))
    file = directory / TOKENIZER_FILE
    if not file.is_file():
        raise TokenizerLayoutError(f"{directory}: no {TOKENIZER_FILE} (the file of a fast tokenizer)")
    text = file.read_text(encoding="utf-8")
    try:
        backend = Tokenizer.from_str(text)
    except Exception as e:  # tokenizers raises a plain Exception for a bad file
        raise TokenizerLayoutError(f"{file}: not a tokenizer: {e}") from None
    configs: dict[str, dict[str, Any]] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (directory / name).is_file():
            try:
                configs[name] = json.loads((directory / name).read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise TokenizerLayoutError(f"{directory / name}: not valid JSON: {e}") from None
    names: dict[str, str] = {}
    # transformers lets special_tokens_map.json override tokenizer_config.json: it is read first here.
    for config in configs.values():
        for role in (*SPECIAL_IDS, *ROLE_ALIASES):
            token = _config_token(config.get(f"{role}_token"))
            if token and role not in names:
                names[role] = token
    files = TokenizerFiles(
        str(path_or_name), directory, text, backend, configs.get("tokenizer_config.json", {}), names
    )
    if require_layout and (problems := layout_problems(files)):
        raise TokenizerLayoutError(
            f"tokenizer {path_or_name} cannot take mmBERT's layout: " + "; ".join(problems)
        )
    return files


def layout_problems(files: TokenizerFiles) -> list[str]:
    """Why a tokenizer cannot take mmBERT's layout: a special token missing or at another id (empty when it can)."""
    problems = []
    for role, expected in SPECIAL_IDS.items():
        token = files.role_token(role)
        found = files.backend.token_to_id(token)
        if found is None:
            how = (
                f"its {role}_token {token!r} is not in the vocabulary"
                if role in files.names
                else f"the config names none and the vocabulary has no {token!r}"
            )
            problems.append(f"no {role} token ({how})")
        elif found != expected:
            holder = files.backend.id_to_token(expected)
            held = f", where it has {holder!r}" if holder is not None else ""
            problems.append(
                f"{role} token {token!r} has id {found}, mmBERT's layout needs id {expected}{held}"
            )
    return problems


@dataclass(frozen=True)
class LayoutChange:
    """One way a tokenizer's files differ from mmBERT's layout, and what `adapt_tokenizer` does about it."""

    found: str
    change: str

    def __str__(self) -> str:
        return f"{self.found}: {self.change}"


def _template(tok: Tokenizer, pair: bool) -> str:
    """How the post-processor frames one text (`a`) or a pair (`a`, `b`), e.g. `<bos> a <eos>`."""
    parts = [("a", tok.encode("a", add_special_tokens=False).ids)]
    if pair:
        parts.append(("b", tok.encode("b", add_special_tokens=False).ids))
    ids = (tok.encode("a", "b") if pair else tok.encode("a")).ids
    words, i = [], 0
    while i < len(ids):
        if parts and parts[0][1] and ids[i : i + len(parts[0][1])] == parts[0][1]:
            words.append(parts[0][0])
            i += len(parts.pop(0)[1])
        else:
            words.append(str(tok.id_to_token(ids[i])))
            i += 1
    return " ".join(words)


def layout_changes(
    files: TokenizerFiles, model_max_length: int | None = MODEL_MAX_LENGTH
) -> list[LayoutChange]:
    """Each way the files differ from mmBERT's layout (`model_max_length` None: not checked), in file order.

    The layout: the five special tokens marked special and named as pad, eos, bos, unk and mask tokens,
    cls = bos and sep = eos, `<bos> a <eos>` for one text and `<bos> a <eos> b <eos>` for a pair, the
    model's `model_max_length`, right padding, and the class `PreTrainedTokenizerFast` (which uses
    tokenizer.json's post-processor as it is; GemmaTokenizer and others rebuild their own).
    """
    changes = []
    cls = files.config.get("tokenizer_class")
    if cls not in (None, "PreTrainedTokenizerFast"):
        changes.append(LayoutChange(f"tokenizer_class is {cls}", "write PreTrainedTokenizerFast"))
    added = {t["id"]: t for t in json.loads(files.text).get("added_tokens") or []}
    targets = {role: str(files.backend.id_to_token(i)) for role, i in SPECIAL_IDS.items()}
    for role, i in SPECIAL_IDS.items():
        entry = added.get(i)
        if entry is None:
            changes.append(
                LayoutChange(f"{targets[role]!r} (id {i}) is not an added token", "add it as a special token")
            )
        elif not entry.get("special"):
            changes.append(
                LayoutChange(f"{targets[role]!r} (id {i}) is not marked special", "mark it special")
            )
    targets.update({alias: targets[role] for alias, role in ROLE_ALIASES.items()})
    for role, target in targets.items():
        named = files.names.get(role)
        if named != target:
            found = f"{role}_token is {named!r}" if named else f"{role}_token is not set"
            changes.append(LayoutChange(found, f"set it to {target!r}"))
    bos, eos = targets["bos"], targets["eos"]
    plain = files.backend
    if plain.padding or plain.truncation:  # a copy without them (a copy of Gemma's 256k ids takes a second)
        plain = Tokenizer.from_str(plain.to_str())
        plain.no_padding()
        plain.no_truncation()
    for pair, want in ((False, f"{bos} a {eos}"), (True, f"{bos} a {eos} b {eos}")):
        got = _template(plain, pair)
        if got != want:
            what = "a pair of texts is" if pair else "one text is"
            changes.append(LayoutChange(f"{what} encoded as `{got}`", f"encode it as `{want}`"))
    found_max = files.config.get("model_max_length")
    if model_max_length is not None and found_max != model_max_length:
        changes.append(LayoutChange(f"model_max_length is {found_max}", f"set it to {model_max_length}"))
    if files.config.get("padding_side", "right") != "right":
        changes.append(LayoutChange(f"padding_side is {files.config['padding_side']!r}", "set it to 'right'"))
    return changes


def adapt_tokenizer(
    files: TokenizerFiles, model_max_length: int = MODEL_MAX_LENGTH
) -> PreTrainedTokenizerFast:
    """The tokenizer with mmBERT's layout (`layout_changes`); the same ids for every text.

    Raises `TokenizerLayoutError` naming each missing or misplaced special token (`layout_problems`).
    A special token that was only in the vocabulary becomes an added token, which is then matched in
    text: only then does the fingerprint change.
    """
    problems = layout_problems(files)
    if problems:
        raise TokenizerLayoutError(f"{files.source}: cannot take mmBERT's layout: " + "; ".join(problems))
    state = json.loads(files.text)
    tokens = {role: str(files.backend.id_to_token(i)) for role, i in SPECIAL_IDS.items()}
    added = state.get("added_tokens") or []
    by_id = {t["id"]: t for t in added}
    for role, i in SPECIAL_IDS.items():
        if i in by_id:
            by_id[i]["special"] = True
        else:
            flags = dict.fromkeys(("single_word", "lstrip", "rstrip", "normalized"), False)
            added.append({"id": i, "content": tokens[role], **flags, "special": True})
    state["added_tokens"] = sorted(added, key=lambda t: t["id"])
    backend = Tokenizer.from_str(json.dumps(state))
    backend.post_processor = post_processor(tokens["bos"], tokens["eos"])
    return wrap(backend, tokens, model_max_length)


def load_tokenizer(path_or_name: str | Path, *, adapt: bool = False) -> PreTrainedTokenizerBase:
    """The one way to load a tokenizer to encode with: a directory or a locally cached Hub name (offline).

    As shipped by default, with a warning for each special id that differs from mmBERT's layout. With
    `adapt` (a model's tokenizer for inference or fine-tuning), adapted in memory when its files differ
    from mmBERT's layout, so that `<mask>` is the mask token and texts are framed `<bos> ... <eos>` as
    in training; loaded as it is when it cannot take the layout (a tokenizer of another family keeps
    its own).
    """
    if not adapt:
        return _load_as_shipped(path_or_name)
    try:
        files = read_tokenizer_files(path_or_name)
    except TokenizerLayoutError:
        return _load_as_shipped(path_or_name)
    if layout_problems(files) or not (changes := layout_changes(files, model_max_length=None)):
        return _load_as_shipped(path_or_name)
    logger.info(
        "%s: adapted to mmBERT's layout in memory (%s); `mmbert tokenizer adapt` writes it",
        path_or_name,
        "; ".join(map(str, changes)),
    )
    return adapt_tokenizer(files, files.config.get("model_max_length") or MODEL_MAX_LENGTH)


@dataclass
class AdaptReport:
    """What `adapt_and_save` changed and where it wrote the result."""

    out: Path
    changes: list[LayoutChange]
    fingerprint: str  # of the result
    source_fingerprint: str  # the same unless a special token had to become an added token


def check_model_max_length(model_max_length: int) -> None:
    """`--model-max-length`: a context of at least two tokens (`<bos>` and `<eos>`)."""
    if model_max_length < 2:
        raise ValueError(f"--model-max-length must be >= 2 (<bos> and <eos>), got {model_max_length}")


def adapt_and_save(
    source: str | Path, out: str | Path, *, model_max_length: int = MODEL_MAX_LENGTH, overwrite: bool = False
) -> AdaptReport:
    """`mmbert tokenizer adapt`: write `source`'s tokenizer with mmBERT's layout into `out`.

    With `overwrite`, `out` may be `source` itself or hold a model (its files stay, its tokenizer files
    are replaced); without, `out` is new, empty or a directory of tokenizer files only, and holds no
    tokenizer yet. `out` changes in one step (`save_tokenizer`).
    """
    check_model_max_length(model_max_length)
    files = read_tokenizer_files(source, require_layout=True)
    out = Path(out)
    check_output(out, [files.directory], is_own=only_tokenizer_files, overwrite=overwrite, replaced=True)
    if not overwrite and (out / TOKENIZER_FILE).exists():
        raise TokenizerLayoutError(f"{out} already holds a tokenizer: --overwrite replaces it")
    changes = layout_changes(files, model_max_length)
    tok = adapt_tokenizer(files, model_max_length)
    if (out / "config.json").is_file():  # into a model's folder: only a tokenizer with its vocabulary
        special = {"pad": tok.pad_token_id, "mask": tok.mask_token_id}
        check_tokenizer_fits(read_hf_config(out), len(tok), special, out, source)
    save_tokenizer(tok, out)
    return AdaptReport(out, changes, fingerprint(tok), fingerprint(files.backend))


# What an added token's entry says about matching it in text. Its `special` flag is left out: it only
# decides what decoding may skip, and a tokenizer whose `<mask>` was re-marked special gives the same ids.
_ADDED_TOKEN_KEYS = ("id", "content", "single_word", "lstrip", "rstrip", "normalized")


def fingerprint_sha256(tok: Tokenizer | PreTrainedTokenizerBase | str) -> str:
    """The project's one identity of a tokenizer: a SHA-256 (hex) of what decides the token ids of a text.

    That is the model (vocabulary, merges or scores), the normalizer, the pre-tokenizer and the added
    tokens (matched in the text before the model sees it), as `tokenizers` serializes them, so a file
    re-saved with other formatting is the same tokenizer. Padding, truncation, the post-processor (the
    `<bos>`/`<eos>` around a sequence) and the decoder are left out: prepared data holds ids without
    special tokens, and adapting a shipped tokenizer to mmBERT's layout changes only those. `tok` is a
    `tokenizers.Tokenizer`, the text of a tokenizer.json, or a transformers tokenizer (its backend; a
    slow one is identified by its vocabulary).
    """
    if isinstance(tok, str):
        tok = Tokenizer.from_str(tok)
    if not isinstance(tok, Tokenizer):
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is None:
            blob = json.dumps(sorted(tok.get_vocab().items()), ensure_ascii=False)
            return hashlib.sha256(blob.encode()).hexdigest()
        tok = backend
    state = json.loads(tok.to_str())
    added = [{k: t[k] for k in _ADDED_TOKEN_KEYS} for t in state.get("added_tokens") or []]
    identity = {
        "model": state["model"],
        "normalizer": state.get("normalizer"),
        "pre_tokenizer": state.get("pre_tokenizer"),
        "added_tokens": sorted(added, key=lambda t: t["id"]),
    }
    blob = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def fingerprint(tok: Tokenizer | PreTrainedTokenizerBase | str) -> str:
    """`fingerprint_sha256` in short (its first 16 hex digits), as `tokenizer info` and the manifest show it."""
    return fingerprint_sha256(tok)[:16]


@dataclass
class TokenizerSummary:
    """A tokenizer's size, special tokens and fingerprint, and how it differs from mmBERT's layout."""

    name: str
    class_name: str  # what transformers loads it as
    size: int
    model_max_length: int
    special: dict[str, tuple[str | None, int | None]]  # role (pad, eos, ...) -> (token, id)
    problems: list[str]  # why it cannot take mmBERT's layout (`layout_problems`); empty when it can
    changes: list[LayoutChange] | None  # what `adapt_tokenizer` changes; None without a tokenizer.json
    fingerprint: str


def summarize_tokenizer(
    path_or_name: str | Path, model_max_length: int = MODEL_MAX_LENGTH
) -> TokenizerSummary:
    """Load a tokenizer (`load_tokenizer`) and describe it against mmBERT's layout: from its files when it
    has a tokenizer.json (what the manifest and merges also read), else as transformers loads it."""
    check_model_max_length(model_max_length)
    tok = load_tokenizer(path_or_name)
    try:
        files: TokenizerFiles | None = read_tokenizer_files(path_or_name)
    except TokenizerLayoutError:  # a slow tokenizer only (transformers loaded it above)
        files = None
    if files is not None:  # the tokens the files give each role (transformers may not name them all)
        special = {role: (files.role_token(role), i) for role, i in files.special_ids().items()}
    else:
        special = {
            role: (getattr(tok, f"{role}_token", None), getattr(tok, f"{role}_token_id", None))
            for role in SPECIAL_IDS
        }
    return TokenizerSummary(
        name=str(path_or_name),
        class_name=type(tok).__name__,
        size=len(tok),
        model_max_length=tok.model_max_length,
        special=special,
        problems=layout_problems(files) if files is not None else special_token_mismatches(tok),
        changes=layout_changes(files, model_max_length) if files is not None else None,
        # Of the file, as prepared data and merges record it: transformers' class for a tokenizer may
        # rebuild parts of it (transformers 5's GemmaTokenizer sets a pre-tokenizer that changes no id).
        fingerprint=fingerprint(files.backend if files is not None else tok),
    )
