"""What `mmbert demo` and `mmbert ablate` share: a directory of runs of a recipe on the bundled corpus.

Both train a recipe (`recipes/tiny.yaml` by default, `find_recipe`) scaled to a budget, on their own
tokenizer and shards of the bundled corpus, in a directory that a rerun continues. The settings that
decide the results (`ExperimentSettings`) are recorded in the directory's state file by the first
run, and a rerun with other settings is refused (`read_state`); the paths every such directory has
are `ExperimentLayout`'s; `ExperimentSettings.recipe_overrides` points the recipe at the directory's
tokenizer and data and scales it; `eval_languages` picks the languages evaluated; `phase_summary` is
what both reports record of a phase. Each command subclasses the settings and the layout with its
own (`mmbert.demo`, `mmbert.demo_layout`, `mmbert.ablate`), and neither imports the other.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

from mmbert.errors import MmbertError
from mmbert.evaluate import ENGLISH, heldout_languages, recipe_groups
from mmbert.io import not_found
from mmbert.recipe import Phase, Recipe

# Languages the demo's plots name, taken first when a group's languages are cut to a few: English and
# French (pre-training), Chinese, Swahili (mid-training in the tiny recipe), Faroese and Tigrinya
# (decay only: the paper's examples), and code.
HIGHLIGHT = ("eng_Latn", "fra_Latn", "cmn_Hans", "swh_Latn", "fao_Latn", "tir_Ethi", "code")


class ExperimentError(MmbertError, RuntimeError):
    """An experiment that cannot go on as asked (other settings in its directory, no recipe)."""


def find_recipe(path: Path | None) -> Path:
    """`--recipe`, else `recipes/tiny.yaml` in the working directory or in the source checkout."""
    if path is not None:
        if not path.is_file():
            raise ExperimentError(not_found(path, "recipe file"))
        return path.resolve()
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / "recipes" / "tiny.yaml"
        if candidate.is_file():
            return candidate.resolve()
    raise ExperimentError("recipes/tiny.yaml not found: run from the repository root or pass --recipe")


@dataclasses.dataclass
class ExperimentSettings:
    """What determines an experiment's results (a rerun must use the same, or a new --out)."""

    recipe: str
    scale: float = 1.0  # every token budget of the recipe times this
    quick: bool = False  # the smoke-test configuration
    model_preset: str | None = None  # None: the recipe's
    batch_tokens: int | None = None  # None: the recipe's
    lr: float | None = None  # None: the recipe's
    tokenizer_vocab: int = 8192
    # A 2M-character sample of the 5.5M-character corpus: half the training time, the same vocabulary size.
    tokenizer_max_chars: int | None = 2_000_000
    # The demo evaluates 5 models: English + 24 languages of each group (`eval_languages`; None: all),
    # texts cut to 48 tokens, about half a minute per model here (`mmbert evaluate` alone takes every
    # language).
    eval_max_length: int = 48
    eval_per_group: int | None = 24

    def recipe_overrides(self, recipe: Recipe, tokenizer: Path, data: Path) -> list[str]:
        """Dotted overrides for a run of `recipe` on prepared `data`: model preset (the preset alone: the
        recipe's other model keys are dropped with its preset), batch, LR (None: the recipe's), and
        every token budget times `scale`.

        The checkpoint interval is not scaled: it is about how much work a kill may lose, not the recipe.
        """
        out = [f"tokenizer={tokenizer}", f"data=[{data}]"]
        if self.model_preset:
            out.append(f"model={{preset: {self.model_preset}}}")
        if self.batch_tokens:
            out.append(f"train.batch_tokens={self.batch_tokens}")
            start = recipe.train.batch_warmup_start_tokens
            if start is not None and start > self.batch_tokens:
                out.append(f"train.batch_warmup_start_tokens={self.batch_tokens}")
        if self.lr:
            out.append(f"train.lr={self.lr}")
        if self.scale != 1.0:
            out += _scaled_budgets(recipe, self.scale)
        return out


def _scaled_budgets(recipe: Recipe, scale: float) -> list[str]:
    """Overrides that multiply every token budget of `recipe` (phases, their variants, batch warm-up)."""

    def scaled(n: int) -> int:
        return max(1, round(n * scale))

    out = []
    for i, phase in enumerate(recipe.phases):
        out.append(f"phases.{i}.tokens={scaled(phase.tokens)}")
        if phase.warmup_tokens:
            out.append(f"phases.{i}.warmup_tokens={scaled(phase.warmup_tokens)}")
        if phase.decay_tokens:
            out.append(f"phases.{i}.decay_tokens={scaled(phase.decay_tokens)}")
        for name, variant in phase.variants.items():
            for key in ("tokens", "warmup_tokens", "decay_tokens"):
                if variant.get(key):
                    out.append(f"phases.{i}.variants.{name}.{key}={scaled(int(variant[key]))}")
    if recipe.train.batch_warmup_tokens:
        out.append(f"train.batch_warmup_tokens={scaled(recipe.train.batch_warmup_tokens)}")
    return out


class Under:
    """A path under a layout's `out` directory, declared by name (`tokenizer = Under("tokenizer")`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, layout: Any, owner: type | None = None) -> Any:
        return self if layout is None else layout.out / self.name


@dataclasses.dataclass(frozen=True)
class ExperimentLayout:
    """The paths every experiment directory `out` has; a command's layout adds its own, and its `state`
    (the settings and what is finished, named after the command)."""

    out: Path
    state: ClassVar[Under]
    recipe = Under("recipe.yaml")  # the recipe as trained (scaled, pointed at the tokenizer and data)
    tokenizer = Under("tokenizer")
    data = Under("data")  # prepared shards of the bundled corpus
    plots = Under("plots")


def read_state(layout: ExperimentLayout, settings: ExperimentSettings, **fresh: Any) -> dict[str, Any]:
    """The directory's state (`{"settings": ..., **fresh}` for a new one); other settings are refused."""
    wanted = dataclasses.asdict(settings)
    state = json.loads(layout.state.read_text()) if layout.state.exists() else None
    if state is not None and state["settings"] != wanted:
        changed = sorted(k for k in wanted if state["settings"].get(k) != wanted[k])
        raise ExperimentError(
            f"{layout.out} was started with other settings ({', '.join(changed)}: "
            f"{', '.join(repr(state['settings'].get(k)) for k in changed)}); rerun with the same options "
            "or use another --out"
        )
    return state or {"settings": wanted, **fresh}


def eval_languages(recipe: Recipe, per_group: int | None) -> list[str] | None:
    """English plus `per_group` languages of each group (the named ones first), or all (None)."""
    if per_group is None:
        return None
    langs = heldout_languages()
    groups, order = recipe_groups(recipe, langs)
    chosen = {ENGLISH}
    for g in order:
        # the languages the report names (Faroese, Tigrinya, ...) first, then alphabetical
        members = sorted((lang for lang in langs if groups[lang] == g), key=lambda k: (k not in HIGHLIGHT, k))
        chosen.update(members[:per_group])
    return sorted(chosen)


def phase_summary(phase: Phase) -> dict[str, Any]:
    """What a report records of a phase: its budget, languages and the schedule's values."""
    return {
        "name": phase.name,
        "tokens": phase.tokens,
        "languages": phase.languages,
        "tau": phase.tau,
        "mask_rate": phase.mask_rate,
        "seq_len": phase.seq_len,
        "rope_theta": phase.global_rope_theta,
    }
