"""`mmbert train`: run a recipe's phases in one resumable, optionally distributed run.

    mmbert train RECIPE --out DIR [--variant NAME] [--init-from HFDIR] [--dry-run] [key=value ...]
    torchrun --nproc_per_node N -m mmbert.cli train RECIPE --out DIR [--strategy ddp|fsdp]

What a step is: one optimizer update on `schedule.batch_tokens_at(tokens)` tokens (the global batch,
whole rows of the phase's `seq_len`, split evenly over the ranks), accumulated over micro-batches of at
most `--micro-batch-tokens` tokens so that memory stays bounded whatever the batch size. The loss of a
step is the mean cross-entropy over every masked token of the global batch, so that the gradient does
not depend on how the batch was cut into micro-batches and ranks.

Everything that changes between phases (mask rate, tau, languages, sources, seq_len, RoPE theta, LR and
weight decay) is looked up from the token count before each step; crossing a phase's last token swaps
the data stream and the RoPE frequencies in place. The model and the optimizer (and its moments) are
never rebuilt. A step never straddles two phases: the last step of a phase is cut to the phase's end.

Resume: every `train.checkpoint_every_tokens` tokens and at every phase end, the full state (model,
optimizer, step, tokens, each rank's data stream and RNG states, the resolved recipe) is written
atomically (`mmbert.checkpoint`). Rerunning the same command continues from the newest complete
checkpoint; the data streams continue where they stopped (nothing is re-read or re-drawn) and
`metrics.jsonl` drops the lines after that checkpoint, so a run killed at any moment and rerun logs the
same losses as one that never stopped (CPU, same seed).

Decay variants (mmBERT's Decay-Eng / Decay-Cont / Decay-All): when the recipe's last phase declares
`variants`, the phases before it are trained once in `DIR` (ending in the pre-decay checkpoint
`DIR/checkpoints/step-*-end-<phase>.pt`) and each variant runs in `DIR/variants/<name>/`, starting from
that checkpoint and ending in its own HF export. `--variant NAME` runs one of them (several machines can
each run one at the same time once the shared checkpoint exists); without it they run one after another.

Continued pre-training (`--init-from HFDIR`, e.g. a released mmBERT): the run starts from that model and
tokenizer instead of a random init. To add a language in a decay phase: prepare data for it with the
checkpoint's tokenizer, write a one-phase recipe (decay shape, small LR, the language in `languages` or
in a source's `fixed_shares`) and run `mmbert train RECIPE --out DIR --init-from HFDIR`.

Outputs in DIR: `metrics.jsonl` (one JSON object per step), `tb/` (TensorBoard), `checkpoints/`,
`export/<phase>/` (HF-format model + tokenizer at each phase end), `recipe.yaml` (the resolved recipe).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from mmbert import checkpoint as ckpt
from mmbert import distributed as dist_utils
from mmbert.io import atomic_open, fsync_dir
from mmbert.recipe import Phase, Recipe, RecipeError, load_recipe
from mmbert.schedule import Schedule, phase_lr

logger = logging.getLogger(__name__)

# Dense bf16 peaks of GPUs (a CPU's fp32 peak is measured at start: hosts differ by 3x).
GPU_PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


# ---------------------------------------------------------------------------------------------- options
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


# ---------------------------------------------------------------------------------------------- FLOPs
def doc_attention_pairs(lengths: list[int], window: int | None) -> int:
    """Query-key pairs attended over documents of `lengths` (full, or |i - j| <= window)."""
    total = 0
    for n in lengths:
        if window is None or n <= window + 1:
            total += n * n
        else:
            # every query sees 2w+1 keys, minus the w(w+1) missing at the two edges
            total += n * (2 * window + 1) - window * (window + 1)
    return total


def train_flops(config: Any, lengths: list[int], n_predicted: int) -> float:
    """FLOPs of one forward + backward over packed documents of `lengths` with sparse prediction.

    6 x (encoder parameters) per token, 6 x (head + decoder parameters) per predicted token (the sparse
    head runs only there), plus attention: 2 matmuls (QK^T, AV) x 2 FLOPs x hidden per query-key pair,
    x 3 for forward + backward.
    """
    h, v = config.hidden_size, config.vocab_size
    n_tokens = sum(lengths)
    encoder = config.num_parameters(include_embeddings=False)
    flops = 6.0 * encoder * n_tokens + 6.0 * (h * h + h * v) * n_predicted
    full = doc_attention_pairs(lengths, None)
    local = doc_attention_pairs(lengths, config.local_attention // 2)
    for layer in range(config.num_hidden_layers):
        flops += 12.0 * h * (full if config.is_global(layer) else local)
    return flops


def measure_matmul_flops(
    n: int = 1024, reps: int = 5, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """This device's matmul rate now: the median of `reps` n^3 matmuls (no RNG is consumed).

    The median, not the best: a single run swings with turbo and with other processes on a shared host.
    """
    a = torch.ones(n, n, device=device, dtype=dtype)
    # Warm up for 0.2 s first: a cold start (thread pool, clock ramp) measured 2.5x below the rate
    # the same CPU reached a few seconds later.
    start = time.perf_counter()
    while time.perf_counter() - start < 0.2:
        a @ a
    times = []
    for _ in range(reps):
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        a @ a
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def default_peak_flops(device: torch.device) -> float | None:
    """Peak of the device for MFU: bf16 dense for known GPUs, the measured fp32 matmul rate on CPU."""
    if device.type == "cpu":
        return measure_matmul_flops()
    name = torch.cuda.get_device_name(device)
    for key, peak in GPU_PEAK_BF16_FLOPS.items():
        if key in name:
            return peak
    return None


# ---------------------------------------------------------------------------------------------- metrics
class MetricsLog:
    """`metrics.jsonl`, append-only; on resume the lines after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        kept = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if record.get("step", math.inf) <= resume_step:
                    kept.append(line)
        with atomic_open(path, "w") as f:
            f.write("".join(line + "\n" for line in kept))
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the whole run)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def sync(self) -> None:
        """Make the lines so far durable (before a checkpoint claims their steps are done)."""
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


