"""The training loop: a recipe's phases in one resumable, optionally distributed run.

A step is one optimizer update on the global batch that `Schedule.at(tokens)` names (whole rows of
the phase's `seq_len`; each rank trains its contiguous slice of them, `mmbert.data.loader`), accumulated over the micro-batches the
`BatchLoader` cuts so that memory stays bounded. Its loss is the mean cross-entropy over every masked
token of the global batch, so the gradient does not depend on how the batch was cut into micro-batches
and ranks. Everything that changes between phases (mask rate, tau, languages, sources, seq_len, RoPE
theta, LR, weight decay) comes from the schedule; crossing a phase's last token swaps the data mixture
and the RoPE frequencies in place, and the model and optimizer (with its moments) are never rebuilt.

Resume: every `train.checkpoint_every_tokens` tokens and at every phase end the training state
(`Trainer.state_dict`: model, optimizer, counters and schedule position, the data stream's position,
RNG states, the data and tokenizer fingerprints, the run's inputs) is written atomically, each rank its
own part (`mmbert.checkpoint`); rerunning the same command continues from the newest complete
checkpoint and `metrics.jsonl` drops the lines after it, so a run killed at any moment and rerun logs
the same losses as one that never stopped (CPU, same seed). The data stream does not depend on the
number of ranks, so the rerun may have another number of ranks (DDP or FSDP): it continues the same
stream, and its losses differ from the uninterrupted run's by float summation order only.

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

Outputs in a run directory (`mmbert.run_layout`): `metrics.jsonl`, `tb/`, `checkpoints/`,
`export/<phase>/` (HF-format model + tokenizer at each phase end) and `recipe.yaml` (the recipe as the
run uses it: the model it trains and its tokenizer, also when they come from `--init-from` or a
checkpoint).
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
from mmbert.data.packing import PackedBatch
from mmbert.data.shards import open_data
from mmbert.errors import MmbertError
from mmbert.flops import default_peak_flops, train_flops
from mmbert.io import atomic_dir
from mmbert.metrics import RunLog
from mmbert.model import MmBertForMaskedLM
from mmbert.optim import build_optimizer, set_schedule
from mmbert.recipe import Phase, Recipe, RecipeError
from mmbert.run_inputs import (
    check_same_inputs,
    checked_tokenizer,
    data_fingerprint,
    initial_model,
    used_recipe,
)
from mmbert.run_layout import RunLayout
from mmbert.schedule import Schedule
from mmbert.seeds import derive_seed
from mmbert.tokenizer import adapt_tokenizer, write_tokenizer_files
from mmbert.tokens import BOS_ID, EOS_ID, IGNORE_INDEX

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
    async_checkpoint: bool = False
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


_STAND_IN = PackedBatch.from_sequences([[BOS_ID, 5, EOS_ID]])
_STAND_IN.labels = torch.tensor([IGNORE_INDEX, 5, IGNORE_INDEX])


class NonFiniteLossError(MmbertError, RuntimeError):
    """Too many non-finite losses in a row; the last good checkpoint is named in the message."""

    exit_code = 3


class Trainer:
    """Trains `recipe`'s phases in `run_dir`; `start_from` is a checkpoint to begin from (decay variants),
    `init_from` an HF model directory or a training checkpoint file for the weights, `from_phase` the
    phase to start at (the ones before it are skipped).

    Built in three stages: read the state to continue (the newest checkpoint of `run_dir`, else
    `start_from`: its small shared part only), build (model, optimizer, data stream, as a new run would,
    on this run's number of ranks), then restore into what was built (`load_state_dict`: each rank reads
    its own part of the tensors).
    """

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
        self.recipe, self.layout, self.env, self.options = recipe, RunLayout(run_dir), env, options
        self.run_dir = self.layout.root
        self.schedule = Schedule(recipe)
        self.device = env.device
        if not recipe.data:
            raise RecipeError("data", "the recipe lists no prepared data directory (`mmbert prepare`)")

        # 1. Read the state to continue, if any.
        resume = ckpt.latest(self.run_dir)
        source = resume or start_from
        saved = self._read_state(source, resume is not None) if source else None
        # Where the weights first came from: a continued run keeps its checkpoint's record.
        started = saved["run"]["init_from"] if saved is not None else None
        self.init_from = Path(started) if started else init_from

        # 2. Build, as a new run would.
        # The phase this run started at: a continued run keeps the one its checkpoint records.
        self.first_phase = saved["trainer"]["first_phase"] if saved is not None else from_phase
        first_index = recipe.phase_index(self.first_phase, "--from-phase") if self.first_phase else 0
        torch.manual_seed(recipe.seed)  # identical init on every rank
        model, self.tokenizer_dir = initial_model(recipe, saved["run"] if saved else None, init_from)
        self.config = model.config
        where = f"model of {source}" if source else f"model of {init_from}" if init_from else "model"
        recipe.check_fits(self.config, env.world_size, where)
        store = open_data(recipe.data, vocab_size=self.config.vocab_size)
        tokenizer = checked_tokenizer(self.tokenizer_dir, self.config, store)
        self.fingerprints = {
            "data": data_fingerprint(recipe.data),
            "tokenizer": tokenizer.identity()["fingerprint"],
        }
        if saved is not None:
            check_same_inputs(source, saved, self.fingerprints, recipe, init_from, resume is not None)
        # transformers (seconds to import) only where exports are written
        self.export_tokenizer = (
            adapt_tokenizer(tokenizer, self.config.max_position_embeddings) if env.is_main else None
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
        self.phase_index = first_index

        # 3. Restore into what was built.
        if source is not None:
            state = self.state_dict()
            state.update(ckpt.load_checkpoint(source, state, env.rank))  # fills model and optimizer
            self.load_state_dict(state)
        else:
            self._enter_phase(first_index, report=False)

        self.peak_flops = options.peak_flops or default_peak_flops(self.device)
        if self.peak_flops:
            logger.info("MFU against a peak of %.1f GFLOP/s (--peak-flops to set it)", self.peak_flops / 1e9)
        self.checkpointer = ckpt.CheckpointWriter(self.run_dir, rank=env.rank, keep_last=recipe.train.keep_last,
                                                  asynchronous=options.async_checkpoint)  # fmt: skip
        self.log: RunLog | None = None
        if env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            used_recipe(recipe, self.config, self.tokenizer_dir).save(self.layout.recipe)
            every = (
                recipe.train.log_every_steps if options.log_every_steps is None else options.log_every_steps
            )
            self.log = RunLog(self.layout, self.step, every, options.tensorboard)

    def _read_state(self, source: Path, resuming: bool) -> dict[str, Any]:
        """The shared part of checkpoint `source` (counters, data position, inputs; no tensors)."""
        saved = ckpt.read_train_state(source)
        counters = saved["trainer"]
        how = "resuming" if resuming else "starting"
        logger.info("%s from %s (step %d, %d tokens, written by %d rank(s))", how, source, counters["step"],
                    counters["tokens"], saved["run"]["world_size"])  # fmt: skip
        changed = Recipe.from_dict(saved["run"]["recipe"]).diff(self.recipe) if resuming else []
        if changed:
            logger.warning("recipe differs from the one in %s at: %s", source, ", ".join(changed[:10]))
        return saved

    # ------------------------------------------------------------------ the training state
    def state_dict(self) -> dict[str, Any]:
        """The whole training state (`mmbert.checkpoint` says who writes and reads each part).

        model, optimizer: Stateful views of this rank's tensors; trainer: the counters and the schedule
        position (the schedule is a function of `tokens`); data: the global data stream's position (the
        same on every rank); rng: this rank's generators; fingerprints: what the run trains on; run: what
        rebuilds it (recipe, model config, tokenizer, `--init-from`, the ranks that wrote it).
        """
        return {
            "model": dist.ModelState(self.model),
            "optimizer": dist.OptimizerState(self.model, self.optimizer),
            "trainer": {
                "step": self.step, "tokens": self.tokens, "phase": self.phase.name,
                "first_phase": self.first_phase, "nonfinite_streak": self.nonfinite_streak,
            },
            "data": self.loader.state_dict(),
            "rng": ckpt.capture_rng_state(),
            "fingerprints": dict(self.fingerprints),
            "run": {
                "recipe": self.recipe.to_dict(), "model_config": self.config.to_dict(),
                "tokenizer_dir": str(self.tokenizer_dir), "init_from": None if self.init_from is None else str(self.init_from),
                "world_size": self.env.world_size, "strategy": self.options.strategy,
            },
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state` (a `state_dict()` as `mmbert.checkpoint.load_checkpoint` returns it, the
        model's and optimizer's tensors already loaded in place) on this run's number of ranks."""
        counters = state["trainer"]
        self.step, self.tokens = int(counters["step"]), int(counters["tokens"])
        self.nonfinite_streak = int(counters["nonfinite_streak"])
        self._enter_phase(self.schedule.phase_index(min(self.tokens, self.schedule.total_tokens - 1)), False)
        self.loader.load_state_dict(state["data"])
        # Last, so that nothing done while rebuilding (model init, data streams) shifts the generators.
        if state["rng"] is not None and state["run"]["world_size"] == self.env.world_size:
            ckpt.restore_rng_state(state["rng"])
        else:  # another number of ranks: fresh generators (the data stream and its masks use none of them)
            torch.manual_seed(derive_seed(self.recipe.seed, "rng", self.step * 1_000_003 + self.env.rank))

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
        if self.tokens + n_tokens < self.schedule.phase_end(at.phase_index):  # not at a phase's end
            after = self.schedule.at(self.tokens + n_tokens)  # the next step's documents read meanwhile
            self.loader.prefetch(after.step_tokens, after.seq_len, after.mask_rate)
        lr = self.schedule.lr(self.tokens + n_tokens, at.phase_index)  # at the end of this batch
        set_schedule(self.optimizer, lr, at.weight_decay, at.phase.lr)

        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        flops = 0.0
        on_cuda = self.device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()
        # Every rank runs as many passes as the rank with the most rows; a rank with fewer (or none: a
        # small batch on many ranks) runs a three-token stand-in weighted 0, so that its collectives
        # (FSDP's gathers, the gradient sync) match the others'.
        passes = self.loader.micro_batches(at.step_tokens, at.seq_len)
        for i in range(passes):
            m = micro[i] if i < len(micro) else _STAND_IN
            with dist.no_grad_sync(self.model, i < passes - 1):
                with autocast:
                    out = self.model(**m.model_inputs(self.device))
                # Weight of this micro-batch in the global mean; x world because DDP/FSDP average over ranks.
                scale = m.num_masked / max(n_masked, 1) * self.env.world_size if i < len(micro) else 0.0
                (out.loss * scale).backward()
            if i < len(micro):
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
        """Checkpoint (every rank writes its own part) and, at a phase end, export first."""
        if phase_end:
            # Export before the checkpoint: a kill in between re-runs the last steps and re-exports.
            full = dist.full_model_state_dict(self.model) if dist.is_fsdp(self.model) else None
            if self.env.is_main:
                self.export(phase_end, full)
        if self.log is not None:
            self.log.sync()
        self.checkpointer.save(self.state_dict(), step=self.step, phase_end=phase_end)

    def export(self, phase_name: str, full_state: dict[str, torch.Tensor] | None = None) -> Path:
        """HF-format model + tokenizer in `export/<phase>/`, swapped in whole (`mmbert.io.atomic_dir`);
        `full_state`: the gathered weights of a sharded (FSDP) model."""
        final = self.layout.export(phase_name)
        module = dist.unwrap(self.model)
        if full_state is not None:
            module = MmBertForMaskedLM(self.config)
            module.load_state_dict(full_state)
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
                    self.checkpointer.wait()
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
            self.checkpointer.wait()  # the last checkpoint published before the run returns
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
