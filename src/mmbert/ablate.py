"""`mmbert ablate`: the recipe's choices ablated one at a time on the bundled corpus, with seeds and intervals.

    mmbert ablate [--out runs/ablate] [--arms ARM ...] [--seeds N] [--scale F | --quick]

mmBERT's paper did not ablate the choices that define its recipe. Here each arm is the recipe
(`recipes/tiny.yaml`) with one choice changed by dotted overrides (`mmbert.recipe`), trained from
scratch on the same token budget once per seed (`mmbert.runs.run_recipe`). The seed sets the
initialization and the document order, so an arm and the reference share both for a given seed and
every comparison is paired:

- `paper`: the recipe as written: masking 30 → 15 → 5%, tau 0.7 → 0.5 → 0.3, languages 60 → 110 →
  all; its decay variants `eng`, `cont` and `all` from the shared end-of-mid checkpoint, merged by
  TIES (against that checkpoint), linearly, and as an EMA of decay-all's checkpoints
  (`mmbert.merge`). Its decay-all model is the reference of claims (a)-(c); its decay-cont model is
  the arm of (c) that never adds the decay-only languages.
- `mask-15`: a fixed 15% masking (a);
- `tau-0.7`, `tau-0.3`: a fixed tau (b);
- `langs-all`: every language from the first step (c).

Every model is evaluated on the held-out articles (`mmbert.evaluate`, every document's counts kept),
then `analyze` tests the claims (`CLAIMS`): per claim and metric, the paired difference with a t
interval across seeds and a paired bootstrap interval over the documents (`mmbert.stats`); the
difference counts as resolved when both intervals exclude zero. Languages are grouped by the phase of
the recipe that introduced them and, for (b), by their amount of training text (thirds by tokens).
`mmbert.ablate_report` writes `ablations.md`, `results.json` and the plots.

Resumable: each arm x seed is a run directory `OUT/runs/<arm>/seed-<k>/` (the trainer resumes inside
it); merges and evaluations are written atomically and skipped when present; `OUT/ablate_state.json`
holds the settings, and a rerun with other settings is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmbert import checkpoint as ckpt
from mmbert.ablate_report import write_report
from mmbert.config import MmBertConfig
from mmbert.data.prepare import prepare
from mmbert.data.sampler import store_counts
from mmbert.data.shards import TokenStore
from mmbert.data.sources import open_source
from mmbert.distributed import init_distributed
from mmbert.evaluate import (
    DocumentScores,
    build_eval_set,
    evaluate_model,
    group_scores,
    language_scores,
    recipe_groups,
    write_result,
)
from mmbert.experiment import (
    ExperimentError,
    ExperimentLayout,
    ExperimentSettings,
    Under,
    eval_languages,
    find_recipe,
    phase_summary,
    read_state,
)
from mmbert.inference import load
from mmbert.io import atomic_dir, atomic_write_text, check_output
from mmbert.merge import merge_dirs
from mmbert.metrics import read_metrics
from mmbert.model import MmBertForMaskedLM
from mmbert.recipe import Recipe, apply_override, load_recipe
from mmbert.run_layout import RunLayout
from mmbert.runs import run_recipe
from mmbert.stats import (
    SeedStats,
    bootstrap_weights,
    percentile_interval,
    scale_needed,
    seed_interval,
    seeds_needed,
)
from mmbert.tokenizer import load_tokenizer, write_tokenizer_files
from mmbert.tokenizer_training import train_and_save
from mmbert.train import TrainOptions

logger = logging.getLogger(__name__)

STATE_FILE = "ablate_state.json"
PAPER = "paper"
# arm -> (what it changes, dotted overrides applied to every phase; `{i}` is the phase index)
ARMS: dict[str, tuple[str, tuple[str, ...]]] = {
    PAPER: ("the recipe as written (inverse mask schedule, annealed tau, progressive languages)", ()),
    "mask-15": ("a fixed 15% masking in every phase", ("phases.{i}.mask_rate=0.15",)),
    "tau-0.7": ("a fixed tau 0.7 in every phase", ("phases.{i}.tau=0.7",)),
    "tau-0.3": ("a fixed tau 0.3 in every phase", ("phases.{i}.tau=0.3",)),
    "langs-all": ("every language from the first step", ("phases.{i}.languages=all",)),
}
VARIANTS = ("eng", "cont", "all")  # the decay variants the recipe must declare
MERGES = ("ties", "linear", "ema")
TIES_DENSITY = 0.5  # mmBERT's is not published; TIES's usual setting (as in `mmbert demo`)
EMA_CHECKPOINTS = 4  # periodic checkpoints kept along the decay-all run, plus its end
EMA_HALF_LIFE = (
    1.0  # in checkpoints: weights 1, 2, 4, ... towards the newest (mmBERT-small's is not published)
)
METRICS = ("mlm_loss", "mlm_accuracy", "retrieval")
LOWER_IS_BETTER = {"mlm_loss"}
RESOURCE_GROUPS = ("high-resource", "mid-resource", "low-resource")


class AblateError(ExperimentError):
    """An ablation that cannot go on as asked (other settings in the directory, a recipe without variants)."""


# ---------------------------------------------------------------------------------------------- settings
@dataclasses.dataclass
class Settings(ExperimentSettings):
    """What determines the results (a rerun must use the same, or a new --out)."""

    seeds: int = 3
    # 0.4 x recipes/tiny.yaml's tokens: 10M tokens to train (5 arms x 3 seeds, plus the paper arm's two
    # other decay variants) at the demo model's ~5,000 tokens/s on 2 cores: about 35 of the 60 minutes.
    scale: float = 0.4
    eval_max_length: int = 128
    # 48 languages of each phase group + English (145 of 465): 33 evaluations in about 5 minutes.
    eval_per_group: int | None = 48
    n_boot: int = 1000

    @classmethod
    def create(
        cls,
        recipe: Path | None = None,
        seeds: int | None = None,
        scale: float | None = None,
        quick: bool = False,
    ) -> Settings:
        """The full ablation (`seeds` default 3), or the quick smoke test that the test suite runs.

        `quick` fixes its own size: a `scale` with it is refused, not applied to the smoke test."""
        path = str(find_recipe(recipe))
        seeds = cls.seeds if seeds is None else seeds
        if quick:
            if scale is not None:
                raise AblateError(
                    "--quick and --scale cannot be combined: --quick is a fixed smoke-test size"
                )
            return cls(
                recipe=path,
                seeds=seeds,
                scale=0.005,
                quick=True,
                model_preset="tiny",
                batch_tokens=1024,
                lr=2e-3,
                tokenizer_vocab=1000,
                tokenizer_max_chars=400_000,
                eval_max_length=48,
                eval_per_group=3,
                n_boot=100,
            )
        return cls(recipe=path, seeds=seeds, scale=cls.scale if scale is None else scale)

    def __post_init__(self) -> None:
        if self.seeds < 2:
            raise AblateError(f"--seeds must be >= 2 for an interval across seeds, got {self.seeds}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise AblateError(f"--scale must be a finite number > 0, got {self.scale}")


@dataclasses.dataclass(frozen=True)
class Layout(ExperimentLayout):
    """Where an ablation directory keeps what."""

    state = Under(STATE_FILE)
    results = Under("results.json")
    report = Under("ablations.md")

    def run_dir(self, arm: str, seed: int) -> Path:
        return self.out / "runs" / arm / f"seed-{seed}"

    def merge_dir(self, seed: int, method: str) -> Path:
        return self.run_dir(PAPER, seed) / "merges" / method

    def eval_path(self, arm: str, seed: int, model: str) -> Path:
        return self.run_dir(arm, seed) / "eval" / f"{model}.json"


# ---------------------------------------------------------------------------------------------- recipes
def base_recipe(settings: Settings, layout: Layout) -> Recipe:
    """The recipe as the ablation trains it: scaled, pointed at OUT's tokenizer and data."""
    recipe = load_recipe(settings.recipe)
    names = recipe.variant_names()
    missing = [v for v in VARIANTS if v not in names]
    if len(recipe.phases) < 2 or missing:
        raise AblateError(
            f"{settings.recipe}: the ablation needs phases before a decay phase with variants "
            f"{', '.join(VARIANTS)} (missing: {', '.join(missing) or 'none'})"
        )
    return load_recipe(settings.recipe, settings.recipe_overrides(recipe, layout.tokenizer, layout.data))


