"""Training recipes: typed dataclasses loaded from YAML, dotted command-line overrides, validation.

A recipe is data (`recipes/*.yaml`); these dataclasses are its schema. Every section is validated in
`__post_init__` and an error names the key path (`phases[1].sources[0].share`) and the file, so a
mistake in a 3T-token recipe is caught before a GPU is touched. The resolved recipe (file + overrides)
is what `to_dict()` returns: the trainer saves it with every checkpoint and `--dry-run` prints it.

Shape of a recipe (units are in the names: `*_tokens` are token counts, which also accept `2.3T`,
`600B`, `4M`, `20K` in the file)::

    name: tiny
    seed: 0
    model: {preset: mini, hidden_size: 128}      # preset + any MmBertConfig field
    tokenizer: runs/demo/tokenizer
    data: [runs/demo/data]
    train: {optimizer: stable_adamw, lr: 8e-4, betas: [0.9, 0.95], eps: 1e-8, weight_decay: 8e-5,
            batch_tokens: 4096, batch_warmup_start_tokens: 1024, batch_warmup_tokens: 100K,
            batch_warmup_mode: linear,      # or equal_steps (ModernBERT's)
            checkpoint_every_tokens: 200K, keep_last: 2, log_every_steps: 1}
    phases:
      - name: pretrain
        tokens: 2.3T
        languages: mmbert-60          # a set name, "all", or a list of keys / ISO 639-3 codes
        tau: 0.7
        mask_rate: 0.3
        seq_len: 1024
        global_rope_theta: 10000
        local_rope_theta: 10000
        batch_tokens: 4096            # optional: this phase's global batch (default train.batch_tokens)
        warmup_tokens: 3B             # the phase's part of the LR schedule
        decay: constant               # constant | one_minus_sqrt | linear | inverse_sqrt
        sources:
          - {name: fineweb2, share: 0.6}
          - {name: dclm, share: 0.4, languages: [eng]}
      - name: decay
        ...
        variants:                     # only on the last phase: each overrides some phase keys
          eng: {sources: [...]}
          all: {languages: all}
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmbert.config import MmBertConfig
from mmbert.data.mixture import SourceSpec
from mmbert.data.records import BadInputError, load_yaml, read_text
from mmbert.errors import RecipeError
from mmbert.io import atomic_write_text

OPTIMIZERS = ("stable_adamw", "adamw")
# How the batch grows during batch-size warmup (`mmbert.schedule` computes both): `linear` in tokens,
# or ModernBERT's `equal_steps` (multiples of the start size, each held for the same number of steps).
BATCH_WARMUP_MODES = ("linear", "equal_steps")
# Figures of a phase that a recipe may declare as set from mmBERT's released counts (`fitted_to_released`).
RELEASED_FIGURES = ("tokens", "english_share", "code_share")
DECAY_SHAPES = ("constant", "one_minus_sqrt", "linear", "inverse_sqrt")
# Keys a decay variant may not change: its identity and the variant table itself.
_VARIANT_FORBIDDEN = ("name", "variants")
_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
# Phase and variant names name directories and files of a run (`export/<phase>`, `variants/<name>`).
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise RecipeError(key, message)


@dataclass
class ModelSpec:
    """A model preset (`tiny`, `mini`, `mmbert-small`, `mmbert-base`) plus any config field overrides."""

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(isinstance(self.preset, str) and bool(self.preset), "preset", "must be a preset name")

    @classmethod
    def from_dict(cls, data: Any) -> ModelSpec:
        if isinstance(data, str):
            return cls(preset=data)
        if not isinstance(data, dict):
            raise RecipeError("", f"must be a mapping or a preset name, got {type(data).__name__}")
        rest = dict(data)
        preset = rest.pop("preset", "tiny")
        nested = rest.pop("overrides", {})  # `overrides:` is accepted as well as top-level keys
        if not isinstance(nested, dict):
            raise RecipeError("overrides", f"expected a mapping, got {type(nested).__name__}")
        return cls(preset=preset, overrides={**nested, **rest})

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, **self.overrides}

    def build_config(self, **extra: Any) -> MmBertConfig:
        """`MmBertConfig.preset(preset, **overrides, **extra)`; a bad key or value names `model.<key>`."""
        fields = {f.name: f for f in dataclasses.fields(MmBertConfig)}
        hints = typing.get_type_hints(MmBertConfig)
        values = {}
        for key, value in self.overrides.items():
            if key not in fields:
                raise RecipeError(
                    f"model.{key}", "not a model config field" + known_keys(key, sorted(fields))
                )
            values[key] = _coerce(value, hints[key], f"model.{key}")
        try:
            return MmBertConfig.preset(self.preset, **{**values, **extra})
        except ValueError as err:  # the preset's name, or a value the config rejects (its message names it)
            text = str(err)
            match = re.match(r"MmBertConfig\.(\w+): (.*)", text)
            if match:
                raise RecipeError(f"model.{match[1]}", match[2]) from None
            raise RecipeError("model.preset" if "preset" in text else "model", text) from None


@dataclass
class TrainSpec:
    """Optimizer, batch size (in tokens) and its warmup, checkpoint and logging cadence.

    `batch_tokens` is the global batch of every phase that does not set its own (`Phase.batch_tokens`).
    """

    optimizer: str = "stable_adamw"
    lr: float = 8e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 8e-5
    batch_tokens: int = 4608 * 1024
    # Batch-size warmup: the batch grows from `batch_warmup_start_tokens` to the phase's batch over the
    # first `batch_warmup_tokens` tokens of the run (0 = no warmup), as `batch_warmup_mode` says:
    # `linear` (linear in tokens, in whole rows) or `equal_steps` (ModernBERT's: start, 2 x start, ...,
    # each size for the same number of optimizer steps). See `mmbert.schedule`.
    batch_warmup_start_tokens: int | None = None
    batch_warmup_tokens: int = 0
    batch_warmup_mode: str = "linear"
    checkpoint_every_tokens: int | None = None
    keep_last: int = 3
    log_every_steps: int = 1

    def __post_init__(self) -> None:
        _check(
            self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {OPTIMIZERS}, got {self.optimizer!r}"
        )
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "betas",
            "must be two values in [0, 1)",
        )
        _check(self.eps > 0, "eps", f"must be > 0, got {self.eps}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.batch_tokens > 0, "batch_tokens", f"must be > 0, got {self.batch_tokens}")
        _check(self.batch_warmup_tokens >= 0, "batch_warmup_tokens", "must be >= 0")
        _check(
            self.batch_warmup_mode in BATCH_WARMUP_MODES,
            "batch_warmup_mode",
            f"must be one of {BATCH_WARMUP_MODES}, got {self.batch_warmup_mode!r}",
        )
        if self.batch_warmup_start_tokens is not None:
            _check(
                0 < self.batch_warmup_start_tokens <= self.batch_tokens,
                "batch_warmup_start_tokens",
                f"must be in (0, batch_tokens={self.batch_tokens}], got {self.batch_warmup_start_tokens}",
            )
        if self.checkpoint_every_tokens is not None:
            _check(self.checkpoint_every_tokens > 0, "checkpoint_every_tokens", "must be > 0")
        _check(self.keep_last >= 1, "keep_last", f"must be >= 1, got {self.keep_last}")
        _check(self.log_every_steps >= 1, "log_every_steps", f"must be >= 1, got {self.log_every_steps}")


@dataclass
class Phase:
    """One training phase: its token budget, languages, masking, context, RoPE and LR-schedule part.

    LR within the phase: linear warmup from ~0 to the peak over `warmup_tokens`, constant, then
    (unless `decay: constant`) a decay over the last `decay_tokens` tokens (default: everything after
    the warmup) to `final_lr_fraction` x peak (`mmbert.schedule` computes it). The peak is `lr` and the
    weight decay `weight_decay`; left out, they are `train.lr` / `train.weight_decay`, filled in when the
    recipe is built, so that a loaded recipe holds every phase's own values.

    `batch_tokens` is the phase's global batch in tokens (whole rows of `seq_len`); left out, it is
    `train.batch_tokens` at the time of use (so a `train.batch_tokens=` override reaches every phase that
    does not set its own). mmBERT's released configs keep 4608 sequences per step in every phase: 4608 x
    1024 tokens in pre-training, 4608 x 8192 in the 8192-token phases.

    `fitted_to_released` names the figures of the phase (`tokens`, `english_share`, `code_share`) whose
    values the recipe took from mmBERT's released per-language counts: `mmbert plan --released-counts`
    then reports them as fitted (equal by construction), not as predictions. Training ignores it.
    """

    name: str
    tokens: int
    languages: str | list[str] = "all"
    tau: float = 1.0
    mask_rate: float = 0.15
    seq_len: int = 1024
    global_rope_theta: float = 10_000.0
    local_rope_theta: float = 10_000.0
    lr: float | None = None
    weight_decay: float | None = None
    batch_tokens: int | None = None
    warmup_tokens: int = 0
    decay: str = "constant"
    decay_tokens: int | None = None
    final_lr_fraction: float = 0.02
    fitted_to_released: list[str] = field(default_factory=list)
    sources: list[SourceSpec] = field(default_factory=list)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(
            bool(NAME_RE.match(self.name)),
            "name",
            f"{self.name!r} is not a phase name (letters, digits, '.', '_', '-', not first): it names files",
        )
        _check(self.tokens > 0, "tokens", f"must be > 0, got {self.tokens}")
        if isinstance(self.languages, list):
            _check(len(self.languages) > 0, "languages", "must not be an empty list")
        _check(0 <= self.tau <= 1, "tau", f"must be in [0, 1], got {self.tau}")
        _check(0 < self.mask_rate < 1, "mask_rate", f"must be in (0, 1), got {self.mask_rate}")
        _check(self.seq_len >= 4, "seq_len", f"must be >= 4, got {self.seq_len}")
        _check(self.global_rope_theta > 0, "global_rope_theta", "must be > 0")
        _check(self.local_rope_theta > 0, "local_rope_theta", "must be > 0")
        if self.lr is not None:
            _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        if self.weight_decay is not None:
            _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        if self.batch_tokens is not None:
            _check(self.batch_tokens > 0, "batch_tokens", f"must be > 0, got {self.batch_tokens}")
        _check(
            0 <= self.warmup_tokens <= self.tokens, "warmup_tokens", f"must be in [0, tokens={self.tokens}]"
        )
        _check(self.decay in DECAY_SHAPES, "decay", f"must be one of {DECAY_SHAPES}, got {self.decay!r}")
        if self.decay_tokens is not None:
            _check(
                0 < self.decay_tokens <= self.tokens - self.warmup_tokens,
                "decay_tokens",
                f"must be in (0, tokens - warmup_tokens = {self.tokens - self.warmup_tokens}]",
            )
        _check(0 <= self.final_lr_fraction <= 1, "final_lr_fraction", "must be in [0, 1]")
        for i, figure in enumerate(self.fitted_to_released):
            _check(
                figure in RELEASED_FIGURES,
                f"fitted_to_released[{i}]",
                f"must be one of {RELEASED_FIGURES}, got {figure!r}",
            )
        self._check_sources()

    def _check_sources(self) -> None:
        names = [s.name for s in self.sources]
        for i, name in enumerate(names):
            _check(names.index(name) == i, f"sources[{i}].name", f"source {name!r} listed twice")
        with_share = [s.share is not None for s in self.sources]
        if any(with_share) and not all(with_share):
            raise RecipeError(
                "sources", "use `share` for every source or `weight` for every source, not both"
            )
        if self.sources and all(with_share):
            total = sum(s.share for s in self.sources)  # type: ignore[misc]
            _check(
                abs(total - 1) <= 1e-3,
                "sources",
                f"shares sum to {total:.6g}, not 1 ({', '.join(f'{s.name}={s.share}' for s in self.sources)});"
                " use `weight` for relative amounts",
            )

    def with_variant(self, variant: str) -> Phase:
        """This phase with decay variant `variant`'s keys applied (and no variant table)."""
        if variant not in self.variants:
            raise RecipeError(
                "variants",
                f"phase {self.name!r} has no variant {variant!r} (has: {', '.join(self.variants)})",
            )
        data = _to_plain(self)
        data.pop("variants")
        data.update(copy.deepcopy(self.variants[variant]))
        return _build(Phase, data, "")


