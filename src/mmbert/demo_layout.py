"""The demo's directory layout and fixed choices: what its steps write where, and what it shows.

`mmbert.demo` runs the steps into these paths and `mmbert.demo_report` reads them back to draw the
plots and write the report, so both take the layout from here (and neither imports the other's
internals). The paths every experiment directory has are `mmbert.experiment.ExperimentLayout`'s.

    OUT/demo_state.json   finished steps and the settings they ran with
    OUT/recipe.yaml       the recipe as trained (scaled, pointed at OUT/tokenizer and OUT/data)
    OUT/tokenizer/        OUT/data/ (prepared shards)   OUT/run/ (training; variants in run/variants/)
    OUT/merged/           the TIES merge                OUT/model/ (its export, loaded on its own)
    OUT/eval/<model>.json + .md   one evaluation per model   OUT/fill_mask.json
    OUT/plots/*.png       OUT/metrics.json   OUT/report.md
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmbert.experiment import ExperimentLayout, Under
from mmbert.recipe import Recipe
from mmbert.run_layout import RunLayout

STATE_FILE = "demo_state.json"
QUICK_SCALE = 0.03  # of recipes/tiny.yaml's tokens, with the tiny model: the smoke test
# Held-out sentences for fill-mask: UDHR article 5 in languages of every group (English and French
# pre-training, Swahili mid-training in the tiny recipe, Faroese and Tigrinya decay-only: the paper's
# examples).
FILL_MASK_LANGUAGES = (
    "eng_Latn",
    "fra_Latn",
    "deu_Latn",
    "spa_Latn",
    "rus_Cyrl",
    "swh_Latn",
    "fao_Latn",
    "tir_Ethi",
)
FILL_MASK_ARTICLE = 5


@dataclass(frozen=True)
class Layout(ExperimentLayout):
    """The paths of a demo directory `out` (its state, recipe, tokenizer, data and plots: `ExperimentLayout`)."""

    state = Under(STATE_FILE)
    run = Under("run")  # training; the decay variants in run/variants/
    merged = Under("merged")  # the TIES merge
    model = Under("model")  # its export, loaded on its own
    eval_dir = Under("eval")  # one evaluation per model (`eval_result`)
    fill_mask = Under("fill_mask.json")
    metrics = Under("metrics.json")
    report = Under("report.md")

    def pre_decay_export(self, recipe: Recipe) -> Path:
        """The export at the end of the phase before the decay (the variants' common start)."""
        return RunLayout(self.run).export(recipe.phases[-2].name)

    def variant_export(self, recipe: Recipe, variant: str) -> Path:
        return RunLayout(self.run).variant(variant).export(recipe.phases[-1].name)

    def model_dirs(self, recipe: Recipe) -> dict[str, Path]:
        """The evaluated models, by display name: pre-decay checkpoint, each decay variant, the merge."""
        out = {f"pre-decay ({recipe.phases[-2].name})": self.pre_decay_export(recipe)}
        for v in recipe.variant_names():
            out[f"decay-{v}"] = self.variant_export(recipe, v)
        out["merge (TIES)"] = self.merged
        return out

    def eval_result(self, name: str) -> Path:
        """The evaluation of model `name` (a key of `model_dirs`)."""
        return self.eval_dir / f"{eval_stem(name)}.json"


def eval_stem(name: str) -> str:
    """The file name (without suffix) of a model's evaluation in `Layout.eval_dir`."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-").replace("--", "-")
