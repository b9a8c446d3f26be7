"""Model configuration: one typed dataclass, named presets, and the mapping to HF `config.json`.

`MmBertConfig` is the schema of the encoder. Its field names follow transformers' `ModernBertConfig`
so that a `config.json` written by transformers (older form with `global_rope_theta`, newer form with
`layer_types` / `rope_parameters`) maps onto it field by field, and ours loads in transformers.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmbert.io import atomic_write_text
from mmbert.tokens import BOS_ID, EOS_ID, MASK_ID, PAD_ID

# Backends of `mmbert.attention`; "auto" picks the fastest that works on the device at build time.
ATTN_BACKENDS = ("auto", "reference", "sdpa", "flex", "flash")
# `compile`: torch.compile the layers' regions around attention ("auto": where it pays, see model.compiles).
COMPILE_MODES = ("auto", "on", "off")
ACTIVATIONS = ("gelu", "gelu_pytorch_tanh", "gelu_new", "silu", "relu")
LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass
class MmBertConfig:
    vocab_size: int = 256_000
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    max_position_embeddings: int = 8192
    # Layer i is global when i % global_attn_every_n_layers == 0; the others use a sliding window.
    global_attn_every_n_layers: int = 3
    # Total window: a token sees keys with |i - j| <= local_attention // 2 (FlashAttention window (64, 64)).
    local_attention: int = 128
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 160_000.0
    hidden_activation: str = "gelu"
    classifier_activation: str = "gelu"
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    classifier_bias: bool = False
    decoder_bias: bool = True
    tie_word_embeddings: bool = True
    embedding_dropout: float = 0.0
    # transformers' meaning: dropout on the attention weights and, with the same p, after `Wo`.
    attention_dropout: float = 0.0
    # Dropout after the attention output projection `Wo` only (FlexBERT's `attn_out_dropout_prob`, 0.1
    # in mmBERT's pre-training, with 0 on the attention weights); None: `attention_dropout` there, as
    # in transformers. Applied outside the attention kernel, so every backend runs it. transformers
    # has no such field: `config.json` carries it under this name (transformers keeps and ignores it).
    attention_output_dropout: float | None = None
    mlp_dropout: float = 0.0
    classifier_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0
    # mmBERT / Gemma 2 token layout.
    pad_token_id: int = PAD_ID
    eos_token_id: int = EOS_ID
    bos_token_id: int = BOS_ID
    cls_token_id: int = BOS_ID
    sep_token_id: int = EOS_ID
    mask_token_id: int = MASK_ID
    # Sequence classification.
    classifier_pooling: str = "mean"
    num_labels: int = 2
    problem_type: str | None = None
    id2label: dict[int, str] | None = None
    # Runtime choices, not part of the checkpoint format.
    attn_backend: str = "auto"
    compile: str = "auto"
    # Explicit per-layer types (as in newer HF configs); derived from global_attn_every_n_layers when None.
    layer_types: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ValueError(f"MmBertConfig.{key}: {msg}")

        for key in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
        ):
            need(int(getattr(self, key)) > 0, key, f"must be a positive integer, got {getattr(self, key)!r}")
        need(
            self.hidden_size % self.num_attention_heads == 0,
            "hidden_size",
            f"{self.hidden_size} is not a multiple of num_attention_heads={self.num_attention_heads}",
        )
        need(self.head_dim % 2 == 0, "num_attention_heads", f"head_dim {self.head_dim} must be even for RoPE")
        need(self.local_attention >= 2, "local_attention", f"must be >= 2, got {self.local_attention}")
        need(self.global_attn_every_n_layers >= 1, "global_attn_every_n_layers", "must be >= 1")
        need(
            self.attn_backend in ATTN_BACKENDS,
            "attn_backend",
            f"{self.attn_backend!r} not in {ATTN_BACKENDS}",
        )
        need(self.compile in COMPILE_MODES, "compile", f"{self.compile!r} not in {COMPILE_MODES}")
        need(self.classifier_pooling in ("mean", "cls"), "classifier_pooling", "must be 'mean' or 'cls'")
        for key in ("hidden_activation", "classifier_activation"):
            need(getattr(self, key) in ACTIVATIONS, key, f"{getattr(self, key)!r} not in {ACTIVATIONS}")
        for key in ("global_rope_theta", "local_rope_theta"):
            need(float(getattr(self, key)) > 0, key, "must be positive")
        for key in ("embedding_dropout", "attention_dropout", "attention_output_dropout", "mlp_dropout"):
            p = getattr(self, key)
            need(p is None or 0.0 <= float(p) < 1.0, key, f"must be in [0, 1), got {p!r}")
        if self.layer_types is None:
            self.layer_types = [
                "full_attention" if i % self.global_attn_every_n_layers == 0 else "sliding_attention"
                for i in range(self.num_hidden_layers)
            ]
        self.layer_types = list(self.layer_types)
        need(
            len(self.layer_types) == self.num_hidden_layers,
            "layer_types",
            f"has {len(self.layer_types)} entries for {self.num_hidden_layers} layers",
        )
        bad = sorted(set(self.layer_types) - set(LAYER_TYPES))
        need(not bad, "layer_types", f"unknown types {bad}; use {LAYER_TYPES}")
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            self.num_labels = len(self.id2label)

    # ------------------------------------------------------------------ derived
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def window(self) -> int:
        """Half window: local layers attend to |i - j| <= window."""
        return self.local_attention // 2

    def is_global(self, layer: int) -> bool:
        return self.layer_types[layer] == "full_attention"

    def num_parameters(self, include_embeddings: bool = True) -> int:
        """Parameters of `MmBertForMaskedLM` with the decoder tied, computed from the shapes alone."""
        h, i, n = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        ln = h * (2 if self.norm_bias else 1)
        attn = 3 * h * h + h * h + (4 * h if self.attention_bias else 0)
        mlp = 2 * i * h + i * h + ((2 * i + h) if self.mlp_bias else 0)
        layers = n * (attn + mlp + 2 * ln) - ln  # layer 0 has no attn_norm
        total = layers + ln  # final_norm
        if include_embeddings:
            total += self.vocab_size * h + ln  # tok_embeddings + embeddings.norm
            total += h * h + (h if self.classifier_bias else 0) + ln  # head.dense + head.norm
            total += self.vocab_size if self.decoder_bias else 0
        return total

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MmBertConfig:
        """A named architecture; keyword arguments override any field."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
        known = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(
                f"unknown model config key {', '.join(unknown)}; the keys are {', '.join(sorted(known))}"
            )
        return cls(**{**PRESETS[name], **overrides})

    def replace(self, **changes: Any) -> MmBertConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ HF mapping
    def to_hf_dict(self, architecture: str = "ModernBertForMaskedLM") -> dict[str, Any]:
        """`config.json` content that transformers 4.57+ and 5.x both read correctly.

        transformers 5 writes `layer_types` + `rope_parameters`; 4.57 reads `global_rope_theta`,
        `local_rope_theta` and `global_attn_every_n_layers` (and silently defaults the local theta to
        10k without them), so both forms are written.
        """
        d: dict[str, Any] = {
            "architectures": [architecture],
            "model_type": "modernbert",
            **{k: getattr(self, k) for k in _HF_KEYS},
            "layer_types": list(self.layer_types),
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": float(self.global_rope_theta)},
                "sliding_attention": {"rope_type": "default", "rope_theta": float(self.local_rope_theta)},
            },
            "sliding_window": self.window,
        }
        if self.attention_output_dropout is not None:
            d["attention_output_dropout"] = self.attention_output_dropout
        if architecture != "ModernBertForMaskedLM":
            labels = self.id2label or {i: f"LABEL_{i}" for i in range(self.num_labels)}
            d["id2label"] = {str(k): v for k, v in labels.items()}
            d["label2id"] = {v: k for k, v in labels.items()}
            if self.problem_type is not None:
                d["problem_type"] = self.problem_type
        return d

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json", **overrides: Any) -> MmBertConfig:
        """Read a transformers ModernBERT `config.json` (older or newer form)."""
        if d.get("model_type", "modernbert") != "modernbert":
            raise ValueError(f"{source}: model_type is {d.get('model_type')!r}, expected 'modernbert'")
        kw: dict[str, Any] = {k: d[k] for k in _HF_KEYS if k in d and d[k] is not None}
        rope = d.get("rope_parameters") or {}
        kw["global_rope_theta"] = float(
            (rope.get("full_attention") or {}).get("rope_theta", d.get("global_rope_theta", 160_000.0))
        )
        # transformers' own default for the local theta is 10k (ModernBERT); mmBERT's released config sets 160k.
        kw["local_rope_theta"] = float(
            (rope.get("sliding_attention") or {}).get("rope_theta", d.get("local_rope_theta", 10_000.0))
        )
        if d.get("layer_types"):
            kw["layer_types"] = list(d["layer_types"])
        if d.get("attention_output_dropout") is not None:
            kw["attention_output_dropout"] = float(d["attention_output_dropout"])
        if "id2label" in d and d["id2label"]:
            kw["id2label"] = {int(k): v for k, v in d["id2label"].items()}
        elif "num_labels" in d:
            kw["num_labels"] = int(d["num_labels"])
        if d.get("problem_type"):
            kw["problem_type"] = d["problem_type"]
        kw.update(overrides)
        try:
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from e

    def save(self, directory: str | Path, architecture: str = "ModernBertForMaskedLM") -> None:
        text = json.dumps(self.to_hf_dict(architecture), indent=2, sort_keys=True) + "\n"
        atomic_write_text(Path(directory) / "config.json", text)

    @classmethod
    def load(cls, directory: str | Path, **overrides: Any) -> MmBertConfig:
        return cls.from_hf_dict(
            read_hf_config(directory), source=str(Path(directory) / "config.json"), **overrides
        )


