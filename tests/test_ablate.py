"""ablate (`--quick`): every arm x seed trains and is evaluated, each claim is stated, reruns skip; the
claim verdicts and the retention arithmetic on made-up numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmbert import cli
from mmbert.ablate import (
    ARMS,
    MERGES,
    PAPER,
    Claim,
    Layout,
    _retention_block,
    resource_groups,
    verdict,
)
from mmbert.stats import seed_interval

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_ablation(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablate") / "ab"
    assert cli.main(["ablate", "--out", str(out), "--quick", "--recipe", str(RECIPE), "--no-progress"]) == 0
    return out


def test_quick_ablation_trains_every_arm_and_seed_and_states_every_claim(quick_ablation):
    layout = Layout(quick_ablation)
    results = json.loads(layout.results.read_text())
    seeds = results["settings"]["seeds"]
    assert seeds >= 3
    for arm in ARMS:
        for seed in range(seeds):
            assert (layout.run_dir(arm, seed) / "eval").is_dir(), (arm, seed)
    for seed in range(seeds):
        for method in MERGES:
            record = json.loads((layout.merge_dir(seed, method) / "merge_config.json").read_text())
            assert record["method"] == method
    claims = {c["id"]: c for c in results["claims"]}
    assert set(claims) == {"a", "b1", "b2", "b3", "b4", "c1", "c2", "c3", "d1", "d2", "d3", "d4"}
    for c in claims.values():
        claim = Claim(**{k: c[k] for k in ("id", "section", "statement", "a", "b", "group", "direction")})
        for metric, m in c["metrics"].items():
            # the paired difference is a - b seed by seed, its interval the t interval of those values
            a, b, difference = m["a"]["values"], m["b"]["values"], m["difference"]
            assert len(difference["values"]) == seeds
            assert difference["values"] == pytest.approx([x - y for x, y in zip(a, b, strict=True)])
            stats = seed_interval(difference["values"])
            assert difference["ci"] == pytest.approx([stats.interval.low, stats.interval.high])
            # the verdict is the rule applied to the recorded intervals
            assert m["verdict"] == verdict(claim, metric, stats, difference["bootstrap_ci"])
    # the decay experiment covers the paper's two example languages
    exp = results["decay_experiment"]
    assert {"fao_Latn", "tir_Ethi"} <= set(exp["per_language"])
    assert set(exp["group"]["mlm_loss"]["retention"]) == set(MERGES)
    report = layout.report.read_text()
    for text in (
        "## Claims",
        "## The decay experiment",
        "**a.**",
        "**d4.**",
        "mmbert ablate --out",
        "--quick",
    ):
        assert text in report
    for name in ("claims", "arms_by_group", "decay_models_by_group", "decay_experiment", "training_loss"):
        assert (layout.plots / f"{name}.png").read_bytes()[:8] == PNG_MAGIC, name


def test_each_arm_changes_its_one_choice_and_shares_the_rest(quick_ablation):
    layout = Layout(quick_ablation)

    def recipe(arm, seed=0):
        return yaml.safe_load((layout.run_dir(arm, seed) / "recipe.yaml").read_text())

    paper = yaml.safe_load((layout.run_dir(PAPER, 0) / "variants" / "all" / "recipe.yaml").read_text())
    assert [p["mask_rate"] for p in paper["phases"]] == [0.3, 0.15, 0.05]
    assert [p["mask_rate"] for p in recipe("mask-15")["phases"]] == [0.15] * 3
    assert [p["tau"] for p in recipe("tau-0.7")["phases"]] == [0.7] * 3
    assert [p["languages"] for p in recipe("langs-all")["phases"]] == ["all"] * 3
    assert recipe("mask-15", 1)["seed"] == 1 and recipe("mask-15", 2)["seed"] == 2
    for arm in ARMS:
        if arm != PAPER:
            assert [p["tokens"] for p in recipe(arm)["phases"]] == [p["tokens"] for p in paper["phases"]]

    def pretrain_losses(arm, seed):
        lines = (layout.run_dir(arm, seed) / "metrics.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, lines) if r["phase"] == "pretrain"]

    # Paired: the paper arm's pre-training is tau-0.7's (same tau, mask, seed): the same steps exactly;
    # another seed is another run.
    assert pretrain_losses(PAPER, 0) == pretrain_losses("tau-0.7", 0)
    assert pretrain_losses(PAPER, 0) != pretrain_losses(PAPER, 1)


def test_rerun_skips_the_work_and_other_settings_are_refused(quick_ablation, capsys):
    before = json.loads(Layout(quick_ablation).results.read_text())
    capsys.readouterr()
    argv = ["ablate", "--out", str(quick_ablation), "--quick", "--recipe", str(RECIPE), "--no-progress"]
    layout = Layout(quick_ablation)
    work = sorted(layout.out.glob("runs/*/seed-*/eval/*.json")) + sorted(
        layout.out.glob("runs/*/seed-*/metrics.jsonl")
    )
    stamps = {path: path.stat().st_mtime_ns for path in work}
    assert cli.main(argv) == 0
    assert "seed 0: done in" not in capsys.readouterr().err  # nothing trained or evaluated again
    assert (
        work and {path: path.stat().st_mtime_ns for path in work} == stamps
    )  # no evaluation or run rewritten
    after = json.loads(layout.results.read_text())
    assert after["claims"] == before["claims"]
    assert cli.main([*argv, "--seeds", "4"]) == 2
    assert "started with other settings (seeds" in capsys.readouterr().err


def test_verdict_needs_both_intervals_and_reads_the_direction():
    claim = Claim("x", "s", "a beats b", "a", "b", "all")
    lower = seed_interval([-0.3, -0.2, -0.25])  # a's loss lower on every seed
    assert verdict(claim, "mlm_loss", lower, [-0.3, -0.2]) == "paper's direction"
    assert verdict(claim, "mlm_accuracy", lower, [-0.3, -0.2]) == "against the paper"
    assert verdict(claim, "mlm_loss", lower, [-0.3, 0.01]) == "not resolved"  # the bootstrap covers 0
    assert verdict(claim, "mlm_loss", seed_interval([-0.3, 0.2, -0.25]), [-0.3, -0.2]) == "not resolved"
    neutral = Claim("y", "s", "a against b", "a", "b", "all", direction=0)
    assert verdict(neutral, "mlm_loss", lower, [-0.3, -0.2]) == "a better"


def test_retention_is_the_share_of_decay_alls_gain_a_merge_keeps():
    # three seeds, 10 bootstrap resamples; losses: cont 5.0, all 4.0 (gain 1), ties 4.25 (keeps 75%)
    point = {"decay-cont": np.array([5.0, 5.1, 4.9]), "decay-all": np.array([4.0, 4.1, 3.9])}
    point["ties"] = point["decay-all"] + 0.25
    boot = {m: np.repeat(v[:, None], 10, axis=1) for m, v in point.items()}
    block = _retention_block(point, boot, "mlm_loss")
    assert block["gain"]["mean"] == pytest.approx(-1.0)
    assert block["gain_resolved"]
    assert block["retention"]["ties"]["mean"] == pytest.approx(0.75)
    assert block["retention"]["ties"]["per_seed"] == pytest.approx([0.75] * 3)
    assert block["vs_cont"]["ties"]["mean"] == pytest.approx(-0.75)
    # a "gain" in the wrong direction (loss up) is not a resolved gain
    worse = {"decay-cont": point["decay-all"], "decay-all": point["decay-cont"], "ties": point["ties"]}
    assert not _retention_block(worse, boot | {"decay-cont": boot["decay-all"], "decay-all": boot["decay-cont"]},
                                "mlm_loss")["gain_resolved"]  # fmt: skip


def test_resource_groups_are_thirds_by_training_tokens(quick_ablation):
    layout = Layout(quick_ablation)
    langs = ["eng_Latn", "fra_Latn", "deu_Latn", "tir_Ethi", "fao_Latn", "swh_Latn"]
    groups = resource_groups(layout.data, langs)
    assert sorted(groups.values()) == sorted(["high-resource", "mid-resource", "low-resource"] * 2)
    manifest = json.loads((layout.data / "manifest.json").read_text())
    udhr = manifest["sources"]["udhr"]
    high = [lang for lang in langs if groups[lang] == "high-resource"]
    low = [lang for lang in langs if groups[lang] == "low-resource"]
    assert min(udhr[lang]["tokens"] for lang in high) >= max(udhr[lang]["tokens"] for lang in low)