@dataclass
class Recipe:
    """A whole run: model, tokenizer, data, optimizer/batch settings and the phases in order."""

    phases: list[Phase]
    name: str = ""
    seed: int = 0
    model: ModelSpec = field(default_factory=ModelSpec)
    tokenizer: str | None = None
    data: list[str] = field(default_factory=list)
    train: TrainSpec = field(default_factory=TrainSpec)
    # Set by `with_variant`: which decay variant this resolved recipe runs (None = the phases as written).
    variant: str | None = None

    def __post_init__(self) -> None:
        _check(len(self.phases) > 0, "phases", "a recipe needs at least one phase")
        # Defaults resolved once: every phase holds its own peak LR and weight decay from here on.
        for phase in self.phases:
            if phase.lr is None:
                phase.lr = self.train.lr
            if phase.weight_decay is None:
                phase.weight_decay = self.train.weight_decay
        names = [p.name for p in self.phases]
        for i, phase in enumerate(self.phases):
            _check(names.index(phase.name) == i, f"phases[{i}].name", f"phase name {phase.name!r} used twice")
            if phase.variants and i != len(self.phases) - 1:
                raise RecipeError(
                    f"phases[{i}].variants",
                    "only the last phase may declare variants (they all start from the checkpoint before it)",
                )
            for vname, override in phase.variants.items():
                key = f"phases[{i}].variants.{vname}"
                _check(bool(NAME_RE.match(vname)), key, "not a variant name (letters, digits, '.', '_', '-')")
                _check(isinstance(override, dict), key, "must be a mapping of phase keys to override")
                for bad in _VARIANT_FORBIDDEN:
                    _check(bad not in override, f"{key}.{bad}", "a variant cannot change this key")
                try:
                    phase.with_variant(vname)
                except RecipeError as err:
                    raise err.under(key) from None
        self.model.build_config()  # a bad model key or value fails here, before any run

    def check_fits(self, config: MmBertConfig, world_size: int = 1, model: str = "model") -> None:
        """Refuse phases that `config` (the run's model, `model` says which) or the step cannot run.

        A phase's `seq_len` must not exceed the model's `max_position_embeddings`. A step takes whole
        rows on every rank, so the last step of a phase can run past its end by up to one row per
        rank: the next phase must be longer than that, or it would be skipped. Every variant counts.
        """
        limit = config.max_position_embeddings
        for variant in [None, *self.variant_names()]:
            phases = self.phases_for_variant(variant)
            for i, phase in enumerate(phases):
                key = f"phases[{i}]"
                if variant is not None and i == len(phases) - 1:
                    key += f".variants.{variant}"
                _check(
                    phase.seq_len <= limit,
                    f"{key}.seq_len",
                    f"{phase.seq_len} is more than the {model}'s max_position_embeddings ({limit})",
                )
                if i > 0:
                    row = phases[i - 1].seq_len * world_size
                    _check(
                        phase.tokens >= row,
                        f"{key}.tokens",
                        f"{phase.tokens} is less than one row per rank of the phase before "
                        f"({phases[i - 1].seq_len} x {world_size} rank(s)): its last step could skip this phase",
                    )

    # -- variants -------------------------------------------------------------------------------------
    def variant_names(self) -> list[str]:
        """The decay variants the last phase declares, in file order (empty if none)."""
        return list(self.phases[-1].variants)

    def phases_for_variant(self, name: str | None) -> list[Phase]:
        """The phases of the run for variant `name` (None: the phases as written)."""
        if name is None:
            return list(self.phases)
        return [*self.phases[:-1], self.phases[-1].with_variant(name)]

    def with_variant(self, name: str | None) -> Recipe:
        """A recipe whose last phase is variant `name` resolved (no variant table left), for one run."""
        if name is None:
            return self
        phases = self.phases_for_variant(name)
        return dataclasses.replace(self, phases=phases, variant=name)

    def phase_index(self, name: str, key: str = "phase") -> int:
        """The index of the phase called `name`; a `RecipeError` at `key` lists the phases otherwise."""
        names = [p.name for p in self.phases]
        if name not in names:
            raise RecipeError(key, f"the recipe has no phase {name!r} (phases: {', '.join(names)})")
        return names.index(name)

    # -- totals ---------------------------------------------------------------------------------------
    @property
    def total_tokens(self) -> int:
        return sum(p.tokens for p in self.phases)

    def phase_starts(self) -> list[int]:
        """Token offset at which each phase begins."""
        starts, acc = [], 0
        for p in self.phases:
            starts.append(acc)
            acc += p.tokens
        return starts

    def diff(self, other: Recipe) -> list[str]:
        """The dotted keys whose values differ between this recipe and `other` (sorted)."""
        a, b = _flatten(self.to_dict()), _flatten(other.to_dict())
        return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))

    # -- serialization --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML/JSON-able) that `Recipe.from_dict` turns back into an equal recipe."""
        return _to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=110)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the resolved recipe as YAML, atomically."""
        atomic_write_text(Path(path), self.to_yaml())

    @classmethod
    def from_dict(cls, data: Any, file: str | None = None) -> Recipe:
        try:
            return _build(cls, data, "")
        except RecipeError as err:
            raise err.in_file(file) if file else err from None


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Plain nested data as `{dotted.key: value}` (list items by index)."""
    if isinstance(data, (dict, list)):
        items = data.items() if isinstance(data, dict) else enumerate(data)
        return {k: v for key, value in items for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, ModelSpec):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    return obj


