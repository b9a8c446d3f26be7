"""Run a recipe's phases (and its decay variants) in one resumable, optionally distributed run.

    mmbert train RECIPE --out DIR [--variant NAME] [--init-from HFDIR|CKPT.pt [--from-phase P]] [--dry-run] [key=value ...]
    torchrun --nproc_per_node N -m mmbert.cli train RECIPE --out DIR [--strategy ddp|fsdp]

Rerunning the same command resumes from the newest complete checkpoint. `--init-from` starts from a
released or exported HF model (and its tokenizer) or a training checkpoint (Composer `.pt`, whose
tokenizer is the recipe's) instead of a random init; `--from-phase` skips the phases before it (e.g.
mmBERT's decay from its released end-of-mid-training checkpoint).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mmbert import distributed as dist
from mmbert.cli import Options, call, own_option
from mmbert.data.sampler import store_counts
from mmbert.data.shards import open_data
from mmbert.plan import format_plan, plan_recipe
from mmbert.recipe import Recipe, RecipeError, format_tokens, load_recipe
from mmbert.run_inputs import planned_config
from mmbert.run_layout import RunLayout
from mmbert.runs import run_recipe
from mmbert.schedule import Schedule
from mmbert.train import TrainOptions

INTERMIXED = True  # dotted overrides may come before and after the options
INTERRUPTED = "the last complete checkpoint is kept: rerun the same command to resume"


def add_arguments(p: argparse.ArgumentParser) -> None:
    own_option(p, "recipe", type=Path, help="recipe YAML file")
    own_option(p, "overrides", nargs="*", help="dotted.key=value recipe overrides (phases.0.tokens=1M)")
    launch = Options(p, run_recipe)
    launch.add("out", default=None, help="run directory (rerun the same command to resume)")
    launch.add("variant", help="run only this decay variant (in OUT/variants/NAME)")
    launch.add(
        "init_from", help="start from this HF model + tokenizer directory, or a training .pt checkpoint"
    )
    launch.add("from_phase", help="start at this phase of the recipe (needs --init-from); skip the earlier")
    own_option(p, "--dry-run", action="store_true", help="print the resolved recipe and the plan, then exit")
    machine = Options(p, dist.init_distributed)
    machine.shared("device")
    train = Options(p, TrainOptions)
    train.add("strategy", choices=dist.STRATEGIES, help="under torchrun")
    train.add("micro_batch_tokens", help="max tokens per forward/backward (gradient accumulation above it)")
    train.add("max_nonfinite_steps", help="stop after more consecutive non-finite losses than this")
    train.add("peak_flops", help="device peak FLOP/s for the MFU estimate")
    train.add("gradient_checkpointing", help="recompute layers in backward")
    train.add(
        "async_checkpoint",
        help="write checkpoints in the background (a second copy of each rank's state while it is written)",
    )
    machine.add(
        "timeout_s",
        "--timeout",
        metavar="SECONDS",
        help="under torchrun: seconds a rank waits in a collective for a peer before it gives up",
    )
    train.shared("progress")
    train.add(
        "log_every_steps",
        "--log-every",
        help="a step line every N steps (default: the recipe's train.log_every_steps; 0: none)",
    )
    train.add("tensorboard", help="no TensorBoard events")


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    if args.variant is not None and args.variant not in recipe.variant_names():
        declared = ", ".join(recipe.variant_names()) or "none"
        raise RecipeError("variant", f"no variant {args.variant!r} (declared: {declared})", str(args.recipe))
    config, model = planned_config(recipe, args.init_from)
    try:  # the Trainer checks again with the model it builds (a checkpoint's, when resuming)
        recipe.check_fits(config, int(os.environ.get("WORLD_SIZE", "1") or 1), model)
    except RecipeError as err:
        raise err.in_file(str(args.recipe)) from None
    if args.from_phase is not None:
        recipe.phase_index(args.from_phase, "--from-phase")
    if args.dry_run:
        print(describe(recipe, args.variant, args.from_phase))
        return 0
    if args.out is None:
        raise RecipeError("--out", "a run directory is required (rerun the same command to resume)")
    env = call(dist.init_distributed, args)
    try:
        runs = call(run_recipe, args, recipe, args.out, env, call(TrainOptions, args))
    except RuntimeError as err:
        if not (env.is_distributed and dist.lost_peer(err)):
            raise
        raise dist.PeerLostError(
            f"rank {env.rank}: a collective failed, another process of the run is gone "
            f"({str(err).splitlines()[0][:200]}); {INTERRUPTED}"
        ) from err
    finally:
        dist.shutdown()
    if env.is_main:
        for run_dir in runs:
            exports = sorted(p.name for p in RunLayout(run_dir).exports.glob("[!.]*"))
            print(f"{run_dir}: metrics.jsonl, checkpoints/, exports: {', '.join(exports)}")
    return 0


def describe(recipe: Recipe, variant: str | None, from_phase: str | None = None) -> str:
    """The resolved recipe, each phase's budget and steps, and the data plan when the data is prepared."""
    resolved = recipe.with_variant(variant)
    schedule = Schedule(resolved)
    lines = [resolved.to_yaml(), "# plan"]
    first = resolved.phase_index(from_phase) if from_phase else 0
    for i, phase in enumerate(resolved.phases):
        start = schedule.starts[i]
        if i < first:
            lines.append(
                f"# {phase.name}: skipped (--from-phase {from_phase}), its {format_tokens(phase.tokens)} tokens"
            )
            continue
        lines.append(
            f"# {phase.name}: tokens {format_tokens(phase.tokens)} from {format_tokens(start)}, "
            f"~{schedule.steps_in_phase(i)} steps of {format_tokens(schedule.full_batch_tokens(i))}, languages {phase.languages}, tau {phase.tau}, "
            f"mask {phase.mask_rate}, seq_len {phase.seq_len}, "
            f"lr {schedule.lr(start + 1, i):.2e} -> {schedule.lr(schedule.phase_end(i), i):.2e}"
        )
    if recipe.variant_names():
        lines.append(f"# decay variants: {', '.join(recipe.variant_names())} (each in OUT/variants/<name>/)")
    try:
        counts = store_counts(open_data(recipe.data))
        lines += ["", format_plan(plan_recipe(recipe, counts, variant), top=10)]
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        lines.append(f"# data plan unavailable: {err}")
    return "\n".join(lines)
