"""The run's schedules as pure functions of the tokens consumed: LR, batch size, current phase.

Everything is a function of *tokens*, not steps, because the batch grows during batch-size warmup and
the phases are budgeted in tokens; a resumed run only needs its token count to be back on schedule.

LR (per phase, see `recipe.Phase`): linear warmup from ~0 to the phase's peak, constant, then a decay
over the phase's last `decay_tokens` to `final_lr_fraction` (a) x peak, with `s` the fraction of the
decay done:
- `one_minus_sqrt`: `peak * (a + (1 - a) * (1 - sqrt(s)))` (mmBERT-base's decay phase);
- `linear`:         `peak * (a + (1 - a) * (1 - s))` (mmBERT-small's);
- `inverse_sqrt`:   `peak / sqrt(1 + s * (1 / a**2 - 1))`, the inverse-square-root curve scaled to
  reach `a * peak` exactly at the end (with a = 0 it would never end, so a = 0 falls back to 1e-6).
"""

from __future__ import annotations

import bisect
import math

from mmbert.recipe import Phase, Recipe


def phase_at(tokens: int, recipe: Recipe) -> tuple[int, int]:
    """`(phase_index, tokens_into_phase)` for the token count `tokens`; past the end: the last phase.

    A phase's first token belongs to it: at exactly its start offset the new phase applies.
    """
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    starts = recipe.phase_starts()
    index = bisect.bisect_right(starts, tokens) - 1
    return index, tokens - starts[index]


def phase_lr(tokens_into_phase: float, phase: Phase, peak: float) -> float:
    """LR at `tokens_into_phase` tokens of `phase` whose peak LR is `peak`."""
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


def lr_at(tokens: int, recipe: Recipe) -> float:
    """The learning rate after `tokens` tokens of the run.

    Pass the token count at the *end* of the step's batch, so that the first warmup step already has a
    small non-zero LR (warmup goes linearly from ~0). Past the last phase the final LR is held.
    """
    index, into = phase_at(tokens, recipe)
    phase = recipe.phases[index]
    return phase_lr(into, phase, recipe.phase_lr(phase))


def weight_decay_at(tokens: int, recipe: Recipe) -> float:
    """The (decoupled) weight decay of the phase containing `tokens`."""
    return recipe.phase_weight_decay(recipe.phases[phase_at(tokens, recipe)[0]])


def batch_tokens_at(tokens: int, recipe: Recipe) -> int:
    """Tokens in the global batch taken after `tokens` tokens: batch-size warmup, in whole rows.

    The batch grows linearly from `train.batch_warmup_start_tokens` to `train.batch_tokens` over the
    first `train.batch_warmup_tokens` tokens, and is rounded down to whole rows of the current phase's
    `seq_len` (at least one row), since the packer fills rows.
    """
    train = recipe.train
    full = train.batch_tokens
    start = train.batch_warmup_start_tokens
    if start is None or train.batch_warmup_tokens == 0 or tokens >= train.batch_warmup_tokens:
        target = full
    else:
        target = start + (full - start) * tokens / train.batch_warmup_tokens
    seq_len = recipe.phases[phase_at(tokens, recipe)[0]].seq_len
    return max(seq_len, int(target) // seq_len * seq_len)


class Schedule:
    """The same functions bound to one recipe (what the trainer keeps), plus per-phase settings."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    def phase_at(self, tokens: int) -> tuple[int, int]:
        return phase_at(tokens, self.recipe)

    def phase(self, tokens: int) -> Phase:
        return self.recipe.phases[phase_at(tokens, self.recipe)[0]]

    def lr_at(self, tokens: int) -> float:
        return lr_at(tokens, self.recipe)

    def weight_decay_at(self, tokens: int) -> float:
        return weight_decay_at(tokens, self.recipe)

    def batch_tokens_at(self, tokens: int) -> int:
        return batch_tokens_at(tokens, self.recipe)

    @property
    def total_tokens(self) -> int:
        return self.recipe.total_tokens
