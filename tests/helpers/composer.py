"""ModernBERT training checkpoints (Composer `.pt`) written in the test."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch


# The released raw mmBERT checkpoints are Composer `.pt` files in ModernBERT's training names, holding
# optimizer state, Composer's own objects and each rank's Python / NumPy / torch RNG states.
def composer_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' ModernBertForMaskedLM names -> ModernBERT's training names inside Composer's `model.`."""
    renames = (("model.layers.", "bert.encoder.layers."), ("model.embeddings.", "bert.embeddings."),
               ("model.final_norm.", "bert.final_norm."))  # fmt: skip
    out = {}
    for key, value in state_dict.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out["model." + key] = value
    return out


class ComposerTimestamp:
    """Stands for Composer's own classes (its `Timestamp`): the loader must skip it, never import it."""

    def __init__(self, batch: int) -> None:
        self.batch = batch


class RunsCode:
    """Pickles as a call of `open(marker, "w")`: a loader that ran pickled code would create `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def write_composer_checkpoint(
    path: Path, state_dict: dict[str, torch.Tensor], marker: Path | None = None, seed: int = 0
) -> Path:
    """A Composer checkpoint of the model `state_dict` (transformers' names) as ModernBERT's training
    writes it: `state.model` in training names, optimizer state, schedulers, Composer objects, seeds, and
    one rank's RNG states (Python, NumPy, torch); with `marker`, also an object whose unpickling would
    create that file."""
    random.seed(seed)
    np.random.seed(seed)
    model = composer_names(state_dict)
    names = [k for k in model if not k.endswith("decoder.weight")]
    optimizer = {
        "state": {k: {"exp_avg": torch.zeros_like(model[k]), "exp_avg_sq": torch.zeros_like(model[k]),
                      "step": torch.tensor(100.0)} for k in names[:3]},
        "param_groups": [{"lr": 8e-4, "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 8e-5, "params": names}],
    }  # fmt: skip
    state = {
        "model": model,
        "optimizers": {"StableAdamW": optimizer},
        "schedulers": [{"base_lrs": [8e-4], "last_epoch": 100}],
        "timestamp": ComposerTimestamp(batch=100),
        "rank_zero_seed": 17,
        "run_name": "mmbert-tiny-ext",
        "algorithms": [],
        "callbacks": {"SpeedMonitor": {"total_eval_wct": 0.0}}
        if marker is None
        else {"Evil": RunsCode(marker)},
        "integrations": {},
        "metadata": {"composer_env_info": {"composer_version": "0.24.1"}},
    }
    rng = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    torch.save({"state": state, "rng": [rng]}, path)
    return path
