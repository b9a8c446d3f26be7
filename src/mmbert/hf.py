"""Hugging Face checkpoint format: load and save ModernBERT directories, and read FlexBERT/Composer names.

A model directory is transformers' format: `config.json` (see `MmBertConfig.to_hf_dict`) plus weights in
`model.safetensors` (or sharded with `model.safetensors.index.json`) or `pytorch_model.bin` (read with
`weights_only=True`, never plain pickle), found, read and written by `mmbert.weights`. Our parameter
names are transformers' names, so loading is a check of keys and shapes, not a rename table; the only
renames are for ModernBERT's training code (`bert.encoder.layers.N.*`, as in the released Composer
`.pt` checkpoints, which `mmbert.composer` reads) and for headless checkpoints.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mmbert.config import MmBertConfig
from mmbert.errors import MmbertError
from mmbert.io import update_dir
from mmbert.weights import (
    SAFETENSORS,
    find_weights,
    is_model_file,
    load_bin,
    load_safetensors,
    write_safetensors,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- reading
def read_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF model directory, whatever the file layout."""
    out: dict[str, torch.Tensor] = {}
    for path in find_weights(directory).files:
        out.update(_read_file(path))
    return out


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    return extract_state_dict(load_bin(path), str(path))


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model state dict inside a plain state dict or a Composer checkpoint (`state.model`)."""
    if (
        isinstance(obj, dict)
        and "state" in obj
        and isinstance(obj["state"], dict)
        and "model" in obj["state"]
    ):
        obj = obj["state"]["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{source}: not a state dict of tensors")
    return dict(obj)


# ---------------------------------------------------------------------------------------------- names
_FLEX_RULES = [
    (re.compile(r"^(model\.)?bert\.encoder\.layers\."), "model.layers."),
    (re.compile(r"^(model\.)?bert\.embeddings\."), "model.embeddings."),
    (re.compile(r"^(model\.)?bert\.final_norm\."), "model.final_norm."),
    (re.compile(r"^model\.(head|decoder)\."), r"\1."),  # Composer wraps the whole MLM model in `model.`
]


def convert_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map FlexBERT/Composer names and headless (`ModernBertModel`) names to `ModernBertForMaskedLM` names."""
    keys = list(sd)
    if any(k.startswith(("bert.", "model.bert.")) for k in keys):
        out = {}
        for k, v in sd.items():
            for pattern, repl in _FLEX_RULES:
                if pattern.match(k):
                    k = pattern.sub(repl, k, count=1)
                    break
            out[k] = v
        return out
    if (
        keys
        and not any(k.startswith("model.") for k in keys)
        and any(k.startswith("embeddings.") for k in keys)
    ):
        # Saved from a headless ModernBertModel: its keys have no `model.` prefix.
        return {
            (f"model.{k}" if k.split(".")[0] in ("embeddings", "layers", "final_norm") else k): v
            for k, v in sd.items()
        }
    return dict(sd)


# ---------------------------------------------------------------------------------------------- checks
class ModelFilesError(MmbertError, ValueError):
    """A model directory whose files do not fit together, or weights that are not numbers."""


def check_finite(sd: dict[str, torch.Tensor], source: str) -> None:
    """Every floating-point weight is a finite number: a model with NaN or Inf weights (a diverged run,
    a corrupt file) would otherwise print nan probabilities and nan embeddings without a word.

    The one check: in `load_hf_state_dict`, which every loader of a model goes through (an HF
    directory, a training checkpoint in `convert`, `train --init-from`), and on each chunk `merge`
    streams from its inputs (counts are then the chunk's)."""
    for key, tensor in sd.items():
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
            continue
        nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
        raise ModelFilesError(
            f"{source}: {key} has {nan} NaN and {inf} infinite values: the weights are broken (a diverged "
            "run, or a damaged file); use an earlier checkpoint"
        )


# Spare embedding rows beyond the tokenizer's ids that a model may have: vocabularies padded to a
# multiple of 64 for faster matmuls (ModernBERT: 50368 rows for 50280 ids).
PADDED_ROWS = 128


def check_tokenizer_fits(
    config: MmBertConfig | Mapping[str, Any],
    n_ids: int,
    special_ids: Mapping[str, int | None],
    model_dir: str | Path,
    tokenizer_dir: str | Path,
) -> None:
    """The tokenizer in `tokenizer_dir` belongs to the model in `model_dir`: as many ids as the
    embedding has rows (up to `PADDED_ROWS` spare), and the special ids that config.json names.
    `config` is the model's config, or its config.json as read (a field it lacks is not checked).

    Another tokenizer (one `tokenizer adapt --overwrite` put in the folder) would crash on an id past
    the embedding, or run on the wrong ids without a word. The model's own files agree with each other
    (loading checks every shape against config.json), so the error blames the tokenizer's.
    """

    def field(name: str) -> Any:
        return config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)

    where = f"{tokenizer_dir} (the tokenizer)"
    rows = field("vocab_size")
    if isinstance(rows, int) and (n_ids > rows or rows - n_ids >= PADDED_ROWS):
        raise ModelFilesError(
            f"{where} has {n_ids} ids, but the model in {model_dir} has {rows} (config.json's vocab_size, "
            "the embedding's rows): the tokenizer files are not this model's"
        )
    for role, found in special_ids.items():
        expected = field(f"{role}_token_id")
        if found is not None and isinstance(expected, int) and found != expected:
            raise ModelFilesError(
                f"{where}: its {role} token has id {found}, but {Path(model_dir) / 'config.json'} says "
                f"{role}_token_id {expected}: the tokenizer files are not this model's"
            )