def arm_recipe(base: Recipe, arm: str, seed: int) -> Recipe:
    """The recipe of `arm` for `seed`: the paper arm keeps its variants, the others train decay-all."""
    if arm not in ARMS:
        raise AblateError(f"unknown arm {arm!r} (arms: {', '.join(ARMS)})")
    recipe = base if arm == PAPER else base.with_variant("all")
    data = recipe.to_dict()
    data["seed"] = seed
    data["variant"] = None
    for i in range(len(recipe.phases)):
        for template in ARMS[arm][1]:
            apply_override(data, template.format(i=i))
    return Recipe.from_dict(data)


def ema_recipe(recipe: Recipe) -> Recipe:
    """The paper recipe with checkpoints along the decay, for the EMA (only the decay-all run uses it)."""
    every = max(1, recipe.phases[-1].with_variant("all").tokens // EMA_CHECKPOINTS)
    train = dataclasses.replace(recipe.train, checkpoint_every_tokens=every, keep_last=EMA_CHECKPOINTS)
    return dataclasses.replace(recipe, train=train)


def arm_models(arm: str, recipe: Recipe, run: Path, layout: Layout, seed: int) -> dict[str, Path]:
    """The evaluated models of one arm x seed, by name: the paper arm's several, one for the others."""
    if arm != PAPER:
        return {arm: RunLayout(run).export(recipe.phases[-1].name)}
    last = recipe.phases[-1].name
    models = {"pre-decay": RunLayout(run).export(recipe.phases[-2].name)}
    models.update({f"decay-{v}": RunLayout(run).variant(v).export(last) for v in VARIANTS})
    models.update({m: layout.merge_dir(seed, m) for m in MERGES})
    return models


# ---------------------------------------------------------------------------------------------- running
def prepare_inputs(layout: Layout, settings: Settings, workers: int) -> None:
    """The tokenizer and the token shards of the bundled corpus (skipped when present)."""
    if not (layout.tokenizer / "tokenizer.json").exists():
        train_and_save(
            layout.tokenizer,
            vocab_size=settings.tokenizer_vocab,
            model="bpe",
            max_chars=settings.tokenizer_max_chars,
            progress=False,
        )
    for spec in ("bundled", "bundled:code"):  # `prepare` skips the work units already done
        prepare(open_source(spec), layout.tokenizer, layout.data, workers=workers, progress=False)


def export_checkpoint(path: Path, tokenizer: Any, out: Path) -> Path:
    """An HF-format export (model + `tokenizer`) of a training checkpoint, swapped in whole."""
    model = MmBertForMaskedLM(MmBertConfig(**ckpt.read_train_state(path)["run"]["model_config"]))
    ckpt.load_model_weights(path, model)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        write_tokenizer_files(tokenizer, tmp)
    return out


def train_arm(arm: str, recipe: Recipe, run: Path, options: TrainOptions) -> None:
    """Train one arm x seed (resumes inside its run directory)."""
    env = init_distributed("cpu")
    if arm != PAPER:
        run_recipe(recipe, run, env, options)
        return
    for v in VARIANTS:  # eng first: it trains the shared phases at the recipe's checkpoint cadence
        run_recipe(ema_recipe(recipe) if v == "all" else recipe, run, env, options, variant=v)


def merge_paper(recipe: Recipe, run: Path, layout: Layout, seed: int) -> None:
    """TIES and linear merges of the decay variants, and the EMA of decay-all's checkpoints."""
    last = recipe.phases[-1].name
    variants = [RunLayout(run).variant(v).export(last) for v in VARIANTS]
    pre_decay = RunLayout(run).export(recipe.phases[-2].name)
    if not layout.merge_dir(seed, "ties").exists():
        merge_dirs("ties", pre_decay, variants, layout.merge_dir(seed, "ties"), density=TIES_DENSITY)
    if not layout.merge_dir(seed, "linear").exists():
        merge_dirs("linear", None, variants, layout.merge_dir(seed, "linear"))
    if not layout.merge_dir(seed, "ema").exists():
        decay_all = RunLayout(run).variant("all")
        tokenizer = load_tokenizer(decay_all.export(last))  # as the trainer exported it
        by_step: dict[int, Path] = {}
        for info in ckpt.list_checkpoints(decay_all.root):
            by_step[info.step] = info.path  # a phase-end checkpoint sorts after a periodic one of its step
        inputs = []
        for step, path in sorted(by_step.items()):
            target = layout.merge_dir(seed, "ema-inputs") / f"step-{step:09d}"
            inputs.append(target if target.exists() else export_checkpoint(path, tokenizer, target))
        merge_dirs("ema", None, inputs, layout.merge_dir(seed, "ema"), half_life=EMA_HALF_LIFE)


@dataclasses.dataclass
class AblationResult:
    report: Path
    results: Path
    seconds: float  # of the training and evaluation in this call


def run_ablation(
    out: Path,
    settings: Settings,
    arms: Sequence[str] | None = None,
    workers: int = 2,
    progress: bool = False,
) -> AblationResult:
    """Train, merge and evaluate every arm x seed that is not done yet, then analyze and report."""
    arms = list(arms or ARMS)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise AblateError(f"unknown arm(s) {', '.join(unknown)} (arms: {', '.join(ARMS)})")
    if PAPER not in arms:
        raise AblateError(f"every comparison is against the {PAPER!r} arm: include it in --arms")
    layout = Layout(out)
    check_output(out, [settings.recipe], is_own=lambda d: (d / STATE_FILE).is_file(), overwrite=None)
    out.mkdir(parents=True, exist_ok=True)
    state = read_state(layout, settings, seconds={})
    atomic_write_text(layout.state, json.dumps(state, indent=1) + "\n")
    t0 = time.perf_counter()
    prepare_inputs(layout, settings, workers)
    base = base_recipe(settings, layout)
    base.save(layout.recipe)
    options = TrainOptions(progress=progress, tensorboard=False, log_every_steps=0 if progress else None)
    eval_set = None
    jobs = [(arm, seed) for seed in range(settings.seeds) for arm in arms]
    for k, (arm, seed) in enumerate(jobs):
        recipe = arm_recipe(base, arm, seed)
        run = layout.run_dir(arm, seed)
        models = arm_models(arm, recipe, run, layout, seed)
        if all(layout.eval_path(arm, seed, m).exists() for m in models):
            continue
        start = time.perf_counter()
        logger.info("[%d/%d] %s, seed %d: %s", k + 1, len(jobs), arm, seed, ARMS[arm][0])
        train_arm(arm, recipe, run, options)
        if arm == PAPER:
            merge_paper(recipe, run, layout, seed)
        for name, path in models.items():
            target = layout.eval_path(arm, seed, name)
            if target.exists():
                continue
            model, tok = load(path, "cpu")
            if eval_set is None:
                langs = eval_languages(base, settings.eval_per_group)
                eval_set = build_eval_set(tok, langs, settings.eval_max_length)
            groups, order = recipe_groups(base, eval_set.languages)
            result = evaluate_model(model, tok, eval_set, groups, order, n_boot=settings.n_boot)
            write_result(
                {"model": str(path), "arm": arm, "seed": seed, "name": name, **result},
                target.parent,
                target.stem,
            )
        seconds = time.perf_counter() - start
        key = f"{arm}/seed-{seed}"
        state["seconds"][key] = state["seconds"].get(key, 0.0) + seconds  # over every call that worked on it
        atomic_write_text(layout.state, json.dumps(state, indent=1) + "\n")
        logger.info("[%d/%d] %s, seed %d: done in %.0fs", k + 1, len(jobs), arm, seed, seconds)
    analysis = analyze(layout, base, settings, arms)
    analysis["seconds"] = dict(state["seconds"])
    atomic_write_text(layout.results, json.dumps(analysis, indent=1, ensure_ascii=False) + "\n")
    write_report(analysis, layout.report, layout.plots)
    return AblationResult(layout.report, layout.results, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- claims
@dataclasses.dataclass(frozen=True)
class Claim:
    """One comparison: model `a` against model `b` on a language group; `direction` +1 when the paper
    says `a` is better, 0 when it claims no direction (reported all the same)."""

    id: str
    section: str
    statement: str
    a: str
    b: str
    group: str  # a group key of `Groups` (a phase name, a resource third, or `all`)
    direction: int = 1


def claims_for(recipe: Recipe) -> list[Claim]:
    """The claims tested, with the recipe's phase names as group keys."""
    first, decay = recipe.phases[0].name, recipe.phases[-1].name
    ref = "paper/decay-all"
    return [
        Claim("a", "(a) mask schedule", "the inverse mask schedule (30 → 15 → 5%) beats a fixed 15%",
              ref, "mask-15", "all"),
        Claim("b1", "(b) tau annealing", "annealed tau beats a fixed 0.7 on the low-resource languages",
              ref, "tau-0.7", "low-resource"),
        Claim("b2", "(b) tau annealing", "annealed tau beats a fixed 0.3 on the high-resource languages",
              ref, "tau-0.3", "high-resource"),
        Claim("b3", "(b) tau annealing", "annealed tau against a fixed 0.7, all languages",
              ref, "tau-0.7", "all", 0),
        Claim("b4", "(b) tau annealing", "annealed tau against a fixed 0.3, all languages",
              ref, "tau-0.3", "all", 0),
        Claim("c1", "(c) progressive languages",
              "adding languages progressively beats all languages from the start on the first phase's languages",
              ref, "langs-all", first),
        Claim("c2", "(c) progressive languages",
              "adding the decay-only languages in the decay beats never adding them, on those languages",
              ref, "paper/decay-cont", decay),
        Claim("c3", "(c) progressive languages",
              "all languages from the start against progressive, on the decay-only languages (no direction claimed: "
              "the paper's bet is that the decay gets most of the way)", "langs-all", ref, decay, 0),
        Claim("d1", "(d) decay and merge", "decay-all beats decay-cont on the decay-only languages",
              ref, "paper/decay-cont", decay),
        Claim("d2", "(d) decay and merge", "the TIES merge beats a linear merge of the same variants",
              "paper/ties", "paper/linear", "all"),
        Claim("d3", "(d) decay and merge",
              "TIES (mmBERT-base's choice) against an EMA of decay-all's checkpoints (mmBERT-small's)",
              "paper/ties", "paper/ema", "all", 0),
        Claim("d4", "(d) decay and merge", "the TIES merge beats the best single decay variant",
              "paper/ties", "paper/best-single", "all"),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------- analysis
def resource_groups(data: Path, langs: Sequence[str]) -> dict[str, str]:
    """Each language's third by training tokens in the multilingual source: high-, mid-, low-resource."""
    counts = store_counts(TokenStore(data))
    multilingual = max(counts, key=lambda s: len(counts[s]))  # the UDHR, not the code
    tokens = counts[multilingual]
    ranked = sorted(langs, key=lambda lang: (-tokens.get(lang, 0), lang))
    cuts = [round(len(ranked) * k / 3) for k in range(4)]
    return {lang: RESOURCE_GROUPS[k] for k in range(3) for lang in ranked[cuts[k] : cuts[k + 1]]}


def _improvement(metric: str, diff: float) -> float:
    """A difference a - b turned so that positive means `a` is better."""
    return -diff if metric in LOWER_IS_BETTER else diff


def verdict(claim: Claim, metric: str, seed: SeedStats, boot_ci: Sequence[float | None]) -> str:
    """`a better` / `b better` when both intervals exclude zero, else `not resolved`; against the paper's
    direction when it claims one."""
    low, high = boot_ci
    boot_excludes = low is not None and high is not None and not (low <= 0 <= high)
    if not (seed.interval.excludes(0) and boot_excludes):
        return "not resolved"
    a_better = _improvement(metric, seed.mean) > 0
    if claim.direction == 0:
        return f"{'a' if a_better else 'b'} better"
    return "paper's direction" if a_better else "against the paper"


class Evaluations:
    """Every evaluation of an ablation directory as document counts, scored under shared resamples."""

    def __init__(self, layout: Layout, recipe: Recipe, settings: Settings, arms: Sequence[str]) -> None:
        self.docs: dict[tuple[str, int], DocumentScores] = {}
        self.paths: dict[tuple[str, int], str] = {}
        self.seeds = list(range(settings.seeds))
        for arm in arms:
            for seed in self.seeds:
                run = layout.run_dir(arm, seed)
                for name in arm_models(arm, recipe, run, layout, seed):
                    path = layout.eval_path(arm, seed, name)
                    if path.exists():
                        result = json.loads(path.read_text())
                        key = f"{arm}/{name}" if arm == PAPER else arm
                        self.docs[key, seed] = DocumentScores.from_dict(result["documents"])
                        self.paths[key, seed] = result["model"]
        if not self.docs:
            raise AblateError(f"{layout.out}: no evaluation found")
        first = next(iter(self.docs.values()))
        self.langs = sorted(set(first.langs))
        phase, self.phase_order = recipe_groups(recipe, self.langs)
        resource = resource_groups(layout.data, self.langs)
        self.groupings = {"phase": (phase, self.phase_order), "resource": (resource, list(RESOURCE_GROUPS))}
        self.weights = bootstrap_weights(first.langs, settings.n_boot, seed=0)
        self._cache: dict[tuple[str, int, str, bool], dict[str, dict[str, Any]]] = {}
        self._choose_best_single()

    def _choose_best_single(self) -> None:
        """Per seed, the decay variant with the lowest MLM loss over all languages (chosen on the held-out
        set itself: an optimistic pick for it)."""
        self.best_single: dict[int, str] = {}
        for seed in self.seeds:
            losses = {
                v: self.scores(f"{PAPER}/decay-{v}", seed, "phase")["all"]["mlm_loss"]
                for v in VARIANTS
                if (f"{PAPER}/decay-{v}", seed) in self.docs
            }
            if losses:
                best = min(losses, key=lambda v: losses[v])
                self.best_single[seed] = best
                self.docs[f"{PAPER}/best-single", seed] = self.docs[f"{PAPER}/decay-{best}", seed]

    def has(self, model: str) -> bool:
        return all((model, s) in self.docs for s in self.seeds)

    def scores(self, model: str, seed: int, grouping: str, boot: bool = False) -> dict[str, dict[str, Any]]:
        """Group metrics of one model and seed (floats; (B,) arrays with `boot`)."""
        key = (model, seed, grouping, boot)
        if key not in self._cache:
            groups, order = self.groupings[grouping]
            weights = self.weights if boot else None
            self._cache[key] = group_scores(self.docs[model, seed], groups, order, weights)
        return self._cache[key]

    def grouping_of(self, group: str) -> str:
        return "resource" if group in RESOURCE_GROUPS else "phase"

    def value(self, model: str, group: str, metric: str) -> dict[str, Any]:
        """A model's metric on a group: per-seed values, mean, t interval, bootstrap interval of the mean."""
        g = self.grouping_of(group)
        per_seed = [float(self.scores(model, s, g)[group][metric]) for s in self.seeds]
        stats = seed_interval(per_seed)
        boot = np.mean([self.scores(model, s, g, True)[group][metric] for s in self.seeds], axis=0)
        ci = percentile_interval(boot, stats.mean)
        return {**stats.to_dict(), "bootstrap_ci": [ci.low, ci.high]}

    def difference(self, a: str, b: str, group: str, metric: str) -> tuple[SeedStats, list[float | None]]:
        """The paired difference a - b: t statistics over seeds, and its bootstrap interval over documents."""
        g = self.grouping_of(group)
        diffs = [
            float(self.scores(a, s, g)[group][metric]) - float(self.scores(b, s, g)[group][metric])
            for s in self.seeds
        ]
        stats = seed_interval(diffs)
        boot = np.mean(
            [
                self.scores(a, s, g, True)[group][metric] - self.scores(b, s, g, True)[group][metric]
                for s in self.seeds
            ],
            axis=0,
        )
        ci = percentile_interval(boot, stats.mean)
        return stats, [ci.low, ci.high]

    def language_values(self, model: str, seed: int, boot: bool = False) -> dict[str, np.ndarray]:
        return language_scores(self.docs[model, seed], self.weights if boot else None)[1]


def claim_results(ev: Evaluations, claims: Sequence[Claim], scale: float) -> list[dict[str, Any]]:
    out = []
    for claim in claims:
        row: dict[str, Any] = dataclasses.asdict(claim)
        if not (ev.has(claim.a) and ev.has(claim.b)):
            row["missing"] = [m for m in (claim.a, claim.b) if not ev.has(m)]
            out.append(row)
            continue
        row["metrics"] = {}
        for metric in METRICS:
            stats, boot_ci = ev.difference(claim.a, claim.b, claim.group, metric)
            resolved = verdict(claim, metric, stats, boot_ci)
            row["metrics"][metric] = {
                "a": ev.value(claim.a, claim.group, metric),
                "b": ev.value(claim.b, claim.group, metric),
                "difference": {**stats.to_dict(), "bootstrap_ci": boot_ci},
                "verdict": resolved,
                "seeds_needed": None if resolved != "not resolved" else seeds_needed(stats.mean, stats.sd),
                "scale_needed": None
                if resolved != "not resolved"
                else scale_needed(stats.mean, stats.se, len(ev.seeds) - 1, scale),
            }
        out.append(row)
    return out


def decay_languages(ev: Evaluations, decay_group: str) -> dict[str, Any]:
    """Item 3: per decay-only language and for the group, each model's MLM loss and accuracy, decay-all's
    gain over decay-cont, and the share of it each merge keeps (`retention`)."""
    phase, _ = ev.groupings["phase"]
    langs = [lang for lang in ev.langs if phase.get(lang) == decay_group]
    models = [m for m in ("pre-decay", "decay-cont", "decay-all", *MERGES) if ev.has(f"{PAPER}/{m}")]
    if not langs or not {"decay-cont", "decay-all"} <= set(models):
        return {"languages": langs, "models": models, "per_language": {}, "group": {}}
    cols = [ev.langs.index(lang) for lang in langs]

    def per_lang(model: str, metric: str, boot: bool) -> np.ndarray:  # (S, L) or (S, B, L)
        return np.stack(
            [ev.language_values(f"{PAPER}/{model}", s, boot)[metric][..., cols] for s in ev.seeds]
        )

    out: dict[str, Any] = {"languages": langs, "models": models, "per_language": {}, "group": {}}
    for metric in ("mlm_loss", "mlm_accuracy"):
        point = {m: per_lang(m, metric, False) for m in models}
        boot = {m: per_lang(m, metric, True) for m in models}
        for j, lang in enumerate(langs):
            entry = out["per_language"].setdefault(lang, {})
            entry[metric] = _retention_block(
                {m: point[m][:, j] for m in models}, {m: boot[m][:, :, j] for m in models}, metric
            )
        group_point = {
            m: np.array([float(ev.scores(f"{PAPER}/{m}", s, "phase")[decay_group][metric]) for s in ev.seeds])
            for m in models
        }
        group_boot = {
            m: np.stack([ev.scores(f"{PAPER}/{m}", s, "phase", True)[decay_group][metric] for s in ev.seeds])
            for m in models
        }
        out["group"][metric] = _retention_block(group_point, group_boot, metric)
    return out


def _retention_block(point: Mapping[str, np.ndarray], boot: Mapping[str, np.ndarray], metric: str) -> dict:
    """Each model's value (seeds (S,), resamples (S, B)) and its paired difference from decay-cont,
    decay-all's gain over decay-cont, and each merge's retention = (merge - cont) / (all - cont), as the
    ratio of seed means with a bootstrap interval."""
    values = {}
    for m, v in point.items():
        stats = seed_interval(v.tolist())
        ci = percentile_interval(np.mean(boot[m], axis=0), stats.mean)
        values[m] = {**stats.to_dict(), "bootstrap_ci": [ci.low, ci.high]}
    gain_seeds = point["decay-all"] - point["decay-cont"]
    gain = seed_interval(gain_seeds.tolist())
    gain_boot = np.mean(boot["decay-all"] - boot["decay-cont"], axis=0)
    gain_ci = percentile_interval(gain_boot, gain.mean)
    vs_cont = {}
    for m in point:
        if m != "decay-cont":
            paired = seed_interval((point[m] - point["decay-cont"]).tolist())
            ci = percentile_interval(np.mean(boot[m] - boot["decay-cont"], axis=0), paired.mean)
            vs_cont[m] = {**paired.to_dict(), "bootstrap_ci": [ci.low, ci.high]}
    block = {
        "values": values,
        "vs_cont": vs_cont,
        "gain": {**gain.to_dict(), "bootstrap_ci": [gain_ci.low, gain_ci.high]},
        "gain_resolved": gain.interval.excludes(0)
        and gain_ci.excludes(0)
        and _improvement(metric, gain.mean) > 0,
        "retention": {},
    }
    for m in MERGES:
        if m not in point:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            kept = np.mean(point[m] - point["decay-cont"]) / gain.mean if gain.mean else float("nan")
            samples = np.mean(boot[m] - boot["decay-cont"], axis=0) / gain_boot
        ci = percentile_interval(samples, float(kept))
        per_seed = [
            float(x) if np.isfinite(x) else None
            for x in (point[m] - point["decay-cont"]) / np.where(gain_seeds == 0, np.nan, gain_seeds)
        ]
        block["retention"][m] = {
            "mean": float(kept) if np.isfinite(kept) else None,
            "bootstrap_ci": [ci.low, ci.high],
            "per_seed": per_seed,
        }
    return block


def training_curves(layout: Layout, recipe: Recipe, arms: Sequence[str], seeds: int) -> dict[str, Any]:
    """Per arm, each seed's (tokens, loss) of the run that ends in the arm's reference model."""
    curves: dict[str, list[list[list[float]]]] = {}
    for arm in arms:
        for seed in range(seeds):
            run = layout.run_dir(arm, seed)
            records = read_metrics(RunLayout(run).metrics)
            if arm == PAPER:
                records += read_metrics(RunLayout(run).variant("all").metrics)
            pts = [[r["tokens"], r["loss"]] for r in records if r.get("loss") is not None]
            if pts:
                curves.setdefault(arm, []).append(pts)
    return curves


def analyze(layout: Layout, recipe: Recipe, settings: Settings, arms: Sequence[str]) -> dict[str, Any]:
    """Everything `ablations.md` states, from the evaluations on disk (no training)."""
    ev = Evaluations(layout, recipe, settings, arms)
    claims = claims_for(recipe)
    decay = recipe.phases[-1].name
    groups_of = {"phase": [*ev.phase_order, "all"], "resource": [*RESOURCE_GROUPS, "all"]}
    paper_models = ("pre-decay", *(f"decay-{v}" for v in VARIANTS), *MERGES, "best-single")
    candidates = [f"{PAPER}/{m}" for m in paper_models] + [a for a in arms if a != PAPER]
    models = [m for m in dict.fromkeys(candidates) if ev.has(m)]
    table = {
        m: {
            grouping: {
                g: {metric: ev.value(m, g, metric) for metric in METRICS}
                for g in groups
                if all(g in ev.scores(m, s, grouping) for s in ev.seeds)
            }
            for grouping, groups in groups_of.items()
        }
        for m in models
    }
    phase, _ = ev.groupings["phase"]
    resource, _ = ev.groupings["resource"]
    return {
        "settings": dataclasses.asdict(settings),
        "command": command_line(layout, settings, arms),
        "recipe": {
            "phases": [phase_summary(p) for p in recipe.phases],
            "model": recipe.model.to_dict(),
            "arms": {a: ARMS[a][0] for a in arms},
        },
        "evaluation": {
            "languages": len(ev.langs),
            "documents": len(next(iter(ev.docs.values()))),
            "phase_groups": {g: sum(1 for x in phase.values() if x == g) for g in ev.phase_order},
            "resource_groups": {g: sum(1 for x in resource.values() if x == g) for g in RESOURCE_GROUPS},
            "bootstrap_resamples": settings.n_boot,
        },
        "best_single": ev.best_single,
        "models": table,
        "claims": claim_results(ev, claims, settings.scale),
        "decay_experiment": decay_languages(ev, decay),
        "training": training_curves(layout, recipe, arms, settings.seeds),
        "decay_group": decay,
        "first_group": recipe.phases[0].name,
    }


def command_line(layout: Layout, settings: Settings, arms: Sequence[str]) -> str:
    """The command that reproduces this ablation."""
    parts = ["mmbert ablate", f"--out {layout.out}"]
    try:
        default_recipe = str(find_recipe(None))
    except ExperimentError:  # no recipes/tiny.yaml here: name the recipe
        default_recipe = None
    if settings.recipe != default_recipe:
        parts.append(f"--recipe {settings.recipe}")
    if settings.quick:
        parts.append("--quick")
    default = Settings.create(Path(settings.recipe), quick=settings.quick)
    if settings.seeds != default.seeds:
        parts.append(f"--seeds {settings.seeds}")
    if settings.scale != default.scale:
        parts.append(f"--scale {settings.scale:g}")
    if list(arms) != list(ARMS):
        parts.append("--arms " + " ".join(arms))
    return " ".join(parts)
