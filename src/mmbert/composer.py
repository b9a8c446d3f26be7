"""ModernBERT's training checkpoints (Composer `.pt` files): read without running pickled code, to our model.

mmBERT's raw checkpoints (`jhu-clsp/mmBERT-checkpoints`: `extension/mmbert-base-ext.pt` is the end of
mid-training, `decay/mmbert-base-{eng,mid,all}.pt` are Decay-Eng / Decay-Cont / Decay-All) are what
Composer saves:

    {"state": {"model": {"model.bert.embeddings.tok_embeddings.weight": ..., "model.bert.encoder.layers.N.attn.Wqkv.weight": ...,
                         "model.head.dense.weight": ..., "model.decoder.bias": ...},
               "optimizers": {...}, "timestamp": ..., "rank_zero_seed": ..., ...},
     "rng": [{"python": ..., "numpy": ..., "torch": ...}, ...]}

- Reading: `mmbert.weights.load_pickled` rebuilds tensors, containers and NumPy RNG states and skips
  every other object (Composer's own classes) with a warning; nothing in the file is executed. Only
  `state.model` is used (a plain state dict of tensors is accepted too).
- Names: `mmbert.hf.convert_state_dict` maps ModernBERT's training names to transformers' (`_orig_mod.`,
  which `torch.compile` inserts, is dropped; so is a wrapper's `model.` around transformers' names, or
  DDP's `module.`). Entries that are not weights of `ModernBertForMaskedLM`
  (recomputed buffers such as RoPE's `inv_freq`, anything unknown) are skipped with a warning.
- Config: the shapes come from the tensors (vocabulary, hidden and intermediate sizes, layers, which
  biases exist, whether the decoder is tied); what tensors do not hold (attention heads, the global /
  local layer pattern and window, RoPE thetas, context length) comes from a preset: the one named, else
  the one whose shapes match.
- A checkpoint without the MLM head (an encoder alone) gets a freshly initialized head, with a warning.

`mmbert convert` writes the HF-format directory; `mmbert train --init-from CKPT.pt` and `mmbert merge`
read the file directly.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmbert.config import PRESETS, MmBertConfig
from mmbert.errors import MmbertError
from mmbert.hf import convert_state_dict
from mmbert.io import atomic_dir, check_output
from mmbert.model import MmBertForMaskedLM
from mmbert.tokenizer import adapt_tokenizer, read_tokenizer_files, write_tokenizer_files
from mmbert.weights import load_pickled

logger = logging.getLogger(__name__)

EMBEDDINGS = "model.embeddings.tok_embeddings.weight"
DECODER = "decoder.weight"
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
# Buffers some training code saves beside the weights; the model recomputes them.
_RECOMPUTED = ("inv_freq", "cos_cached", "sin_cached", "position_ids")
# Config fields the tensors decide that a preset also fixes (its vocabulary size is only a default).
SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers")


class CheckpointError(MmbertError, ValueError):
    """A checkpoint that is not a ModernBERT masked LM as this project reads it; the message names the file."""


@dataclass
class ComposerCheckpoint:
    """The model weights of a training checkpoint, under transformers' names, in their stored dtypes."""

    path: Path
    tensors: dict[str, torch.Tensor]
    skipped_objects: list[str] = field(default_factory=list)  # classes of pickled objects not rebuilt
    skipped_keys: list[str] = field(default_factory=list)  # model entries that are not its weights

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype most of the weights are stored in."""
        counts = Counter(t.dtype for t in self.tensors.values() if t.is_floating_point())
        return counts.most_common(1)[0][0] if counts else torch.float32


def is_checkpoint_file(path: str | Path) -> bool:
    """True for a file (a training checkpoint), False for an HF model directory."""
    return Path(path).is_file()


def _model_state(obj: Any, path: Path) -> dict[str, Any]:
    state = obj.get("state") if isinstance(obj, dict) else None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        return state["model"]
    if isinstance(obj, dict) and obj and any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj  # a plain state dict
    keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(
        f"{path}: no model weights (neither a Composer `state.model` nor a state dict; has {keys})"
    )


def read_composer_checkpoint(path: str | Path) -> ComposerCheckpoint:
    """The model tensors of a Composer (or plain state-dict) `.pt` file, renamed to transformers' names."""
    path = Path(path)
    obj, skipped = load_pickled(path)
    if skipped:
        counts = Counter(skipped)
        logger.warning(
            "%s: skipped %d pickled object(s) of classes this loader does not rebuild (never executed): %s",
            path, len(skipped), ", ".join(f"{name} x{n}" for name, n in sorted(counts.items())),
        )  # fmt: skip
    model = _model_state(obj, path)
    tensors: dict[str, torch.Tensor] = {}
    not_tensors = []  # e.g. the shards of a sharded (FSDP) state dict, which this loader does not rebuild
    for key, value in model.items():
        if isinstance(value, torch.Tensor):
            tensors[str(key).replace("_orig_mod.", "")] = value
        else:
            not_tensors.append(str(key))
    tensors = _to_hf_names(tensors)
    dropped = not_tensors + [k for k in tensors if k.rsplit(".", 1)[-1] in _RECOMPUTED]
    tensors = {k: v for k, v in tensors.items() if k not in dropped}
    if EMBEDDINGS not in tensors:
        why = f" ({len(not_tensors)} entries are not tensors, e.g. {not_tensors[0]})" if not_tensors else ""
        raise CheckpointError(
            f"{path}: not a ModernBERT checkpoint: no token embeddings (bert.embeddings.tok_embeddings.weight)"
            + why
        )
    return ComposerCheckpoint(path, tensors, sorted(set(skipped)), dropped)


