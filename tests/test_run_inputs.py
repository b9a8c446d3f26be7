"""Where a run's model and tokenizer come from (`mmbert.run_inputs`): the recipe's tokenizer and preset,
an `--init-from` model directory, and the checks before the first step (special ids, vocabulary size,
the tokenizer the data was prepared with)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmbert.config import MmBertConfig
from mmbert.data.shards import DataTokenizerError, open_data
from mmbert.recipe import RecipeError, load_recipe
from mmbert.run_inputs import (
    check_init_from,
    checked_tokenizer,
    initial_model,
    planned_config,
    recipe_tokenizer,
)
from mmbert.tokenizer import TokenizerLayoutError, read_tokenizer_files
from tests.helpers.exports import make_tiny_export
from tests.helpers.tokenizer import make_tokenizer
from tests.helpers.training import fake_documents


def test_a_new_run_takes_the_recipes_preset_with_its_tokenizers_vocabulary(train_inputs):
    recipe = load_recipe(train_inputs[0])
    vocab = read_tokenizer_files(recipe.tokenizer).vocab_size
    config, what = planned_config(recipe)
    assert (config.vocab_size, config.hidden_size, what) == (
        vocab,
        MmBertConfig.preset("tiny").hidden_size,
        "model",
    )
    model, tokenizer = initial_model(recipe, None, None)
    assert model.config.vocab_size == vocab and tokenizer == Path(recipe.tokenizer)


def test_init_from_a_model_directory_takes_its_config_and_tokenizer(train_inputs, tmp_path):
    recipe = load_recipe(train_inputs[0])
    export = make_tiny_export(tmp_path / "export")
    config, what = planned_config(recipe, export)
    assert config == MmBertConfig.load(export) and what == f"model of {export}"
    model, tokenizer = initial_model(recipe, None, export)
    assert tokenizer == export and model.config.vocab_size == config.vocab_size
    with pytest.raises(FileNotFoundError, match="--init-from .*no such model directory"):
        check_init_from(tmp_path / "missing")


def test_a_recipe_without_a_tokenizer_says_why_one_is_needed(train_inputs):
    recipe = load_recipe(train_inputs[0], ["tokenizer=null"])
    with pytest.raises(RecipeError, match="names no tokenizer \\(and no --init-from\\)"):
        recipe_tokenizer(recipe, "and no --init-from")
    with pytest.raises(RecipeError, match="names no tokenizer"):
        initial_model(recipe, None, None)


def test_the_tokenizer_is_checked_against_the_model_and_the_prepared_data(train_inputs, tmp_path):
    recipe = load_recipe(train_inputs[0])
    store = open_data(recipe.data)
    files = read_tokenizer_files(recipe.tokenizer)
    config = MmBertConfig.preset("tiny", vocab_size=files.vocab_size)
    assert checked_tokenizer(Path(recipe.tokenizer), config, store).identity() == files.identity()
    with pytest.raises(
        TokenizerLayoutError, match=f"has {files.vocab_size} ids, the model's vocabulary only"
    ):
        checked_tokenizer(
            Path(recipe.tokenizer), MmBertConfig.preset("tiny", vocab_size=files.vocab_size - 1), store
        )
    # Another tokenizer of the same size and layout: not the one the data was cut with.
    other = make_tokenizer(tmp_path / "other", [text[::-1] for _, text in fake_documents()])
    bigger = MmBertConfig.preset(
        "tiny", vocab_size=max(files.vocab_size, read_tokenizer_files(other).vocab_size)
    )
    with pytest.raises(DataTokenizerError, match="the data was prepared with tokenizer"):
        checked_tokenizer(other, bigger, store)