# ---------------------------------------------------------------------------------------------- data
class DataStream:
    """One rank's packed rows: the two-axis sampler (switched between phase mixtures) and the packer.

    Both live for the whole run: a phase change only swaps the sampler's mixture (positions in every
    (source, language) cell carry on, so a later phase does not restart a language's data) and the
    packer's carried document remainder is cut at the new `seq_len`. Stateful, for the checkpoint.
    """

    def __init__(self, recipe: Recipe, rank: int, world_size: int) -> None:
        from mmbert.data.packing import Packer
        from mmbert.data.sampler import DataSampler, recipe_mixtures, store_counts

        if not recipe.data:
            raise RecipeError(
                "data", "the recipe lists no prepared data directory (`mmbert prepare --out DATA`)"
            )
        self.store = open_data(recipe.data)
        # Every phase is resolved against the data now, so a bad language set fails before step 1.
        self.mixtures = recipe_mixtures(recipe.phases, store_counts(self.store))
        self.sampler = DataSampler(
            self.store, self.mixtures[0], seed=recipe.seed, rank=rank, world_size=world_size
        )
        self.packer = Packer()

    def set_phase(self, index: int, report: bool = True) -> None:
        """Switch to phase `index`'s mixture; `report` logs the realized shares of the phase that ends."""
        if self.sampler.mixture is not self.mixtures[index]:
            if report:
                self.sampler.log_realized()
                self.packer.log_efficiency()
            self.sampler.set_phase(self.mixtures[index])

    def next_batch(self, num_rows: int, seq_len: int) -> dict[str, Any]:
        batch = self.packer.next_batch(iter(self.sampler), num_rows, seq_len)
        assert batch is not None  # the sampler never runs out: it starts another epoch
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict(), "packer": self.packer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        phase = state["sampler"]["phase"]
        saved = next((m for m in self.mixtures if m.phase == phase), None)
        if saved is None:
            raise ValueError(f"the checkpoint's data stream is in phase {phase!r}, which this recipe lacks")
        current = self.sampler.mixture
        # The sampler restores into the mixture it was saved in, then moves on to the current phase.
        self.sampler.set_phase(saved)
        self.sampler.load_state_dict(state["sampler"])
        self.sampler.set_phase(current)
        self.packer.load_state_dict(state["packer"])