def read_hf_config(directory: str | Path) -> dict[str, Any]:
    """The `config.json` of an HF model directory as it is (no checks of its fields)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json (is {directory} an HF model directory?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e


# Fields shared one to one with transformers' ModernBertConfig.
_HF_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "global_attn_every_n_layers",
    "local_attention",
    "global_rope_theta",
    "local_rope_theta",
    "hidden_activation",
    "classifier_activation",
    "norm_eps",
    "norm_bias",
    "attention_bias",
    "mlp_bias",
    "classifier_bias",
    "decoder_bias",
    "tie_word_embeddings",
    "embedding_dropout",
    "attention_dropout",
    "mlp_dropout",
    "classifier_dropout",
    "initializer_range",
    "initializer_cutoff_factor",
    "pad_token_id",
    "eos_token_id",
    "bos_token_id",
    "cls_token_id",
    "sep_token_id",
    "classifier_pooling",
)

PRESETS: dict[str, dict[str, Any]] = {
    # Tests: both layer types (global, local, local, global), a window shorter than the sequences,
    # different global/local thetas so that a mix-up shows.
    "tiny": dict(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=512,
        local_attention=16,
        global_rope_theta=160_000.0,
        local_rope_theta=10_000.0,
    ),
    # The demo: trains in minutes on 2 CPU cores.
    "mini": dict(
        vocab_size=8192,
        hidden_size=256,
        intermediate_size=384,
        num_hidden_layers=6,
        num_attention_heads=4,
        max_position_embeddings=1024,
        local_attention=64,
        global_rope_theta=10_000.0,
        local_rope_theta=10_000.0,
    ),
    "mmbert-small": dict(
        vocab_size=256_000,
        hidden_size=384,
        intermediate_size=1152,
        num_hidden_layers=22,
        num_attention_heads=6,
        max_position_embeddings=8192,
        local_attention=128,
    ),
    "mmbert-base": dict(
        vocab_size=256_000,
        hidden_size=768,
        intermediate_size=1152,
        num_hidden_layers=22,
        num_attention_heads=12,
        max_position_embeddings=8192,
        local_attention=128,
    ),
}
