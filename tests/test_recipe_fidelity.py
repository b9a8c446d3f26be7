"""The mmBERT recipes against the paper and the authors' released Composer configs (JHU-CLSP/mmBERT
`configs/`), value by value: what the README's recipe table says, checked on the files themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmbert.recipe import load_recipe
from mmbert.schedule import Schedule

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("name", ["mmbert-small", "mmbert-base"])
def test_paper_recipes_decay_to_the_released_final_lr(name: str) -> None:
    # Both models end at 1.6e-5: small 0.04 x 4e-4 (linear), base 0.02 x 8e-4 (1 - sqrt).
    schedule = Schedule(load_recipe(RECIPES / f"{name}.yaml"))
    assert schedule.lr(schedule.total_tokens, len(schedule.phases) - 1) == pytest.approx(1.6e-5)


# The released configs' training values (JHU-CLSP/mmBERT configs/ at 108ffb3), transcribed per file:
# (phase, lr, weight_decay, mlm_probability, max_seq_len, rotary base, t_warmup, scheduler, alpha_f).
RELEASED = {
    "small": [
        ("pretrain", 8e-4, 8e-5, 0.30, 1024, 10_000, 4e9, "constant", None),
        ("mid", 4e-4, 4e-5, 0.15, 8192, 160_000, 0, "constant", None),
        ("decay", 4e-4, 4e-5, 0.05, 8192, 160_000, 0, "linear", 0.04),
    ],
    "base": [
        ("pretrain", 8e-4, 8e-5, 0.25, 1024, 10_000, 3e9, "constant", None),
        ("mid", 8e-4, 8e-5, 0.15, 8192, 160_000, 0, "constant", None),
        ("decay", 8e-4, 8e-5, 0.05, 8192, 160_000, 0, "one_minus_sqrt", 0.02),
    ],
}
BATCH_WARMUP = {"small": 100e9, "base": 60e9}  # batch_size_warmup_tokens, from 48 per device


@pytest.mark.parametrize("size", ["small", "base"])
def test_released_recipes_follow_the_released_configs(size: str) -> None:
    recipe = load_recipe(RECIPES / f"mmbert-{size}-released.yaml")
    schedule = Schedule(recipe)
    assert recipe.seed == 21
    assert recipe.model.build_config().attention_output_dropout == 0.1  # attn_out_dropout_prob
    assert recipe.model.build_config().attention_dropout == 0.0  # attention_probs_dropout_prob
    train = recipe.train
    assert (train.optimizer, train.betas, train.eps) == ("stable_adamw", (0.9, 0.95), 1e-8)
    assert train.batch_warmup_mode == "equal_steps" and train.batch_warmup_tokens == BATCH_WARMUP[size]
    assert train.batch_warmup_start_tokens == 48 * 8 * 1024  # 48 per device on 8 GPUs
    assert train.checkpoint_every_tokens == 10e9
    for i, (name, lr, wd, mask, seq_len, theta, warmup, decay, alpha) in enumerate(RELEASED[size]):
        phase = recipe.phases[i]
        assert (phase.name, phase.lr, phase.weight_decay, phase.mask_rate) == (name, lr, wd, mask)
        assert (phase.seq_len, phase.global_rope_theta, phase.local_rope_theta) == (seq_len, theta, theta)
        assert (phase.warmup_tokens, phase.decay) == (warmup, decay)
        assert schedule.full_batch_tokens(i) == 4608 * seq_len  # global_train_batch_size 4608
        if alpha is not None:
            assert phase.decay_tokens is None and phase.final_lr_fraction == alpha  # t_decay: the phase
    assert [p.tokens for p in recipe.phases] == [2.3e12, 600e9, 100e9]
    assert schedule.lr(schedule.total_tokens, 2) == pytest.approx(1.6e-5)


# Every key on which the paper recipe differs from the released one (the README's table says why).
PAPER_VS_RELEASED = {
    "small": ["name", "seed", "train.keep_last", "train.log_every_steps"],
    "base": ["name", "phases.0.mask_rate", "seed", "train.keep_last", "train.log_every_steps"],
}


@pytest.mark.parametrize("size", ["small", "base"])
def test_paper_and_released_recipes_differ_only_where_the_readme_says(size: str) -> None:
    paper = load_recipe(RECIPES / f"mmbert-{size}.yaml")
    released = load_recipe(RECIPES / f"mmbert-{size}-released.yaml")
    assert paper.diff(released) == PAPER_VS_RELEASED[size]
    readme = (RECIPES.parent / "README.md").read_text()
    assert f"recipes/mmbert-{size}-released.yaml" in readme


@pytest.mark.parametrize("size", ["small", "base"])
def test_plan_released_recipes_with_released_counts(size: str, capsys: pytest.CaptureFixture[str]) -> None:
    from mmbert import cli

    recipe = str(RECIPES / f"mmbert-{size}-released.yaml")
    assert cli.main(["plan", recipe, "--released-counts", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert f"plan for recipe 'mmbert-{size}-released' (released counts)" in out
    assert "batch-size warmup (equal_steps): from 393.2K tokens over the first" in out
    # 4608 sequences of 8192 in the 8192-token phases: ceil(600e9 / 37,748,736), ceil(100e9 / ...).
    assert "15,895 steps of 4,608 x 8192 tokens (37.7M), LR peak" in out
    assert "2,650 steps of 4,608 x 8192 tokens (37.7M), LR peak" in out and "at the end 1.60e-05" in out
    assert "vs released decay-all (planned / released):" in out


def test_a_run_takes_the_schedules_batches_and_the_output_dropout(train_inputs, tmp_path: Path) -> None:
    """The trainer runs what the schedule says: per-phase batches, ModernBERT's equal-steps warmup
    (64, 128, 192 tokens before the full 256), and the model gets the recipe's output dropout."""
    from mmbert import distributed, train
    from tests.helpers.training import read_metrics

    overrides = [
        "train.batch_tokens=256", "train.batch_warmup_mode=equal_steps",
        "train.batch_warmup_start_tokens=64", "train.batch_warmup_tokens=400",
        "phases.1.batch_tokens=128", "phases.2.batch_tokens=192", "model.attention_output_dropout=0.1",
    ]  # fmt: skip
    recipe = load_recipe(train_inputs[0], overrides)
    trainer = train.Trainer(
        recipe,
        tmp_path,
        distributed.init_distributed("cpu"),
        train.TrainOptions(progress=False, tensorboard=False),
    )
    assert {layer.attn.out_drop.p for layer in trainer.model.model.layers} == {0.1}
    assert trainer.run() == 0
    schedule, records = Schedule(recipe), read_metrics(tmp_path)
    for r in records:  # a phase's last step is cut at its end, up to whole rows
        at = schedule.at(r["tokens"] - r["batch_tokens"])
        assert (r["phase"], r["batch_tokens"]) == (
            at.phase.name,
            -(-at.step_tokens // at.seq_len) * at.seq_len,
        )
    assert records[-1]["tokens"] >= schedule.total_tokens
    logged = [(r["phase"], r["batch_tokens"]) for r in records]
    # K = 4 sizes: 64 while t < 400 x 2 / 12 = 66.7 tokens (two steps), 128 while t < 200, 192 while t < 400.
    assert [b for _, b in logged[:5]] == [64, 64, 128, 192, 256]
    assert ("mid", 128) in logged and ("decay", 192) in logged