def _to_hf_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' names, through the wrappers training code may add: Composer's `model.` around
    ModernBERT's training names or around transformers' own model, and DDP's `module.`."""
    converted = convert_state_dict(tensors)
    for _ in range(2):
        if EMBEDDINGS in converted:
            break
        roots = {k.split(".", 1)[0] for k in tensors}
        if len(roots) != 1 or not roots <= {"model", "module"}:
            break
        tensors = {k.split(".", 1)[1]: v for k, v in tensors.items()}
        converted = convert_state_dict(tensors)
    return converted


def _shapes(ckpt: ComposerCheckpoint) -> dict[str, Any]:
    """The config fields that the tensors decide."""
    t = ckpt.tensors
    vocab, hidden = t[EMBEDDINGS].shape
    layers = sorted({int(m.group(1)) for k in t if (m := _LAYER.match(k))})
    if not layers or layers != list(range(len(layers))):
        raise CheckpointError(f"{ckpt.path}: encoder layers {layers[:5]}... are not numbered 0..N-1")
    wi = t.get("model.layers.0.mlp.Wi.weight")
    if wi is None:
        raise CheckpointError(f"{ckpt.path}: no model.layers.0.mlp.Wi.weight (bert.encoder.layers.0.mlp.Wi)")
    fields: dict[str, Any] = {
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "intermediate_size": int(wi.shape[0]) // 2,  # Wi holds the GeGLU input and gate
        "num_hidden_layers": len(layers),
        "norm_bias": "model.final_norm.bias" in t,
        "attention_bias": "model.layers.0.attn.Wqkv.bias" in t,
        "mlp_bias": "model.layers.0.mlp.Wi.bias" in t,
    }
    if any(k.startswith(("head.", "decoder.")) for k in t):  # else the head is new: the preset decides
        fields["classifier_bias"] = "head.dense.bias" in t
        fields["decoder_bias"] = "decoder.bias" in t
    if DECODER in t:
        fields["tie_word_embeddings"] = bool(torch.equal(t[DECODER], t[EMBEDDINGS]))
    return fields


def _matching_preset(shapes: dict[str, Any]) -> str | None:
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers")
    return next((name for name, p in PRESETS.items() if all(p.get(k) == shapes[k] for k in keys)), None)


