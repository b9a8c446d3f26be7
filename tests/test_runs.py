"""The run directories of a recipe (`mmbert.runs`): what is refused before any training starts (an
unknown variant, `--from-phase` without a model, an output that is an input or not a run, a run
directory another process writes), and the recipe of the phases the decay variants share.
Training runs themselves are `tests/test_train.py`'s."""

from __future__ import annotations

import pytest

from mmbert.distributed import init_distributed
from mmbert.io import OutputRefusedError
from mmbert.process import DirectoryInUseError, directory_lock
from mmbert.recipe import RecipeError, load_recipe
from mmbert.runs import is_run_dir, run_recipe, shared_recipe
from mmbert.train import TrainOptions

OPTIONS = TrainOptions(progress=False, tensorboard=False)


def test_the_variants_share_every_phase_but_the_last(train_inputs):
    plain, with_variants = (load_recipe(path) for path in train_inputs)
    shared = shared_recipe(with_variants)
    assert [p.name for p in shared.phases] == ["pre", "mid"] and shared.variant is None
    assert with_variants.phases[-1].variants and not shared.phases[-1].variants
    single = load_recipe(train_inputs[0], ["phases=[{name: only, tokens: 100}]"])
    assert shared_recipe(single) is None
    assert plain.variant_names() == []


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"variant": "nope"}, RecipeError, "declares no variant 'nope' \\(declared: eng, all\\)"),
        ({"from_phase": "mid"}, RecipeError, "--from-phase: needs --init-from"),
        ({"from_phase": "later", "init_from": "."}, RecipeError, "has no phase 'later'"),
    ],
)
def test_a_run_that_cannot_go_ahead_is_refused_before_training(
    train_inputs, tmp_path, kwargs, error, message
):
    recipe = load_recipe(train_inputs[1])
    with pytest.raises(error, match=message):
        run_recipe(recipe, tmp_path / "run", init_distributed("cpu"), OPTIONS, **kwargs)
    assert not (tmp_path / "run").exists()


def test_the_output_is_never_an_input_nor_a_directory_another_command_wrote(train_inputs, tmp_path):
    recipe = load_recipe(train_inputs[0])
    env = init_distributed("cpu")
    with pytest.raises(OutputRefusedError):
        run_recipe(recipe, recipe.data[0], env, OPTIONS)  # the prepared data
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    assert not is_run_dir(tmp_path / "notes")
    with pytest.raises(OutputRefusedError):
        run_recipe(recipe, tmp_path / "notes", env, OPTIONS)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


def test_one_writer_per_run_directory(train_inputs, tmp_path):
    recipe = load_recipe(train_inputs[0])
    with directory_lock(tmp_path / "run", "another mmbert train"):
        with pytest.raises(DirectoryInUseError, match="already being written by this process"):
            run_recipe(recipe, tmp_path / "run", init_distributed("cpu"), OPTIONS)
    assert is_run_dir(tmp_path / "run")  # its lock file marks it as a run's
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
