"""The run directories of a recipe: the shared phases, then each decay variant from their last checkpoint.

mmBERT's decay variants (Decay-Eng / Decay-Cont / Decay-All) start from the same end-of-mid-training
checkpoint. When a recipe's last phase declares `variants`, the phases before it run once in `OUT`
(ending in the pre-decay checkpoint `OUT/checkpoints/step-*-end-<phase>/`) and each variant runs in
`OUT/variants/<name>/` from that checkpoint. One variant can be run alone (`--variant NAME`), so several
machines can each run one once the shared checkpoint exists. Every run directory has its exports in
`export/<phase>/` (`mmbert.run_layout.RunLayout`).

`from_phase` starts the recipe at a later phase from `init_from` (an HF model or a training checkpoint
such as mmBERT's end-of-mid-training `.pt`): the phases before it are skipped. From the variant phase,
each variant starts from `init_from` itself; from an earlier phase, the shared phases from there on
run first, as above.

One writer per run directory: rank 0 holds the directory's lock (`mmbert.process.directory_lock`) while
a Trainer runs in it, and every rank stops with the same error, naming the holder, when another run
has it. `OUT` must be a new or empty directory, or one of these runs; it is never one of the run's
inputs (tokenizer, data, `--init-from`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from mmbert import checkpoint as ckpt
from mmbert import distributed as dist
from mmbert.distributed import DistEnv
from mmbert.errors import MmbertError
from mmbert.io import check_output, remove_stale_temps
from mmbert.process import directory_lock
from mmbert.recipe import Recipe, RecipeError
from mmbert.run_layout import RunLayout
from mmbert.train import Trainer, TrainOptions

logger = logging.getLogger(__name__)


def is_run_dir(directory: Path) -> bool:
    """Whether `directory` was written by `mmbert train`."""
    return RunLayout(directory).is_run()


def _on_main(env: DistEnv, action: Callable[[], object]) -> None:
    """`action()` on rank 0 only; when it fails as expected (`MmbertError`), every rank raises that."""
    error = None
    if env.is_main:
        try:
            action()
        except MmbertError as err:
            error = err
    message = dist.all_gather_objects(None if error is None else str(error))[0]  # rank 0's, everywhere
    if error is not None:
        raise error
    if message is not None:
        raise MmbertError(message)


@contextlib.contextmanager
def _hold(run_dir: Path, env: DistEnv) -> Iterator[None]:
    """Rank 0 holds `run_dir`'s lock for the block; every rank raises the same error if it cannot."""
    with contextlib.ExitStack() as stack:
        _on_main(env, lambda: stack.enter_context(directory_lock(run_dir, "mmbert train")))
        if env.is_main:  # the leftovers of a killed run in this directory (not in its variants' own)
            for directory in RunLayout(run_dir).temp_dirs():
                remove_stale_temps(directory)
        yield


def shared_recipe(recipe: Recipe) -> Recipe | None:
    """The recipe of the phases before the variant phase (None when the variants start from scratch)."""
    if len(recipe.phases) < 2:
        return None
    return dataclasses.replace(recipe, phases=recipe.phases[:-1], variant=None)


def run_recipe(
    recipe: Recipe,
    out: Path,
    env: DistEnv,
    options: TrainOptions,
    *,
    variant: str | None = None,
    init_from: Path | None = None,
    from_phase: str | None = None,
) -> list[Path]:
    """Train the recipe (and its decay variants, or only `variant`) into `out`; returns the run dirs trained."""
    variants = recipe.variant_names()
    if variant is not None and variant not in variants:
        raise RecipeError(
            "variant",
            f"the recipe declares no variant {variant!r} (declared: {', '.join(variants) or 'none'})",
        )
    if from_phase is not None:
        recipe.phase_index(from_phase, "--from-phase")
        if init_from is None:
            raise RecipeError("--from-phase", "needs --init-from: the phases before it are skipped")
    inputs = [recipe.tokenizer, *recipe.data, init_from]
    _on_main(env, lambda: check_output(out, inputs, is_own=is_run_dir, overwrite=None))
    if not variants:
        with _hold(out, env):
            Trainer(recipe, out, env, options, init_from=init_from, from_phase=from_phase).run()
        return [out]
    shared = shared_recipe(recipe)
    start_from = None
    runs = []
    if shared is not None and from_phase != recipe.phases[-1].name:
        pre_decay = shared.phases[-1].name
        start_from = ckpt.phase_end_checkpoint(out, pre_decay)
        if start_from is None:
            logger.info("training the phases shared by the decay variants in %s", out)
            with _hold(out, env):
                Trainer(shared, out, env, options, init_from=init_from, from_phase=from_phase).run()
            runs.append(out)
            start_from = ckpt.phase_end_checkpoint(out, pre_decay)
            if start_from is None:
                raise RuntimeError(
                    f"{out}: no checkpoint at the end of phase {pre_decay!r} after training it"
                )
    for name in [variant] if variant else variants:
        run_dir = RunLayout(out).variant(name).root
        logger.info("decay variant %s in %s", name, run_dir)
        init, first = (init_from, from_phase) if start_from is None else (None, None)
        with _hold(run_dir, env):
            Trainer(
                recipe.with_variant(name),
                run_dir,
                env,
                options,
                init_from=init,
                start_from=start_from,
                from_phase=first,
            ).run()
        runs.append(run_dir)
    return runs