def check_loaded_tokenizer(
    config: MmBertConfig | Mapping[str, Any], tokenizer: Any, model_dir: str | Path, tokenizer_dir: str | Path
) -> None:
    """`check_tokenizer_fits` for a loaded transformers tokenizer."""
    special = {role: getattr(tokenizer, f"{role}_token_id", None) for role in ("pad", "mask")}
    check_tokenizer_fits(config, len(tokenizer), special, model_dir, tokenizer_dir)


# ---------------------------------------------------------------------------------------------- mixin
class HFCheckpointMixin:
    """`from_pretrained` / `save_pretrained` / `load_hf_state_dict` for the mmbert model classes."""

    hf_architecture = "ModernBertModel"
    # Our state-dict key + this prefix = the key in a (converted) ModernBertForMaskedLM checkpoint.
    hf_prefix = ""

    def _tie(self) -> None:
        if getattr(self, "decoder", None) is not None and self.config.tie_word_embeddings:
            self.decoder.weight = self.model.embeddings.tok_embeddings.weight

    def load_hf_state_dict(self, sd: dict[str, torch.Tensor], source: str = "state dict") -> list[str]:
        """Load HF-named tensors (any ModernBERT head); returns the keys left at their initial values.

        Unknown keys, shape mismatches and missing encoder weights raise errors naming the key.
        """
        sd = convert_state_dict(sd)
        check_finite(sd, source)
        if "model.layers.0.attn_norm.weight" in sd:
            w = sd.pop("model.layers.0.attn_norm.weight")
            if not torch.all(w == 1):
                raise ValueError(f"{source}: layer 0 has a trained attn_norm; ModernBERT's layer 0 has none")
        own = self.state_dict()
        expected = {self.hf_prefix + k: k for k in own}  # HF key -> our key
        tied = getattr(self, "decoder", None) is not None and self.config.tie_word_embeddings
        if tied:
            expected.pop("decoder.weight", None)
            sd.pop("decoder.weight", None)  # a copy of the embeddings when tied, as transformers treats it
        # Heads this architecture does not have (an MLM checkpoint loaded into an encoder) are dropped.
        own_roots = {k.split(".")[0] for k in expected}
        unknown = [k for k in sd if k not in expected and k.split(".")[0] in own_roots]
        if unknown:
            raise ValueError(f"{source}: unexpected keys {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
        missing = [k for k in expected if k not in sd]
        missing_encoder = [k for k in missing if k.startswith("model.")]
        if missing_encoder:
            raise ValueError(
                f"{source}: missing keys {missing_encoder[:8]}{' ...' if len(missing_encoder) > 8 else ''}"
            )
        for hf_key, our_key in expected.items():
            if hf_key not in sd:
                continue
            t = sd[hf_key]
            if t.shape != own[our_key].shape:
                raise ValueError(
                    f"{source}: {hf_key} has shape {tuple(t.shape)} in the weights, but the config (config.json) "
                    f"gives {tuple(own[our_key].shape)}: the two files are not of one model"
                )
        with torch.no_grad():
            params = dict(self.named_parameters(remove_duplicate=False))
            for hf_key, our_key in expected.items():
                if hf_key in sd:
                    params[our_key].copy_(sd[hf_key].to(params[our_key].dtype))
        self._tie()
        if missing:
            logger.info("%s: newly initialized: %s", source, ", ".join(missing))
        return missing

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        **overrides: Any,
    ):
        """Load an HF ModernBERT directory (ours, transformers', or the released mmBERT)."""
        directory = Path(directory)
        config = MmBertConfig.load(directory, **overrides)
        sd = read_weights(directory)
        with torch.device("meta"):
            model = cls(config)
        model.to_empty(device=device)
        model._tie()
        missing = model.load_hf_state_dict(sd, source=str(directory))
        if missing:
            # Fresh heads (e.g. a classifier on top of an MLM checkpoint) need real initial values.
            model.init_weights()
            model.load_hf_state_dict(sd, source=str(directory))
        if dtype is not None:
            model.to(dtype)
        return model.eval()

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `config.json` + `model.safetensors`; transformers loads the directory.

        The directory changes in one step (`mmbert.io.update_dir`): the model files of an earlier save
        (any weight layout) are replaced, other files (a tokenizer saved beside the model) stay.
        """
        directory = Path(directory)
        sd = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if getattr(self, "decoder", None) is not None and self.config.tie_word_embeddings:
            sd.pop(
                "decoder.weight"
            )  # tied to model.embeddings.tok_embeddings.weight; transformers re-ties it
        with update_dir(directory, keep=lambda name: not is_model_file(name)) as tmp:
            with open(tmp / SAFETENSORS, "wb") as f:
                write_safetensors(f, sd, metadata={"format": "pt"})
            self.config.save(tmp, architecture=self.hf_architecture)
        return directory
