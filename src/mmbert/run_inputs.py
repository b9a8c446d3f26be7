"""Where a run's model and tokenizer come from, and the checks that they fit each other and the data.

A run starts from a checkpoint of its own (a resumed run, or a decay variant from the shared
end-of-mid checkpoint), else from `--init-from` (an HF model directory, or a training checkpoint file
read by `mmbert.composer`: shapes from its tensors, the rest from the recipe's model), else from the
recipe's model preset with its tokenizer's vocabulary. `planned_config` answers the same question
without building anything, for `--dry-run`.
"""

from __future__ import annotations

from pathlib import Path

from mmbert.composer import build_model, infer_config, is_checkpoint_file, read_composer_checkpoint
from mmbert.config import MmBertConfig
from mmbert.data.shards import TokenStore, UnionStore, check_tokenizer
from mmbert.model import MmBertForMaskedLM
from mmbert.recipe import Recipe, RecipeError
from mmbert.tokenizer import TokenizerFiles, TokenizerLayoutError, layout_problems, read_tokenizer_files


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
    recipe: Recipe, state: dict | None, init_from: Path | None
) -> tuple[MmBertForMaskedLM, Path]:
    """The model and its tokenizer: from the checkpoint, else `init_from`, else the recipe's."""
    if state is not None:
        return MmBertForMaskedLM(MmBertConfig(**state["model_config"])), Path(state["tokenizer_dir"])
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
        return MmBertForMaskedLM.from_pretrained(init_from), tokenizer
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