def infer_config(ckpt: ComposerCheckpoint, preset: str | None = None, **overrides: Any) -> MmBertConfig:
    """The model config of a checkpoint: shapes from its tensors, the rest from `preset` and `overrides`.

    Without `preset`, the preset whose hidden size, intermediate size and depth match. Where the preset
    or an override gives another shape than the tensors, the tensors win (with a warning); the number
    of attention heads then keeps the preset's head size.
    """
    shapes = _shapes(ckpt)
    name = preset or _matching_preset(shapes)
    if name is None:
        raise CheckpointError(
            f"{ckpt.path}: no preset has hidden size {shapes['hidden_size']}, intermediate size "
            f"{shapes['intermediate_size']} and {shapes['num_hidden_layers']} layers: convert it naming the preset "
            "for what the tensors do not hold (attention heads, window, RoPE thetas, context length), "
            f"`mmbert convert CKPT --preset NAME` (one of {', '.join(PRESETS)})"
        )
    if name not in PRESETS:
        raise CheckpointError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    given = {**PRESETS[name], **overrides}
    differ = [f"{k} {given[k]} -> {shapes[k]}" for k in SHAPE_FIELDS if k in given and given[k] != shapes[k]]
    if differ:
        logger.warning("%s: the tensors' shapes replace %s's: %s", ckpt.path, name, ", ".join(differ))
    fields = {**overrides, **shapes}
    if given["hidden_size"] != shapes["hidden_size"] and "num_attention_heads" not in overrides:
        head_dim = given["hidden_size"] // given["num_attention_heads"]
        fields["num_attention_heads"] = max(1, shapes["hidden_size"] // head_dim)
    try:
        return MmBertConfig.preset(name, **fields)
    except ValueError as e:
        raise CheckpointError(f"{ckpt.path}: {e}") from None


def _not_weights(ckpt: ComposerCheckpoint, model: MmBertForMaskedLM) -> list[str]:
    """The checkpoint's entries that are no weight of `model` (layer 0's attn_norm is checked on loading)."""
    own = set(model.state_dict()) | {DECODER, "model.layers.0.attn_norm.weight"}
    return sorted(k for k in ckpt.tensors if k not in own)


def build_model(ckpt: ComposerCheckpoint, config: MmBertConfig) -> MmBertForMaskedLM:
    """Our masked LM holding the checkpoint's weights (a head it lacks is freshly initialized)."""
    model = MmBertForMaskedLM(config)
    extra = _not_weights(ckpt, model)
    if extra:
        logger.warning(
            "%s: skipped %d entries that are not weights of ModernBertForMaskedLM: %s",
            ckpt.path, len(extra), ", ".join(extra[:8]) + (" ..." if len(extra) > 8 else ""),
        )  # fmt: skip
    tensors = {k: v for k, v in ckpt.tensors.items() if k not in extra}
    missing = model.load_hf_state_dict(tensors, source=str(ckpt.path))
    if missing:
        logger.warning("%s has no %s: initialized afresh", ckpt.path, ", ".join(missing))
    return model.eval()


def load_checkpoint_model(path: str | Path, preset: str | None = None, **overrides: Any) -> MmBertForMaskedLM:
    """`read_composer_checkpoint` + `infer_config` + `build_model`, in fp32."""
    ckpt = read_composer_checkpoint(path)
    return build_model(ckpt, infer_config(ckpt, preset, **overrides))


@dataclass
class ConvertReport:
    """What `convert_checkpoint` wrote."""

    out: Path
    config: MmBertConfig
    dtype: torch.dtype
    parameters: int
    new_keys: list[str]  # initialized afresh (no MLM head in the checkpoint)
    skipped_keys: list[str]
    skipped_objects: list[str]
    tokenizer: str | None


def convert_checkpoint(
    path: str | Path,
    out: str | Path,
    *,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    tokenizer: str | Path | None = None,
    overwrite: bool = False,
) -> ConvertReport:
    """`mmbert convert`: write a training checkpoint as an HF-format directory (`out`, whole or not at all).

    The weights keep the checkpoint's dtype (bf16 stays bf16). With `tokenizer`, its files are written
    beside the weights with mmBERT's layout (`mmbert.tokenizer.adapt_tokenizer`), so that the
    directory works in transformers' fill-mask pipeline and `mmbert fill-mask` as it is.
    """
    out = Path(out)
    # Replacing `out` must not delete an input (`--out` over the checkpoint's or the tokenizer's directory).
    check_output(out, [path, tokenizer], is_own=lambda _: True, overwrite=overwrite, replaced=True)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out} already exists; pass --overwrite to replace it")
    ckpt = read_composer_checkpoint(path)
    config = infer_config(ckpt, preset, **(overrides or {}))
    model = build_model(ckpt, config)
    new_keys = sorted(set(model.state_dict()) - set(ckpt.tensors) - {DECODER})
    adapted = None
    if tokenizer is not None:
        adapted = adapt_tokenizer(read_tokenizer_files(tokenizer), config.max_position_embeddings)
        if len(adapted) > config.vocab_size:
            raise CheckpointError(
                f"tokenizer {tokenizer} has {len(adapted)} ids, the checkpoint's vocabulary {config.vocab_size}"
            )
    model.to(ckpt.dtype)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        if adapted is not None:
            write_tokenizer_files(adapted, tmp)
    return ConvertReport(
        out=out,
        config=config,
        dtype=ckpt.dtype,
        parameters=sum(p.numel() for p in model.parameters()),
        new_keys=new_keys,
        skipped_keys=ckpt.skipped_keys + _not_weights(ckpt, model),
        skipped_objects=ckpt.skipped_objects,
        tokenizer=None if tokenizer is None else str(tokenizer),
    )