class _UnionStore:
    """Several prepared data directories read as one (a source name may appear in only one of them)."""

    def __init__(self, stores: list[Any]) -> None:
        self._by_source: dict[str, Any] = {}
        for store in stores:
            for source in store.sources():
                if source in self._by_source:
                    raise RecipeError(
                        "data",
                        f"source {source!r} is in both {self._by_source[source].root} and {store.root}",
                    )
                self._by_source[source] = store

    def sources(self) -> list[str]:
        return sorted(self._by_source)

    def languages(self, source: str | None = None) -> list[str]:
        if source is None:
            return sorted({lang for s in self._by_source for lang in self._by_source[s].languages(s)})
        return self._by_source[source].languages(source)

    def num_tokens(self, source: str, lang: str) -> int:
        return self._by_source[source].num_tokens(source, lang)

    def num_docs(self, source: str, lang: str) -> int:
        return self._by_source[source].num_docs(source, lang)

    def doc(self, source: str, lang: str, i: int) -> Any:
        return self._by_source[source].doc(source, lang, i)


def open_data(paths: list[str]) -> Any:
    """The recipe's prepared data directories as one store."""
    from mmbert.data.shards import TokenStore

    stores = [TokenStore(p) for p in paths]
    return stores[0] if len(stores) == 1 else _UnionStore(stores)


# ---------------------------------------------------------------------------------------------- trainer
class NonFiniteLossError(RuntimeError):
    pass


