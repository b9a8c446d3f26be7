"""The training loop: a recipe's phases in one resumable, optionally distributed run.

A step is one optimizer update on the global batch that `Schedule.at(tokens)` names (whole rows of
the phase's `seq_len`, split evenly over the ranks), accumulated over the micro-batches the
`BatchLoader` cuts so that memory stays bounded. Its loss is the mean cross-entropy over every masked
token of the global batch, so the gradient does not depend on how the batch was cut into micro-batches
and ranks. Everything that changes between phases (mask rate, tau, languages, sources, seq_len, RoPE
theta, LR, weight decay) comes from the schedule; crossing a phase's last token swaps the data mixture
and the RoPE frequencies in place, and the model and optimizer (with its moments) are never rebuilt.

Resume: every `train.checkpoint_every_tokens` tokens and at every phase end the full state (model,
optimizer, step, tokens, each rank's data stream and RNG states, the resolved recipe) is written
atomically (`mmbert.checkpoint`); rerunning the same command continues from the newest complete
checkpoint and `metrics.jsonl` drops the lines after it, so a run killed at any moment and rerun logs
the same losses as one that never stopped (CPU, same seed).

A `Trainer` runs one recipe in one run directory; `mmbert.runs.run_recipe` decides which run
directories a recipe with decay variants needs and starts a Trainer in each. A run may start from a
later phase (`from_phase`): it begins at that phase's first token of the recipe's schedule (so its LR,
batch size and token counts are the recipe's), from an HF model or a training checkpoint (`init_from`:
a directory, or a Composer `.pt` file read by `mmbert.composer`).

Before the first step the run's tokenizer (the checkpoint's, `init_from`'s, or the recipe's:
`mmbert.run_inputs`) must be the one the prepared data was cut with (by fingerprint) and
must hold mmBERT's special ids; the shards' token-id ranges (recorded in the manifest by `prepare`) are
checked against the model's vocabulary before the first step. Every export holds the tokenizer with mmBERT's layout (`mmbert.tokenizer.adapt_tokenizer`),
so that it works as it is in `mmbert fill-mask` and transformers' pipelines.

Outputs in a run directory: `metrics.jsonl`, `tb/`, `checkpoints/`, `export/<phase>/` (HF-format model
+ tokenizer at each phase end) and `recipe.yaml` (the resolved recipe).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mmbert import checkpoint as ckpt
from mmbert import distributed as dist
from mmbert.data.loader import BatchLoader
from mmbert.data.shards import open_data
from mmbert.errors import MmbertError
from mmbert.flops import default_peak_flops, train_flops
from mmbert.io import atomic_dir
from mmbert.metrics import RunLog
from mmbert.model import MmBertForMaskedLM
from mmbert.optim import build_optimizer, set_schedule
from mmbert.recipe import Phase, Recipe, RecipeError
from mmbert.run_inputs import checked_tokenizer, initial_model
from mmbert.schedule import Schedule
from mmbert.tokenizer import (
    adapt_tokenizer,
    write_tokenizer_files,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainOptions:
    """Settings about the machine and the operator, not the recipe (at most float rounding changes)."""

    strategy: str = "ddp"
    micro_batch_tokens: int = 16_384
    max_nonfinite_steps: int = 8
    peak_flops: float | None = None
    lang_shares_every_steps: int = 10
    progress: bool = True
    tensorboard: bool = True
    gradient_checkpointing: bool = False
    # A step line in the log every N steps: None the recipe's train.log_every_steps; 0 none (the progress
    # bar, metrics.jsonl and TensorBoard have every step; each phase still gets its lines).
    log_every_steps: int | None = None

    def __post_init__(self) -> None:
        if self.micro_batch_tokens < 1:
            raise ValueError(f"--micro-batch-tokens must be >= 1, got {self.micro_batch_tokens}")
        if self.max_nonfinite_steps < 0:
            raise ValueError(f"--max-nonfinite-steps must be >= 0, got {self.max_nonfinite_steps}")
        if self.peak_flops is not None and not self.peak_flops > 0:
            raise ValueError(f"--peak-flops must be > 0, got {self.peak_flops}")
        if self.log_every_steps is not None and self.log_every_steps < 0:
            raise ValueError(f"--log-every must be >= 0, got {self.log_every_steps}")


def export_dir(run_dir: Path, phase_name: str) -> Path:
    """The HF-format export (model + tokenizer) a run directory holds for the end of phase `phase_name`."""
    return Path(run_dir) / "export" / phase_name


class NonFiniteLossError(MmbertError, RuntimeError):
    """Too many non-finite losses in a row; the last good checkpoint is named in the message."""

    exit_code = 3


class Trainer:
    """Trains `recipe`'s phases in `run_dir`; `start_from` is a checkpoint to begin from (decay variants),
    `init_from` an HF model directory or a training checkpoint file for the weights, `from_phase` the
    phase to start at (the ones before it are skipped)."""

    def __init__(
        self,
        recipe: Recipe,
        run_dir: Path,
        env: dist.DistEnv,
        options: TrainOptions,
        *,
        init_from: Path | None = None,
        start_from: Path | None = None,
        from_phase: str | None = None,
    ) -> None:
        self.recipe, self.run_dir, self.env, self.options = recipe, Path(run_dir), env, options
        self.schedule = Schedule(recipe)
        self.device = env.device
        if not recipe.data:
            raise RecipeError("data", "the recipe lists no prepared data directory (`mmbert prepare`)")
        resume = ckpt.latest(self.run_dir)
        source = resume or start_from
        state = ckpt.load_checkpoint(source) if source else None
        if state is not None:
            how = "resuming" if resume else "starting"
            logger.info("%s from %s (step %d, %d tokens)", how, source, state["step"], state["tokens"])
            changed = Recipe.from_dict(state["recipe"]).diff(recipe) if resume else []
            if changed:
                logger.warning("recipe differs from the one in %s at: %s", source, ", ".join(changed[:10]))

        # The phase this run started at: a resumed run keeps the one its checkpoint records.
        self.first_phase = state["trainer"].get("first_phase") if state is not None else from_phase
        first_index = recipe.phase_index(self.first_phase, "--from-phase") if self.first_phase else 0
        torch.manual_seed(recipe.seed)  # identical init on every rank
        model, self.tokenizer_dir = initial_model(recipe, state, init_from)
        self.config = model.config
        where = f"model of {source}" if source else f"model of {init_from}" if init_from else "model"
        recipe.check_fits(self.config, env.world_size, where)
        store = open_data(recipe.data, vocab_size=self.config.vocab_size)
        tokenizer = checked_tokenizer(self.tokenizer_dir, self.config, store)
        # transformers (seconds to import) only where exports are written
        main = env.is_main
        self.export_tokenizer = (
            adapt_tokenizer(tokenizer, self.config.max_position_embeddings) if main else None
        )
        model.model.gradient_checkpointing = options.gradient_checkpointing
        self.model = dist.wrap_model(model.to(self.device), env, options.strategy)
        first = recipe.phases[0]
        self.optimizer = build_optimizer(self.model, recipe.train, first.lr, first.weight_decay)
        self.loader = BatchLoader(
            store, recipe.phases, seed=recipe.seed, rank=env.rank, world_size=env.world_size,
            vocab_size=self.config.vocab_size, micro_batch_tokens=options.micro_batch_tokens, first_phase=first_index,
        )  # fmt: skip
        self.step = self.nonfinite_streak = 0
        self.tokens = self.schedule.starts[first_index]  # the skipped phases' tokens count as done
        if first_index:
            logger.info("starting at phase %s: phases %s skipped", self.first_phase,
                        ", ".join(p.name for p in recipe.phases[:first_index]))  # fmt: skip
        rank_state = self._restore(state, source, resume is not None) if state is not None else None
        self.phase_index = -1
        self._enter_phase(self.schedule.phase_index(min(self.tokens, self.schedule.total_tokens - 1)), False)
        if rank_state is not None:
            self.loader.load_state_dict(rank_state["data"])
            # Last, so that nothing done while rebuilding (model init, data streams) shifts the generators.
            ckpt.restore_rng_state(rank_state["rng"])

        self.peak_flops = options.peak_flops or default_peak_flops(self.device)
        if self.peak_flops:
            logger.info("MFU against a peak of %.1f GFLOP/s (--peak-flops to set it)", self.peak_flops / 1e9)
        self.log: RunLog | None = None
        if env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            recipe.save(self.run_dir / "recipe.yaml")
            every = (
                recipe.train.log_every_steps if options.log_every_steps is None else options.log_every_steps
            )
            self.log = RunLog(self.run_dir, self.step, every, options.tensorboard)

    def _restore(self, state: dict, source: Path, resuming: bool) -> dict | None:
        """Load model, optimizer and counters from `state`; returns this rank's data/RNG state, if usable."""
        dist.load_model_state_dict(self.model, state["model"])
        dist.load_optimizer_state_dict(self.model, self.optimizer, state["optimizer"])
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self.nonfinite_streak = int(state["trainer"]["nonfinite_streak"])
        ranks, world = state["ranks"], self.env.world_size
        if len(ranks) == world:
            return ranks[self.env.rank]
        if resuming:
            raise MmbertError(
                f"{source} was written by {len(ranks)} rank(s): resume it with as many (not {world})"
            )
        # A decay variant started on a machine with another number of ranks.
        logger.warning(
            "%s has %d rank states, this run %d: data streams start afresh", source, len(ranks), world
        )
        return None

    @property
    def phase(self) -> Phase:
        return self.recipe.phases[self.phase_index]

    def _enter_phase(self, index: int, report: bool = True) -> None:
        """Switch the data mixture and the RoPE frequencies to phase `index` (no rebuild)."""
        self.phase_index = index
        p = self.phase
        dist.unwrap(self.model).set_rope_theta(p.global_rope_theta, p.local_rope_theta)
        self.loader.set_phase(index, report=report and self.env.is_main)
        logger.info(
            "phase %s: %d tokens, mask %.2f, tau %.2f, seq_len %d, rope %g/%g",
            p.name, p.tokens, p.mask_rate, p.tau, p.seq_len, p.global_rope_theta, p.local_rope_theta,
        )  # fmt: skip

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, Any]:
        """One optimizer update; returns its metrics (the loss is the global mean over masked tokens)."""
        t_start = time.perf_counter()
        at = self.schedule.at(self.tokens)
        micro = self.loader.next_step(at.step_tokens, at.seq_len, at.mask_rate)
        t_data = time.perf_counter() - t_start
        counts = torch.tensor(
            [sum(m.num_masked for m in micro), sum(m.num_tokens for m in micro)],
            dtype=torch.float64,
            device=self.device,
        )
        n_masked, n_tokens = (int(x) for x in dist.all_reduce_sum(counts).tolist())
        lr = self.schedule.lr(self.tokens + n_tokens, at.phase_index)  # at the end of this batch
        set_schedule(self.optimizer, lr, at.weight_decay, at.phase.lr)

        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        flops = 0.0
        on_cuda = self.device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()
        for i, m in enumerate(micro):
            with dist.no_grad_sync(self.model, i < len(micro) - 1):
                with autocast:
                    out = self.model(**m.model_inputs(self.device))
                # Weight of this micro-batch in the global mean; x world because DDP/FSDP average over ranks.
                scale = m.num_masked / max(n_masked, 1) * self.env.world_size
                (out.loss * scale).backward()
            loss_sum += out.loss.detach().double() * m.num_masked
            flops += train_flops(self.config, m.lengths(), m.num_masked)
        loss = float(dist.all_reduce_sum(loss_sum).item()) / max(n_masked, 1)
        # No clipping (mmBERT used none): the norm is measured, and a non-finite one (a finite loss can
        # still overflow in backward) skips the update like a non-finite loss does.
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=math.inf)
        grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        skipped = not (math.isfinite(loss) and math.isfinite(grad_norm))
        if skipped:
            self.nonfinite_streak += 1
            logger.warning(
                "step %d: non-finite loss %s / gradient norm %s, update skipped (%d in a row)",
                self.step + 1, loss, grad_norm, self.nonfinite_streak,
            )  # fmt: skip
        else:
            self.nonfinite_streak = 0
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if on_cuda:
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - t_start

        self.step += 1
        self.tokens += n_tokens
        record: dict[str, Any] = {
            "step": self.step, "tokens": self.tokens, "phase": at.phase.name, "loss": loss, "lr": lr,
            "grad_norm": grad_norm, "mask_rate": at.mask_rate, "tau": at.tau, "seq_len": at.seq_len,
            "batch_tokens": n_tokens, "masked_tokens": n_masked, "micro_batches": len(micro),
            "tokens_per_s": n_tokens / elapsed, "data_wait_s": t_data, "step_s": elapsed,
            "mfu": flops / elapsed / self.peak_flops if self.peak_flops else None,
        }  # fmt: skip
        if skipped:
            record["skipped"] = True
        return record

    def _language_shares(self) -> dict[str, float] | None:
        """Every rank's drawn tokens per language since the last report, as shares."""
        total: Counter = Counter()
        for counts in dist.all_gather_objects(self.loader.take_language_tokens()):
            total.update(counts)
        n = sum(total.values())
        return {k: v / n for k, v in sorted(total.items())} if n else None

    # ------------------------------------------------------------------ checkpoint / export
    def save(self, phase_end: str | None = None) -> None:
        """Checkpoint (all ranks take part: state is gathered; rank 0 writes) and, at a phase end, export."""
        model_state = dist.model_state_dict(self.model)
        optim_state = dist.optimizer_state_dict(self.model, self.optimizer)
        ranks = dist.all_gather_objects({"rng": ckpt.capture_rng_state(), "data": self.loader.state_dict()})
        if self.log is not None:
            if phase_end:
                # Export before the checkpoint: a kill in between re-runs the last steps and re-exports.
                self.export(phase_end, model_state)
            self.log.sync()
            state = {
                "model": model_state, "optimizer": optim_state, "tokens": self.tokens, "phase_name": self.phase.name,
                "ranks": ranks, "trainer": {"nonfinite_streak": self.nonfinite_streak, "first_phase": self.first_phase},
                "recipe": self.recipe.to_dict(), "model_config": self.config.to_dict(),
                "tokenizer_dir": str(self.tokenizer_dir), "world_size": self.env.world_size,
            }  # fmt: skip
            keep = self.recipe.train.keep_last
            ckpt.save_checkpoint(self.run_dir, state, step=self.step, phase_end=phase_end, keep_last=keep)
        dist.barrier()

    def export(self, phase_name: str, model_state: dict[str, torch.Tensor]) -> Path:
        """HF-format model + tokenizer in `export/<phase>/`, swapped in whole (`mmbert.io.atomic_dir`)."""
        final = export_dir(self.run_dir, phase_name)
        module = dist.unwrap(self.model)
        if dist.is_fsdp(self.model):
            module = MmBertForMaskedLM(self.config)
            module.load_state_dict(model_state)
        with atomic_dir(final) as tmp:
            module.save_pretrained(tmp)
            write_tokenizer_files(self.export_tokenizer, tmp)
        logger.info("exported %s", final)
        return final

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        total = self.schedule.total_tokens
        if self.tokens >= total:
            logger.info("%s: already complete (%d tokens)", self.run_dir, self.tokens)
            self.close()
            return 0
        every = self.recipe.train.checkpoint_every_tokens
        bar = None
        try:
            while self.tokens < total:
                index = self.phase_index
                bar = bar or self._progress_bar()
                before = self.tokens
                record = self.train_step()
                ended = self.tokens >= self.schedule.phase_end(index)
                every_shares = self.options.lang_shares_every_steps
                if ended or (every_shares and self.step % every_shares == 0):
                    record["lang_shares"] = self._language_shares()  # since the last report
                if self.log is not None:
                    self.log.write(record)
                if bar is not None:
                    bar.set_postfix_str(f"loss {record['loss']:.4f}", refresh=False)
                    bar.update(min(self.tokens, self.schedule.phase_end(index)) - before)
                if self.nonfinite_streak > self.options.max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"{self.nonfinite_streak} non-finite losses in a row (limit {self.options.max_nonfinite_steps});"
                        f" the last good checkpoint is {ckpt.latest(self.run_dir)}"
                    )
                if ended:
                    if bar is not None:
                        bar = bar.close()
                    self.save(phase_end=self.phase.name)
                    if self.tokens < total:
                        self._enter_phase(self.schedule.phase_index(self.tokens))
                elif every and self.tokens // every > before // every and self.nonfinite_streak == 0:
                    self.save()
        finally:
            if bar is not None:
                bar.close()
            self.close()
        return 0

    def _progress_bar(self) -> tqdm | None:
        if not (self.env.is_main and self.options.progress):
            return None
        done = min(self.tokens - self.schedule.starts[self.phase_index], self.phase.tokens)
        return tqdm(total=self.phase.tokens, initial=done, desc=self.phase.name, unit="tok", unit_scale=True,
                    dynamic_ncols=True, leave=True)  # fmt: skip

    def close(self) -> None:
        """Close the metrics log, stop the data read-ahead thread and close the data's open shards."""
        self.loader.close()
        if self.log is not None:
            self.log.close()
            self.log = None
