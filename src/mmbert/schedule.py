"""What applies at token t of a run: the one owner of the phase schedule.

Everything is a function of the *tokens* consumed, not of steps, because the batch grows during
batch-size warmup and the phases are budgeted in tokens; a resumed run only needs its token count to
be back on schedule. `Schedule(recipe).at(tokens)` answers, for the step that starts after `tokens`
tokens: the phase, its mask rate, tau, sequence length and RoPE thetas, weight decay and how many
tokens the step takes; `lr(tokens, phase_index)` the learning rate once the step's batch is drawn. The
trainer asks it before every step; nothing else decides any of these.

- Phases: a phase's first token belongs to it. A step never straddles two phases: the last step of a
  phase is cut to the phase's end (`step_tokens`).
- Batch size: each phase's own `batch_tokens` (default `train.batch_tokens`), rounded down to whole
  rows of the phase's `seq_len` (at least one row), since the packer fills rows. Over the first
  `train.batch_warmup_tokens` tokens of the run it grows from `train.batch_warmup_start_tokens` (S) to
  the phase's batch (B), as `train.batch_warmup_mode` says:
  - `linear` (ours): `S + (B - S) * t / T` at token t of a warmup of T tokens. The batch is linear in
    tokens, so the small early batches take most of the warmup's steps: from 48 to 4608 sequences of
    1024 over 60B tokens, `T / (B - S) * ln(B / S)` ~ 58.6k steps (58.8k in whole rows).
  - `equal_steps` (ModernBERT's `BatchSizeWarmupScheduler`): the sizes S, 2S, ..., (K - 1)S with
    K = B // S, each held for the same number of steps, then B: size kS applies while
    `t < T * k (k + 1) / (K (K - 1))`. ModernBERT counts in micro-batches per device (mmBERT's files:
    48 sequences per device, the micro-batch) and tokens per device; a recipe writes the global
    figures of the run it follows (8 GPUs: S = 384 sequences). Over 60B tokens: ~25.4k steps.
- Learning rate, per phase (`recipe.Phase`): linear warmup from ~0 to the phase's peak over
  `warmup_tokens`, constant, then a decay over the phase's last `decay_tokens` (default: everything
  after the warmup) to `final_lr_fraction` (a) x peak, with `s` the fraction of the decay done:
  - `one_minus_sqrt`: `peak * (a + (1 - a) * (1 - sqrt(s)))` (mmBERT-base's decay phase);
  - `linear`:         `peak * (a + (1 - a) * (1 - s))` (mmBERT-small's);
  - `inverse_sqrt`:   `peak / sqrt(1 + s * (1 / a**2 - 1))`, the inverse-square-root curve scaled to
    reach `a * peak` exactly at the end (with a = 0 it would never end, so a = 0 falls back to 1e-6).
  A step's LR is the one at the *end* of its batch (so the first warmup step already has a small,
  non-zero LR), within the step's own phase; past the last phase the final LR is held.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from mmbert.recipe import Phase, Recipe


@dataclass(frozen=True)
class StepSettings:
    """Everything the schedule decides for the step that starts at `tokens`."""

    phase_index: int
    phase: Phase
    step_tokens: int  # global batch of this step, whole rows, cut at the phase's end
    weight_decay: float
    mask_rate: float
    tau: float
    seq_len: int


class Schedule:
    """The phase schedule of one (resolved) recipe, as functions of the tokens consumed."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.phases = recipe.phases
        self.starts = recipe.phase_starts()
        self.total_tokens = recipe.total_tokens

    # -- phases ---------------------------------------------------------------------------------------
    def phase_at(self, tokens: int) -> tuple[int, int]:
        """`(phase_index, tokens_into_phase)` after `tokens` tokens; past the end: the last phase."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        index = bisect.bisect_right(self.starts, tokens) - 1
        return index, tokens - self.starts[index]

    def phase_index(self, tokens: int) -> int:
        return self.phase_at(tokens)[0]

    def phase_end(self, index: int) -> int:
        """The token count at which phase `index` is complete."""
        return self.starts[index] + self.phases[index].tokens

    # -- per-token answers ----------------------------------------------------------------------------
    def lr(self, tokens: int, phase_index: int | None = None) -> float:
        """The learning rate after `tokens` tokens, within `phase_index` (default: the phase at `tokens`).

        The trainer passes the token count at the end of the step's batch and the step's phase: at a
        phase's last token the plain lookup would already answer for the next phase.
        """
        index = self.phase_index(tokens) if phase_index is None else phase_index
        phase = self.phases[index]
        return _phase_lr(tokens - self.starts[index], phase)

    def full_batch_tokens(self, index: int) -> int:
        """Phase `index`'s global batch after the warmup: its own `batch_tokens` or the recipe's."""
        own = self.phases[index].batch_tokens
        return self.recipe.train.batch_tokens if own is None else own

    def batch_tokens(self, tokens: int) -> int:
        """Tokens in the global batch taken after `tokens` tokens: batch-size warmup, in whole rows."""
        index = self.phase_index(tokens)
        target = self._warmup_target(tokens, self.full_batch_tokens(index))
        seq_len = self.phases[index].seq_len
        return max(seq_len, int(target) // seq_len * seq_len)

    def in_batch_warmup(self, tokens: int) -> bool:
        """Whether the step after `tokens` tokens is inside the batch-size warmup."""
        train = self.recipe.train
        return train.batch_warmup_start_tokens is not None and tokens < train.batch_warmup_tokens

    def _warmup_target(self, tokens: int, full: int) -> float:
        """The batch (tokens, before rounding to rows) after `tokens` tokens when the full batch is `full`."""
        train = self.recipe.train
        start, span = train.batch_warmup_start_tokens, train.batch_warmup_tokens
        if start is None or not self.in_batch_warmup(tokens) or start >= full:
            return full
        if train.batch_warmup_mode == "linear":
            return start + (full - start) * tokens / span
        # equal_steps: size k * start while tokens < span * k (k + 1) / (K (K - 1)), in integers.
        sizes = full // start
        if sizes < 2:
            return full
        k = 1
        while k < sizes and k * (k + 1) * span <= tokens * sizes * (sizes - 1):
            k += 1
        return k * start if k < sizes else full

    def step_tokens(self, tokens: int) -> int:
        """The batch of the step after `tokens` tokens, cut so that it ends with its phase at the latest."""
        return min(self.batch_tokens(tokens), self.phase_end(self.phase_index(tokens)) - tokens)

    def at(self, tokens: int) -> StepSettings:
        """All of the above for the step that starts after `tokens` tokens."""
        index = self.phase_index(tokens)
        phase = self.phases[index]
        return StepSettings(
            phase_index=index,
            phase=phase,
            step_tokens=self.step_tokens(tokens),
            weight_decay=phase.weight_decay,
            mask_rate=phase.mask_rate,
            tau=phase.tau,
            seq_len=phase.seq_len,
        )

    def steps_in_phase(self, index: int, limit: int = 10_000_000) -> int:
        """Optimizer steps phase `index` takes (whole-row batches, the last one cut at its end).

        Step by step through the batch-size warmup, then at once: past it every step but the phase's
        last takes the same batch.
        """
        tokens, steps, end = self.starts[index], 0, self.phase_end(index)
        while tokens < end and steps < limit and self.in_batch_warmup(tokens):
            tokens += self.step_tokens(tokens)
            steps += 1
        if tokens < end:
            steps += -(-(end - tokens) // self.batch_tokens(tokens))
        return min(steps, limit)


def _phase_lr(tokens_into_phase: float, phase: Phase) -> float:
    """LR at `tokens_into_phase` tokens of `phase` (clamped to the phase): warmup, constant, decay."""
    peak = phase.lr
    t = min(max(float(tokens_into_phase), 0.0), float(phase.tokens))
    if phase.warmup_tokens and t < phase.warmup_tokens:
        return peak * t / phase.warmup_tokens
    if phase.decay == "constant":
        return peak
    decay_tokens = phase.decay_tokens or (phase.tokens - phase.warmup_tokens)
    decay_start = phase.tokens - decay_tokens
    if t <= decay_start:
        return peak
    s = min(1.0, (t - decay_start) / decay_tokens)
    a = phase.final_lr_fraction
    if phase.decay == "one_minus_sqrt":
        return peak * (a + (1 - a) * (1 - math.sqrt(s)))
    if phase.decay == "linear":
        return peak * (a + (1 - a) * (1 - s))
    if phase.decay == "inverse_sqrt":
        a = max(a, 1e-6)
        return peak / math.sqrt(1 + s * (1 / a**2 - 1))
    raise ValueError(f"unknown decay shape {phase.decay!r}")
