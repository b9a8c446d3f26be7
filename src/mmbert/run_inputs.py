"""Where a run's model and tokenizer come from, and the checks that they fit each other and the data.

A run starts from a checkpoint of its own (a resumed run, or a decay variant from the shared
end-of-mid checkpoint), else from `--init-from` (an HF model directory, or a training checkpoint file
read by `mmbert.composer`: shapes from its tensors, the rest from the recipe's model), else from the
recipe's model preset with its tokenizer's vocabulary. `planned_config` answers the same question
without building anything, for `--dry-run`.

A checkpoint records what it was trained on (`fingerprints`: the prepared data's and the tokenizer's)
and where the run started (`init_from`); `check_same_inputs` refuses to continue it over other data,
another tokenizer or another `--init-from`, naming both sides.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmbert.composer import build_model, infer_config, is_checkpoint_file, read_composer_checkpoint
from mmbert.config import MmBertConfig
from mmbert.data.manifest import read_manifest
from mmbert.data.shards import TokenStore, UnionStore, check_tokenizer
from mmbert.errors import MmbertError
from mmbert.model import MmBertForMaskedLM
from mmbert.recipe import Recipe, RecipeError
from mmbert.tokenizer import TokenizerFiles, TokenizerLayoutError, layout_problems, read_tokenizer_files

logger = logging.getLogger(__name__)

# The fields that make two models' weights incompatible (what `--init-from` must agree on with the recipe).
SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


class InputsChangedError(MmbertError, ValueError):
    """A run continued over other data, another tokenizer or another `--init-from` than it started with."""


def planned_config(recipe: Recipe, init_from: Path | None = None) -> tuple[MmBertConfig, str]:
    """The config a new run's model will have, without building it, and which model that is.

    From `init_from`'s config.json, else the recipe's preset and overrides with the vocabulary of its
    tokenizer (the preset's while the tokenizer does not exist yet, as for a `--dry-run`).
    """
    if init_from is not None:
        check_init_from(init_from)
        if not is_checkpoint_file(init_from):
            return MmBertConfig.load(init_from), f"model of {init_from}"
    # A training checkpoint's shapes come from its tensors, the rest (the context length) from the recipe.
    tokenizer = Path(recipe.tokenizer) if recipe.tokenizer else None
    extra = (
        {"vocab_size": read_tokenizer_files(tokenizer).vocab_size} if tokenizer and tokenizer.is_dir() else {}
    )
    return recipe.model.build_config(**extra), f"model of {init_from}" if init_from else "model"


def check_init_from(init_from: Path) -> None:
    """`--init-from` must name a model directory or a checkpoint file that exists."""
    if not Path(init_from).exists():
        raise FileNotFoundError(f"--init-from {init_from}: no such model directory or checkpoint file")


def recipe_tokenizer(recipe: Recipe, why: str) -> Path:
    """The recipe's tokenizer directory; `why` says why it is needed when the recipe names none."""
    if not recipe.tokenizer:
        raise RecipeError(
            "tokenizer", f"the recipe names no tokenizer ({why}): set `tokenizer` (or tokenizer=DIR)"
        )
    return Path(recipe.tokenizer)


def initial_model(
    recipe: Recipe, saved_run: dict[str, Any] | None, init_from: Path | None
) -> tuple[MmBertForMaskedLM, Path]:
    """The model and its tokenizer: a checkpoint's (`saved_run`, its "run" entry: the model is built
    from its config, the weights come with the rest of its state), else `init_from`, else the recipe's."""
    if saved_run is not None:
        return MmBertForMaskedLM(MmBertConfig(**saved_run["model_config"])), Path(saved_run["tokenizer_dir"])
    if init_from is not None:
        check_init_from(init_from)
    if init_from is not None and is_checkpoint_file(init_from):
        # A training checkpoint: the shapes from its tensors, the rest from the recipe's model.
        tokenizer = recipe_tokenizer(recipe, f"{init_from} holds none")
        composer = read_composer_checkpoint(init_from)
        config = infer_config(composer, recipe.model.preset, **recipe.model.overrides)
        return build_model(composer, config), tokenizer
    if init_from is not None:
        has_tokenizer = (Path(init_from) / "tokenizer.json").is_file()
        tokenizer = Path(init_from) if has_tokenizer else recipe_tokenizer(recipe, f"{init_from} holds none")
        model = MmBertForMaskedLM.from_pretrained(init_from)
        warn_shape_change(recipe, model.config, tokenizer, init_from)
        return model, tokenizer
    tokenizer = recipe_tokenizer(recipe, "and no --init-from")
    config = recipe.model.build_config(vocab_size=read_tokenizer_files(tokenizer).vocab_size)
    return MmBertForMaskedLM(config), tokenizer


def checked_tokenizer(
    tokenizer_dir: Path, config: MmBertConfig, store: TokenStore | UnionStore
) -> TokenizerFiles:
    """The tokenizer's files, once they are checked: mmBERT's special ids, no more ids than the model's
    vocabulary, and the fingerprint the prepared data records (`mmbert.data.shards.check_tokenizer`)."""
    files = read_tokenizer_files(tokenizer_dir)
    problems = layout_problems(files)
    if problems:
        raise TokenizerLayoutError(f"tokenizer {tokenizer_dir}: " + "; ".join(problems))
    if files.vocab_size > config.vocab_size:
        raise TokenizerLayoutError(
            f"tokenizer {tokenizer_dir} has {files.vocab_size} ids, the model's vocabulary only "
            f"{config.vocab_size}"
        )
    check_tokenizer(store, files.identity())
    return files


def _shape(config: MmBertConfig) -> str:
    return ", ".join(f"{k} {getattr(config, k)}" for k in SHAPE_FIELDS)


def warn_shape_change(recipe: Recipe, config: MmBertConfig, tokenizer: Path, init_from: Path) -> None:
    """`--init-from`'s model is trained whatever the recipe's `model` says: say so when their shapes differ."""
    try:
        wanted = recipe.model.build_config(vocab_size=read_tokenizer_files(tokenizer).vocab_size)
    except (OSError, ValueError):
        return  # the tokenizer's own checks report it
    if any(getattr(wanted, k) != getattr(config, k) for k in SHAPE_FIELDS):
        logger.warning(
            "--init-from %s: its model (%s) is trained, not the recipe's model %r (%s); recipe.yaml records "
            "the model this run trains", init_from, _shape(config), recipe.model.preset, _shape(wanted),
        )  # fmt: skip


def used_recipe(recipe: Recipe, config: MmBertConfig, tokenizer_dir: Path) -> Recipe:
    """The recipe as the run really uses it: its model is the model trained (the recipe's preset with
    every field that differs as an override) and its tokenizer the run's tokenizer."""
    preset = MmBertConfig.preset(recipe.model.preset).to_dict()
    overrides = {k: v for k, v in config.to_dict().items() if preset.get(k) != v}
    model = dataclasses.replace(recipe.model, overrides=overrides)
    return dataclasses.replace(recipe, model=model, tokenizer=str(tokenizer_dir))


def data_fingerprint(data: Sequence[str | Path]) -> str:
    """16 hex digits that change when the prepared data under `data` changes: every manifest's sources
    (documents, tokens, shards and ranges per language), its tokenizer and its sources' fingerprints."""
    parts = []
    for path in data:
        manifest = read_manifest(path) or {}
        info = manifest.get("source_info", {})
        parts.append({
            "sources": manifest.get("sources", {}),
            "tokenizer": manifest.get("tokenizer", {}).get("sha256"),
            "source_fingerprints": {s: (info.get(s) or {}).get("fingerprint") for s in sorted(info)},
        })  # fmt: skip
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def check_same_inputs(
    source: Path,
    saved: dict[str, Any],
    fingerprints: dict[str, str],
    recipe: Recipe,
    init_from: Path | None,
    resuming: bool,
) -> None:
    """Refuse to continue checkpoint `source` (its `saved` state) over other data or another tokenizer
    (`fingerprints`: this run's); when `resuming`, also from another `--init-from` or with a recipe that
    names another tokenizer than the run started with (a resumed run keeps its checkpoint's)."""
    theirs = saved["fingerprints"]
    for key, what in (("data", "prepared data"), ("tokenizer", "tokenizer")):
        if theirs[key] != fingerprints[key]:
            raise InputsChangedError(
                f"{source} was trained on {what} with fingerprint {theirs[key]}; this run's {what} has "
                f"fingerprint {fingerprints[key]}: its data stream cannot continue over other {what}. "
                "Run it with the inputs it started with, or start a new run directory"
            )
    if not resuming:
        return
    started = saved["run"].get("init_from")
    if init_from is not None and str(init_from) != started:
        how = f"from --init-from {started}" if started else "without --init-from"
        raise InputsChangedError(
            f"{source}: this run started {how}, not from --init-from {init_from}: rerun it as it "
            "started (or without --init-from), or start a new run directory"
        )
    named, before = recipe.tokenizer, saved["run"]["recipe"].get("tokenizer")
    if named and named != before and Path(named).is_dir():
        theirs_now = read_tokenizer_files(named).identity()["fingerprint"]
        if theirs_now != theirs["tokenizer"]:
            raise InputsChangedError(
                f"{source}: this run trains with tokenizer {saved['run']['tokenizer_dir']} (fingerprint "
                f"{theirs['tokenizer']}); the recipe now names {named} (fingerprint {theirs_now}): rerun it "
                "with the tokenizer it started with, or start a new run directory"
            )