# -- building dataclasses from plain data, with key paths in errors -------------------------------------
def _join(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else key


def parse_tokens(value: Any) -> int:
    """An integer token count from `123`, `1.5e9`, `"2.3T"`, `"600B"`, `"4M"`, `"20K"` or `"1_000"`."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a count")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value} is not a whole number")
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace("_", "").replace(",", "")
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBgGtT]?)", text)
        if not m:
            raise ValueError(f"{value!r} is not a count (examples: 1000, 1e6, 20K, 4M, 600B, 2.3T)")
        number = float(m.group(1)) * _SUFFIXES.get(m.group(2).lower(), 1)
        if abs(number - round(number)) > 1e-6 * max(1.0, number):
            raise ValueError(f"{value!r} is not a whole number of tokens")
        return int(round(number))
    raise ValueError(f"expected a count, got {type(value).__name__}")


def format_tokens(n: float) -> str:
    """A token count the way recipes write it: `2.30T`, `600.00B`, `4.00M`, `20.00K`, `512`."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert YAML data `value` to type `tp` (from the dataclass annotations) or raise naming `path`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise RecipeError(path, "must not be empty")
        errors = []
        # `str | list[str]`: a list tries the list type first (so it is not stringified), a scalar
        # the scalar types first (so a set name stays a string).
        generic_first = isinstance(value, (list, tuple, dict))
        for arg in sorted(
            (a for a in args if a is not type(None)),
            key=lambda a: (typing.get_origin(a) is None) == generic_first,
        ):
            try:
                return _coerce(value, arg, path)
            except RecipeError as err:
                errors.append(err.message)
        raise RecipeError(path, " / ".join(dict.fromkeys(errors)))
    if value is None:
        raise RecipeError(path, "must not be empty")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            if item is str and isinstance(value, str):
                return [value]  # `data: DIR` means `data: [DIR]`
            raise RecipeError(path, f"expected a list, got {type(value).__name__}")
        return [_coerce(v, item, _join(path, i)) for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise RecipeError(path, f"expected a list of {len(args)} values")
        return tuple(_coerce(v, a, _join(path, i)) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise RecipeError(path, f"expected a mapping, got {type(value).__name__}")
        return {str(k): _coerce(v, val_tp, _join(path, str(k))) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(path, f"expected true/false, got {value!r}")
    if tp is int:
        try:
            return parse_tokens(value)
        except ValueError as err:
            raise RecipeError(path, str(err)) from None
    if tp is float:
        if isinstance(value, bool):
            raise RecipeError(path, f"expected a number, got {value!r}")
        try:
            # YAML 1.1 reads `1e-3` (no dot) as a string: accept it as the number it means.
            number = float(value)
        except (TypeError, ValueError):
            raise RecipeError(path, f"expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise RecipeError(path, f"must be finite, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise RecipeError(path, f"expected a string, got {type(value).__name__}")
        return str(value)
    raise TypeError(f"unsupported recipe field type {tp!r} at {path}")


def known_keys(key: str, known: list[str]) -> str:
    """The tail of an unknown-key error: the closest known key first (a typo is the usual cause),
    then all of them."""
    close = difflib.get_close_matches(key, known, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return f" ({guess}known: {', '.join(known)})"


def _build(cls: type, data: Any, path: str) -> Any:
    if cls is ModelSpec:
        try:
            return ModelSpec.from_dict(data)
        except RecipeError as err:
            raise err.under(path) from None
    if not isinstance(data, dict):
        raise RecipeError(path, f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise RecipeError(
            _join(path, str(unknown[0])), "unknown key" + known_keys(str(unknown[0]), list(fields))
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(_join(path, name), "required key is missing")
    try:
        return cls(**kwargs)
    except RecipeError as err:
        raise err.under(path) from None


# -- loading and overrides ------------------------------------------------------------------------------
def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `dotted.key=value` (list items by index: `phases.0.tokens=1M`) to plain recipe data.

    The value is parsed as YAML (`[eng, fra]`, `0.3`, `null`). A missing final key is created (the
    schema check then rejects it if it is not a field); a missing intermediate key or index is an error.
    """
    if "=" not in assignment:
        raise RecipeError(assignment, "an override must look like `dotted.key=value`")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise RecipeError(key, "empty key in override")
    value = yaml.safe_load(raw) if raw.strip() else None
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.lstrip("-").isdigit():
                raise RecipeError(where, f"{'.'.join(parts[:depth]) or 'value'} is a list: use an index")
            index = int(part)
            if not -len(node) <= index < len(node):
                raise RecipeError(where, f"index {index} out of range (list has {len(node)} items)")
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            elif part not in node or node[part] is None:
                # Sections with defaults (train, model, a phase's variants) may be absent from the file.
                node[part] = {}
                node = node[part]
            else:
                node = node[part]
        else:
            raise RecipeError(where, f"{'.'.join(parts[:depth])} is not a mapping or a list")


def load_recipe(path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load a YAML recipe, apply `dotted.key=value` overrides in order, and validate it."""
    path = Path(path)
    try:
        text = read_text(path)  # UTF-8 (a byte-order mark dropped); another encoding is named
    except OSError as err:
        raise RecipeError("", f"cannot read recipe: {err.strerror}", str(path)) from None
    except BadInputError as err:
        raise RecipeError("", f"cannot read recipe: {err.reason}: {err.detail}", str(path)) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise RecipeError("", f"invalid YAML: {getattr(err, 'problem', err)}", where) from None
    if not isinstance(data, dict):
        raise RecipeError("", "a recipe must be a YAML mapping", str(path))
    for assignment in overrides:
        try:
            apply_override(data, assignment)
        except RecipeError as err:
            raise RecipeError(err.key, err.message, f"override {assignment!r}") from None
    return Recipe.from_dict(data, file=str(path))