class Trainer:
    """Trains `recipe`'s phases in `run_dir`; `start_from` is a checkpoint to begin from (decay variants)."""

    def __init__(
        self,
        recipe: Recipe,
        run_dir: Path,
        env: dist_utils.DistEnv,
        options: TrainOptions,
        *,
        init_from: Path | None = None,
        start_from: Path | None = None,
    ) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.env = env
        self.options = options
        self.schedule = Schedule(recipe)
        self.phase_starts = recipe.phase_starts()
        self.device = env.device

        resume = ckpt.latest(self.run_dir)
        source = resume or start_from
        state = ckpt.load_checkpoint(source) if source else None
        if state is not None:
            logger.info(
                "%s from %s (step %d, %d tokens)",
                "resuming" if resume else "starting",
                source,
                state["step"],
                state["tokens"],
            )
            if resume is not None:
                _warn_recipe_changes(state["recipe"], recipe.to_dict(), source)

        # Tokenizer and model: from the checkpoint when there is one, else --init-from, else the recipe.
        from mmbert.config import MmBertConfig
        from mmbert.model import MmBertForMaskedLM

        torch.manual_seed(recipe.seed)  # identical init on every rank
        if state is not None:
            self.tokenizer_dir = Path(state["tokenizer_dir"])
            config = MmBertConfig(**state["model_config"])
            model = MmBertForMaskedLM(config)
        elif init_from is not None:
            self.tokenizer_dir = Path(init_from)
            model = MmBertForMaskedLM.from_pretrained(init_from)
            config = model.config
        else:
            if not recipe.tokenizer:
                raise RecipeError("tokenizer", "the recipe names no tokenizer directory (and no --init-from)")
            self.tokenizer_dir = Path(recipe.tokenizer)
            config = recipe.model.build_config(vocab_size=_tokenizer_vocab_size(self.tokenizer_dir))
            model = MmBertForMaskedLM(config)
        self.config = config
        model.model.gradient_checkpointing = options.gradient_checkpointing
        model.to(self.device)
        self.model = dist_utils.wrap_model(model, env, options.strategy)
        self.optimizer = build_optimizer(self.model, recipe)

        self.step = 0
        self.tokens = 0
        self.nonfinite_streak = 0
        self._lang_counts: Counter = Counter()
        self.mask_generator = torch.Generator().manual_seed(_derived_seed(recipe.seed, "mask", env.rank))
        data_state = rank_state = None
        if state is not None:
            dist_utils.load_model_state_dict(self.model, state["model"])
            dist_utils.load_optimizer_state_dict(self.model, self.optimizer, state["optimizer"])
            self.step, self.tokens = int(state["step"]), int(state["tokens"])
            ranks = state["ranks"]
            if len(ranks) == env.world_size:
                rank_state = ranks[env.rank]
                self.mask_generator.set_state(rank_state["mask_rng"])
                data_state = rank_state["data"]
            elif resume is not None:
                raise ValueError(
                    f"{source} was written by {len(ranks)} rank(s); resume it with the same number "
                    f"of processes (this run has {env.world_size})"
                )
            else:
                # A decay variant on a machine with another number of ranks: fresh per-rank data streams.
                logger.warning(
                    "%s has %d rank states, this run has %d ranks: data streams start afresh",
                    source,
                    len(ranks),
                    env.world_size,
                )
            self.nonfinite_streak = int(state["trainer"]["nonfinite_streak"])

        self.data = DataStream(recipe, env.rank, env.world_size)
        self.phase_index = -1
        self._enter_phase(
            self.schedule.phase_at(min(self.tokens, self.schedule.total_tokens - 1))[0], report=False
        )
        if data_state is not None:
            self.data.load_state_dict(data_state)
        if rank_state is not None:
            # Last, so that nothing done while rebuilding (model init, data streams) shifts the generators.
            ckpt.restore_rng_state(rank_state["rng"])

        self.peak_flops = options.peak_flops or default_peak_flops(self.device)
        if self.peak_flops:
            logger.info("MFU against a peak of %.1f GFLOP/s (--peak-flops to set it)", self.peak_flops / 1e9)
        self.metrics: MetricsLog | None = None
        self.tb = None
        if env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            recipe.save(self.run_dir / "recipe.yaml")
            self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", self.step)
            if options.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step drops events past the resumed step, as metrics.jsonl does
                self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step + 1)

    # ------------------------------------------------------------------ phases
    @property
    def phase(self) -> Phase:
        return self.recipe.phases[self.phase_index]

    def _enter_phase(self, index: int, report: bool = True) -> None:
        """Switch data stream, masking rate and RoPE frequencies to phase `index` (no rebuild)."""
        self.phase_index = index
        phase = self.phase
        dist_utils.unwrap(self.model).set_rope_theta(phase.global_rope_theta, phase.local_rope_theta)
        self.data.set_phase(index, report=report and self.env.is_main)
        logger.info(
            "phase %s: %d tokens, mask %.2f, tau %.2f, seq_len %d, rope %g/%g",
            phase.name,
            phase.tokens,
            phase.mask_rate,
            phase.tau,
            phase.seq_len,
            phase.global_rope_theta,
            phase.local_rope_theta,
        )

    def _phase_end(self, index: int) -> int:
        return self.phase_starts[index] + self.recipe.phases[index].tokens

    # ------------------------------------------------------------------ one step
    def _micro_batches(self, step_tokens: int) -> list[dict[str, torch.Tensor]]:
        """This rank's share of the step: whole rows, cut into micro-batches, masked."""
        from mmbert.data.masking import mask_tokens

        seq_len = self.phase.seq_len
        rows = max(1, math.ceil(step_tokens / (seq_len * self.env.world_size)))
        rows_per_micro = max(1, self.options.micro_batch_tokens // seq_len)
        out = []
        while rows > 0:
            take = min(rows, rows_per_micro)
            rows -= take
            batch = self.data.next_batch(take, seq_len)
            input_ids, labels = mask_tokens(
                batch["input_ids"], self.phase.mask_rate, self.mask_generator, self.config.vocab_size
            )
            out.append({**batch, "input_ids": input_ids, "labels": labels})
        return out

    def train_step(self) -> dict[str, Any]:
        """One optimizer update; returns its metrics (the loss is the global mean over masked tokens)."""
        t_start = time.perf_counter()
        phase_end = self._phase_end(self.phase_index)
        step_tokens = min(self.schedule.batch_tokens_at(self.tokens), phase_end - self.tokens)
        micro = self._micro_batches(step_tokens)
        t_data = time.perf_counter() - t_start

        counts = torch.tensor(
            [
                sum(int((m["labels"] != -100).sum()) for m in micro),
                sum(int(m["input_ids"].numel()) for m in micro),
            ],
            dtype=torch.float64,
            device=self.device,
        )
        n_masked, n_tokens = (int(x) for x in dist_utils.all_reduce_sum(counts).tolist())
        # The LR at the end of this step's batch, within this phase (at the phase's last token the
        # schedule would already answer for the next phase).
        phase = self.phase
        start = self.phase_starts[self.phase_index]
        lr = phase_lr(min(self.tokens + n_tokens, phase_end) - start, phase, self.recipe.phase_lr(phase))
        self._set_lr(lr)

        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        flops = 0.0
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        for i, m in enumerate(micro):
            mb_masked = int((m["labels"] != -100).sum())
            cu = m["cu_seqlens"]
            with dist_utils.no_grad_sync(self.model, i < len(micro) - 1):
                with autocast:
                    out = self.model(
                        input_ids=m["input_ids"].to(self.device, non_blocking=True),
                        cu_seqlens=cu.to(self.device, non_blocking=True),
                        max_seqlen=int(m["max_seqlen"]),
                        labels=m["labels"].to(self.device, non_blocking=True),
                    )
                # Weight of this micro-batch in the global mean; x world because DDP/FSDP average over ranks.
                scale = mb_masked / max(n_masked, 1) * self.env.world_size
                (out.loss * scale).backward()
            loss_sum += out.loss.detach().double() * mb_masked
            flops += train_flops(self.config, torch.diff(cu).tolist(), mb_masked)
        loss = float(dist_utils.all_reduce_sum(loss_sum).item()) / max(n_masked, 1)
        # No clipping (mmBERT used none): the norm is measured, and a non-finite one (a finite loss can
        # still overflow in backward) skips the update like a non-finite loss does.
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=math.inf)
        grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)

        skipped = not (math.isfinite(loss) and math.isfinite(grad_norm))
        if skipped:
            self.nonfinite_streak += 1
            logger.warning(
                "step %d: non-finite loss %s / gradient norm %s, update skipped (%d in a row)",
                self.step + 1,
                loss,
                grad_norm,
                self.nonfinite_streak,
            )
        else:
            self.nonfinite_streak = 0
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - t_start

        self.step += 1
        self.tokens += n_tokens
        record: dict[str, Any] = {
            "step": self.step,
            "tokens": self.tokens,
            "phase": phase.name,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "mask_rate": phase.mask_rate,
            "tau": phase.tau,
            "seq_len": phase.seq_len,
            "batch_tokens": n_tokens,
            "masked_tokens": n_masked,
            "micro_batches": len(micro),
            "tokens_per_s": n_tokens / elapsed,
            "data_wait_s": t_data,
            "step_s": elapsed,
            "mfu": flops / elapsed / self.peak_flops if self.peak_flops else None,
        }
        if skipped:
            record["skipped"] = True
        self._count_languages(micro)
        return record

    # ------------------------------------------------------------------ language shares
    def _count_languages(self, micro: list[dict[str, Any]]) -> None:
        for m in micro:
            for lang, n in (m.get("tokens_per_language") or {}).items():
                self._lang_counts[lang] += n

    def _language_shares(self) -> dict[str, float] | None:
        gathered = dist_utils.all_gather_objects(dict(self._lang_counts))
        self._lang_counts = Counter()
        total: Counter = Counter()
        for c in gathered:
            total.update(c)
        n = sum(total.values())
        return {k: v / n for k, v in sorted(total.items())} if n else None

    # ------------------------------------------------------------------ optimizer
    def _set_lr(self, lr: float) -> None:
        phase = self.phase
        peak = self.recipe.phase_lr(phase)
        wd = self.recipe.phase_weight_decay(phase)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if not group["apply_weight_decay"]:
                continue
            if "max_lr" in group:
                group["weight_decay"] = wd
                group["max_lr"] = peak  # optimi, fully decoupled: per-step decay = wd * lr / peak
            else:
                group["weight_decay"] = wd / peak  # torch AdamW multiplies by lr: the same decay per step

    # ------------------------------------------------------------------ checkpoint / export
    def save(self, phase_end: str | None = None) -> None:
        """Checkpoint (all ranks take part: state is gathered; rank 0 writes) and, at a phase end, export."""
        model_state = dist_utils.model_state_dict(self.model)
        optim_state = dist_utils.optimizer_state_dict(self.model, self.optimizer)
        mine = {
            "rng": ckpt.capture_rng_state(),
            "mask_rng": self.mask_generator.get_state(),
            "data": self.data.state_dict(),
        }
        ranks = dist_utils.all_gather_objects(mine)
        if self.env.is_main:
            if phase_end:
                # Export before the checkpoint: a kill in between re-runs the last steps and re-exports.
                self.export(phase_end, model_state)
            assert self.metrics is not None
            self.metrics.sync()
            ckpt.save_checkpoint(
                self.run_dir,
                {
                    "model": model_state,
                    "optimizer": optim_state,
                    "tokens": self.tokens,
                    "phase": self.phase.name,
                    "ranks": ranks,
                    "trainer": {"nonfinite_streak": self.nonfinite_streak},
                    "recipe": self.recipe.to_dict(),
                    "model_config": self.config.to_dict(),
                    "tokenizer_dir": str(self.tokenizer_dir),
                    "world_size": self.env.world_size,
                },
                step=self.step,
                phase_end=phase_end,
                keep_last=self.recipe.train.keep_last,
            )
        dist_utils.barrier()

    def export(self, phase: str, model_state: dict[str, torch.Tensor]) -> Path:
        """HF-format model + tokenizer in `export/<phase>/`, written to a temporary dir and renamed."""
        from mmbert.model import MmBertForMaskedLM

        final = self.run_dir / "export" / phase
        tmp = final.with_name(f".{phase}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        module = dist_utils.unwrap(self.model)
        if dist_utils.is_fsdp(self.model):
            module = MmBertForMaskedLM(self.config)
            module.load_state_dict(model_state)
        module.save_pretrained(tmp)
        _copy_tokenizer(self.tokenizer_dir, tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(final.parent)
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
                if bar is None:
                    bar = self._progress_bar()
                before = self.tokens
                record = self.train_step()
                ended = self.tokens >= self._phase_end(index)
                every_shares = self.options.lang_shares_every_steps
                if ended or (every_shares and self.step % every_shares == 0):
                    record["lang_shares"] = self._language_shares()  # since the last report
                self._log(record)
                if bar is not None:
                    bar.update(min(self.tokens, self._phase_end(index)) - before)
                if self.nonfinite_streak > self.options.max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"{self.nonfinite_streak} non-finite losses in a row (limit "
                        f"{self.options.max_nonfinite_steps}); the last good checkpoint is "
                        f"{ckpt.latest(self.run_dir)}"
                    )
                if ended:
                    if bar is not None:
                        bar.close()
                        bar = None
                    self.save(phase_end=self.phase.name)
                    if self.tokens < total:
                        self._enter_phase(self.schedule.phase_at(self.tokens)[0])
                elif every and self.tokens // every > before // every and self.nonfinite_streak == 0:
                    self.save()
        finally:
            if bar is not None:
                bar.close()
            self.close()
        return 0

    def _progress_bar(self) -> Any:
        if not (self.env.is_main and self.options.progress):
            return None
        from tqdm import tqdm

        start = self.phase_starts[self.phase_index]
        return tqdm(
            total=self.phase.tokens,
            initial=min(self.tokens - start, self.phase.tokens),
            desc=self.phase.name,
            unit="tok",
            unit_scale=True,
            dynamic_ncols=True,
            leave=True,
        )

    def _log(self, record: dict[str, Any]) -> None:
        if not self.env.is_main:
            return
        assert self.metrics is not None
        self.metrics.write(record)
        if self.step % self.recipe.train.log_every_steps == 0:
            mfu = f"{100 * record['mfu']:.1f}%" if record["mfu"] is not None else "-"
            logger.info(
                "%s | step %d | tokens %s | loss %.4f | lr %.2e | mask %.2f | tau %.2f | %.0f tok/s | mfu %s%s",
                record["phase"],
                record["step"],
                _human(record["tokens"]),
                record["loss"],
                record["lr"],
                record["mask_rate"],
                record["tau"],
                record["tokens_per_s"],
                mfu,
                " | SKIPPED" if record.get("skipped") else "",
            )
        if self.tb is not None:
            for key in (
                "loss",
                "lr",
                "grad_norm",
                "mask_rate",
                "tau",
                "seq_len",
                "tokens_per_s",
                "mfu",
                "data_wait_s",
            ):
                value = record.get(key)
                if value is not None and math.isfinite(value):
                    self.tb.add_scalar(f"train/{key}", value, self.step)
            self.tb.add_scalar("train/tokens", record["tokens"], self.step)
            for lang, share in (record.get("lang_shares") or {}).items():
                self.tb.add_scalar(f"lang_share/{lang}", share, self.step)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


# ---------------------------------------------------------------------------------------------- helpers
def build_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """StableAdamW (optimi, fully decoupled weight decay) or AdamW; no weight decay on norms and biases."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (no_decay if name.endswith("bias") or "norm" in name else decay).append(param)
    train = recipe.train
    first = recipe.phases[0]
    peak, wd = recipe.phase_lr(first), recipe.phase_weight_decay(first)
    groups = [
        {"params": decay, "weight_decay": wd, "apply_weight_decay": True},
        {"params": no_decay, "weight_decay": 0.0, "apply_weight_decay": False},
    ]
    if train.optimizer == "stable_adamw":
        import optimi

        return optimi.StableAdamW(
            groups, lr=peak, betas=tuple(train.betas), eps=train.eps, decouple_lr=True, max_lr=peak
        )
    groups[0]["weight_decay"] = wd / peak
    return torch.optim.AdamW(groups, lr=peak, betas=tuple(train.betas), eps=train.eps)


def _derived_seed(seed: int, purpose: str, index: int) -> int:
    """A stable per-purpose seed (python's hash() of str is salted per process, so not that)."""
    import zlib

    return (seed * 1_000_003 + zlib.crc32(purpose.encode()) * 7919 + index) % (2**63)


# Files of an HF model directory that are the model, not the tokenizer (never copied into an export).
_MODEL_FILES = ("config.json", "generation_config.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".index.json")


def _tokenizer_vocab_size(tokenizer_dir: Path) -> int:
    """Ids of the tokenizer, added tokens included (`len(tokenizer)`), for the model's vocab_size."""
    path = Path(tokenizer_dir) / "tokenizer.json"
    if path.exists():
        # The `tokenizers` file alone: no transformers import (seconds) in every training process.
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    from mmbert.tokenizer import load_tokenizer

    return len(load_tokenizer(tokenizer_dir))


def _copy_tokenizer(tokenizer_dir: Path, out: Path) -> None:
    """Copy the tokenizer's files (not a model's config or weights, if it sits in a model directory)."""
    src = Path(tokenizer_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"tokenizer directory {src} does not exist")
    for f in sorted(src.iterdir()):
        if f.is_file() and f.name not in _MODEL_FILES and not f.name.endswith(_WEIGHT_SUFFIXES):
            shutil.copy2(f, out / f.name)


def _warn_recipe_changes(saved: dict[str, Any], current: dict[str, Any], source: Path) -> None:
    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, (dict, list)):
            items = d.items() if isinstance(d, dict) else enumerate(d)
            return {k2: v2 for k, v in items for k2, v2 in flat(v, f"{prefix}{k}.").items()}
        return {prefix.rstrip("."): d}

    a, b = flat(saved), flat(current)
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if changed:
        logger.warning("recipe differs from the one in %s at: %s", source, ", ".join(changed[:10]))


def _human(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


# ---------------------------------------------------------------------------------------------- runs
def shared_recipe(recipe: Recipe) -> Recipe | None:
    """The recipe of the phases before the variant phase (None when the variants start from scratch)."""
    if len(recipe.phases) < 2:
        return None
    return dataclasses.replace(recipe, phases=recipe.phases[:-1], variant=None)


def run_recipe(
    recipe: Recipe,
    out: Path,
    env: dist_utils.DistEnv,
    options: TrainOptions,
    *,
    variant: str | None = None,
    init_from: Path | None = None,
) -> list[Path]:
    """Train the recipe (and its decay variants) into `out`; returns the run directories trained."""
    variants = recipe.variant_names()
    if variant is not None and variant not in variants:
        raise RecipeError(
            "variant",
            f"the recipe declares no variant {variant!r} (declared: {', '.join(variants) or 'none'})",
        )
    if not variants:
        Trainer(recipe, out, env, options, init_from=init_from).run()
        return [out]
    shared = shared_recipe(recipe)
    start_from = None
    runs = []
    if shared is not None:
        pre_decay = shared.phases[-1].name
        start_from = ckpt.phase_end_checkpoint(out, pre_decay)
        if start_from is None:
            logger.info("training the phases shared by the decay variants in %s", out)
            Trainer(shared, out, env, options, init_from=init_from).run()
            runs.append(out)
            start_from = ckpt.phase_end_checkpoint(out, pre_decay)
            if start_from is None:
                raise RuntimeError(
                    f"{out}: no checkpoint at the end of phase {pre_decay!r} after training it"
                )
    for name in [variant] if variant else variants:
        run_dir = out / "variants" / name
        logger.info("decay variant %s in %s", name, run_dir)
        Trainer(
            recipe.with_variant(name),
            run_dir,
            env,
            options,
            init_from=init_from if start_from is None else None,
            start_from=start_from,
        ).run()
        runs.append(run_dir)
    return runs


def dry_run(recipe: Recipe, variant: str | None) -> str:
    """The resolved recipe and, per phase, its token budget and approximate number of steps."""
    lines = [recipe.with_variant(variant).to_yaml(), "# plan"]
    schedule = Schedule(recipe.with_variant(variant))
    for phase, start in zip(schedule.recipe.phases, schedule.recipe.phase_starts(), strict=True):
        steps, t, peak = 0, start, schedule.recipe.phase_lr(phase)
        while t < start + phase.tokens and steps < 10_000_000:
            t += min(schedule.batch_tokens_at(t), start + phase.tokens - t)
            steps += 1
        lines.append(
            f"# {phase.name}: tokens {_human(phase.tokens)} from {_human(start)}, ~{steps} steps, "
            f"languages {phase.languages}, tau {phase.tau}, mask {phase.mask_rate}, seq_len {phase.seq_len}, "
            f"lr {phase_lr(1, phase, peak):.2e} -> {phase_lr(phase.tokens, phase, peak):.2e}"
        )
    if recipe.variant_names():
        lines.append(f"# decay variants: {', '.join(recipe.variant_names())} (each in OUT/variants/<name>/)")
    # The data plan (each phase's source x language budget), when the data is prepared already.
    try:
        from mmbert.data.sampler import store_counts
        from mmbert.plan import format_plan, plan_recipe

        counts = store_counts(open_data(recipe.data))
        lines += ["", format_plan(plan_recipe(recipe, counts, variant), top=10)]
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        lines.append(f"# data plan unavailable: {err}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmbert train", description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", type=Path, help="recipe YAML file")
    p.add_argument("overrides", nargs="*", help="dotted.key=value recipe overrides (phases.0.tokens=1M)")
    p.add_argument("--out", type=Path, help="run directory (rerun the same command to resume)")
    p.add_argument("--variant", help="run only this decay variant (in OUT/variants/NAME)")
    p.add_argument("--init-from", type=Path, help="start from this HF-format model + tokenizer directory")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and the plan, then exit")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--strategy", choices=dist_utils.STRATEGIES, default="ddp", help="under torchrun")
    p.add_argument(
        "--micro-batch-tokens",
        type=int,
        default=TrainOptions.micro_batch_tokens,
        help="max tokens per forward/backward (gradient accumulation above it)",
    )
    p.add_argument(
        "--max-nonfinite-steps",
        type=int,
        default=TrainOptions.max_nonfinite_steps,
        help="stop after more consecutive non-finite losses than this",
    )
    p.add_argument("--peak-flops", type=float, help="device peak FLOP/s for the MFU estimate")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute layers in backward")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard event files")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_intermixed_args(argv)
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        if args.variant is not None and args.variant not in recipe.variant_names():
            raise RecipeError(
                "variant",
                f"no variant {args.variant!r} (declared: {', '.join(recipe.variant_names()) or 'none'})",
                str(args.recipe),
            )
    except RecipeError as err:
        print(f"mmbert train: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(dry_run(recipe, args.variant))
        return 0
    if args.out is None:
        print("mmbert train: --out DIR is required", file=sys.stderr)
        return 2
    env = dist_utils.init_distributed(args.device)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO if env.is_main else logging.WARNING,
            format="%(asctime)s %(message)s",
            datefmt="%H:%M:%S",
        )
    options = TrainOptions(
        strategy=args.strategy,
        micro_batch_tokens=args.micro_batch_tokens,
        max_nonfinite_steps=args.max_nonfinite_steps,
        peak_flops=args.peak_flops,
        progress=not args.no_progress,
        tensorboard=not args.no_tensorboard,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    try:
        runs = run_recipe(recipe, args.out, env, options, variant=args.variant, init_from=args.init_from)
    except NonFiniteLossError as err:
        logger.error("stopped: %s", err)
        return 3
    finally:
        dist_utils.shutdown()
    if env.is_main:
        for run_dir in runs:
            exports = sorted((run_dir / "export").glob("[!.]*"))
            print(f"{run_dir}: metrics.jsonl, checkpoints/, exports: {', '.join(e.name for e in exports)}")
    return 0
