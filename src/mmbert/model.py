"""The mmBERT / ModernBERT encoder, unpadded.

Module and parameter names are transformers' `ModernBertForMaskedLM` ones (`model.embeddings.tok_embeddings`,
`model.layers.N.attn.Wqkv`, `head.dense`, `decoder`, ...), so the checkpoint format is this module tree.

The encoder always runs on the packed token stream: padded inputs (`input_ids` (B, T) + `attention_mask`)
are unpadded at the door (pad tokens dropped, `cu_seqlens` built) and re-padded at the exit; packed inputs
(`input_ids` (N,) + `cu_seqlens` + `max_seqlen`) go straight through. RoPE positions restart at every
sequence and attention never crosses a sequence boundary (see `attention.py`).

Layer i is global (full attention, `global_rope_theta`) or local (sliding window of
|i - j| <= local_attention // 2, `local_rope_theta`) as `config.layer_types` says; forward never branches
on the attention backend, which is chosen once when the model is built.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmbert.attention import VarlenBatch, get_backend
from mmbert.config import MmBertConfig
from mmbert.hf import HFCheckpointMixin
from mmbert.tokens import IGNORE_INDEX

_ACT = {
    "gelu": lambda x: F.gelu(x),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "relu": F.relu,
}


# ---------------------------------------------------------------------------------------------- outputs
@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # (B, T, H) for padded input, (N, H) for packed input
    batch: VarlenBatch  # sequence boundaries of the packed stream
    indices: torch.Tensor | None = None  # (N,) positions of real tokens in the flattened (B*T) input


@dataclass
class MaskedLMOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, T, V) padded, (N, V) packed, (M, V) at labelled/selected positions only


@dataclass
class SequenceClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, num_labels); (B, num_choices) for multiple choice
    pooled: torch.Tensor  # (B, H) pooled encoder output, before the head


@dataclass
class TokenClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, T, num_labels) padded, (N, num_labels) packed


@dataclass
class QuestionAnsweringOutput:
    loss: torch.Tensor | None
    start_logits: torch.Tensor  # (B, T) padded, (N,) packed
    end_logits: torch.Tensor


# ---------------------------------------------------------------------------------------------- rope
def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-interleaved RoPE over the full head dim: (N,) positions -> cos, sin of shape (N, head_dim / 2)."""
    inv_freq = theta ** (
        -torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    )
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (N, D/2)
    return freqs.cos(), freqs.sin()


def apply_rope(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries and keys together, in place: qk (N, 2, H, D), cos/sin (N, D/2).

    Equal to HF's `qk * cat(cos, cos) + rotate_half(qk) * cat(sin, sin)`: with halves (x1, x2) the result
    is (x1 cos - x2 sin, x2 cos + x1 sin). In place on the fresh `Wqkv` output (autograd keeps only cos
    and sin for these ops), in four fused multiply-adds and one copy of x1: no `cat`, no temporaries
    the size of qk.
    """
    if qk.dtype != torch.float32:  # rotate in fp32 under autocast, as HF does
        return apply_rope(qk.float(), cos, sin).to(qk.dtype)
    half = qk.shape[-1] // 2
    x1, x2 = qk[..., :half], qk[..., half:]  # views (N, 2, H, D/2)
    c, s = cos[:, None, None, :], sin[:, None, None, :]
    x1_orig = x1.clone()
    x1.mul_(c).addcmul_(x2, s, value=-1.0)
    x2.mul_(c).addcmul_(x1_orig, s)
    return qk


def _rope_out_of_place(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`apply_rope` as a new tensor (for compiled regions)."""
    x = qk.float()
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, None, None, :], sin[:, None, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(qk.dtype)


# ---------------------------------------------------------------------------------------------- blocks
def _layer_norm(config: MmBertConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)


class MmBertEmbeddings(nn.Module):
    def __init__(self, config: MmBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.norm = _layer_norm(config)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(self.tok_embeddings(input_ids)))


class MmBertAttention(nn.Module):
    """The attention weights and settings of a layer; the layer runs them (see `_attention_inputs`)."""

    def __init__(self, config: MmBertConfig, layer_idx: int):
        super().__init__()
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.window = None if config.is_global(layer_idx) else config.window
        self.dropout_p = config.attention_dropout
        self.attn_fn = get_backend(config.attn_backend, config.attention_dropout)
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        # After Wo, outside the attention kernel (any backend): mmBERT pre-trained with 0.1 here.
        out_p = config.attention_output_dropout
        self.out_drop = nn.Dropout(config.attention_dropout if out_p is None else out_p)


class MmBertMLP(nn.Module):
    """GeGLU: Wo(act(a) * g) with a, g = Wi(x).chunk(2)."""

    def __init__(self, config: MmBertConfig):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.act = _ACT[config.hidden_activation]
        self.drop = nn.Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.Wi(x).chunk(2, dim=-1)
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self.Wo(self.drop(self.act(a) * g))
        return self.Wo(self.drop(self.act(a).mul_(g)))  # inference: no autograd, one temporary fewer


# Tokens per chunk of the post-attention block in CPU inference (chosen on mmBERT-small, 8 x 512 tokens, 2
# threads, in an interleaved A/B: 1024 came out ahead of one pass, 256 and 512 did not, all near noise).
INFERENCE_CHUNK = 1024


class MmBertEncoderLayer(nn.Module):
    def __init__(self, config: MmBertConfig, layer_idx: int):
        super().__init__()
        self.layer_type = config.layer_types[layer_idx]
        # Layer 0 has no attention pre-norm: the embedding norm already normalized its input.
        self.attn_norm = nn.Identity() if layer_idx == 0 else _layer_norm(config)
        self.attn = MmBertAttention(config, layer_idx)
        self.mlp_norm = _layer_norm(config)
        self.mlp = MmBertMLP(config)
        self.compile = config.compile

    def forward(
        self, h: torch.Tensor, batch: VarlenBatch, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        inputs, output_and_mlp = _regions(compiles(self.compile, h.shape[-1], h.device))
        q, k, v = inputs(self.attn, self.attn_norm(h), cos, sin)
        attn = self.attn
        p = attn.dropout_p if self.training else 0.0
        out = attn.attn_fn(q, k, v, batch, attn.window, attn.head_dim**-0.5, p)  # (N, H, D)
        n = h.shape[0]
        if n <= INFERENCE_CHUNK or torch.is_grad_enabled() or h.device.type != "cpu":
            return output_and_mlp(self, h, out)
        # CPU inference on a long stream: the MLP block row-wise in chunks, so that Wi's (chunk, 2 x intermediate)
        # output and the elementwise passes over it stay in cache (the rows are independent past attention).
        res = torch.empty_like(h)
        for s in range(0, n, INFERENCE_CHUNK):
            e = min(s + INFERENCE_CHUNK, n)
            res[s:e] = output_and_mlp(self, h[s:e], out[s:e])
        return res


# ---------------------------------------------------------------------------------------------- regions
# A layer is two regions around the attention kernel. Compiled (inductor, dynamic in the number of
# tokens), each runs its matmuls as before and fuses the elementwise work between them: RoPE, the
# residual adds with the MLP's pre-norm and the GeGLU product become a few single-pass kernels instead
# of a dozen passes over memory, and autograd keeps fewer and smaller tensors. The attention kernel
# stays outside (its per-batch bookkeeping depends on the sequence lengths), and so does the attention
# pre-norm, one kernel either way (layer 0 has none: one compiled graph serves every layer).
def _attention_inputs(
    attn: MmBertAttention, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Wqkv and RoPE: normalized (N, H) -> q, k, v (N, heads, head_dim)."""
    qkv = attn.Wqkv(x).view(x.shape[0], 3, attn.num_heads, attn.head_dim)  # (N, 3, H, D): [Q | K | V]
    # Compiled, the rotation is written out of place: inductor fuses it into one pass, while the
    # in-place form (best in eager) gives it slice-backward masks that made the backward 2x slower.
    rotate = _rope_out_of_place if torch.compiler.is_compiling() else apply_rope
    qk = rotate(qkv[:, :2], cos, sin)
    return qk[:, 0], qk[:, 1], qkv[:, 2]


def _attention_output_and_mlp(layer: MmBertEncoderLayer, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Wo and the residual, then the MLP block with its pre-norm and residual."""
    h = h + layer.attn.out_drop(layer.attn.Wo(out.reshape(h.shape)))
    return h + layer.mlp(layer.mlp_norm(h))


@functools.cache
def _regions(compiled: bool) -> tuple[Callable, Callable]:
    if not compiled:
        return _attention_inputs, _attention_output_and_mlp
    return (
        torch.compile(_attention_inputs, dynamic=True),
        torch.compile(_attention_output_and_mlp, dynamic=True),
    )


@functools.cache
def compiles(mode: str, width: int, device: torch.device) -> bool:
    """Whether layers of this `width` on `device` run compiled regions (`MmBertConfig.compile`).

    "auto": on CUDA when Triton is installed; on CPU when a C++ compiler is found and the layers are at
    least 256 wide (the demo's mini model and up), where the fused passes outweigh the compile (about
    half a minute on 2 cores, then cached on disk); the tiny test shape stays eager.
    """
    if mode != "auto":
        return mode == "on"
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return device.type == "cpu" and width >= 256 and shutil.which(os.environ.get("CXX", "g++")) is not None


class MmBertPredictionHead(nn.Module):
    def __init__(self, config: MmBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act = _ACT[config.classifier_activation]
        self.norm = _layer_norm(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(x)))


# ---------------------------------------------------------------------------------------------- models
class MmBertPreTrainedModel(HFCheckpointMixin, nn.Module):
    """Shared init and checkpoint I/O; `config` is an `MmBertConfig`."""

    config: MmBertConfig

    def init_weights(self) -> None:
        """HF ModernBERT's scheme: truncated normal at +-cutoff*std, std per role; norms 1, biases 0."""
        cfg = self.config
        std_in = cfg.initializer_range
        std_out = cfg.initializer_range / math.sqrt(2.0 * cfg.num_hidden_layers)

        def trunc(weight: torch.Tensor, std: float) -> None:
            cut = cfg.initializer_cutoff_factor * std
            nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-cut, b=cut)

        for module in self.modules():
            if isinstance(module, MmBertEmbeddings):
                trunc(module.tok_embeddings.weight, std_in)
            elif isinstance(module, MmBertAttention):
                trunc(module.Wqkv.weight, std_in)
                trunc(module.Wo.weight, std_out)
            elif isinstance(module, MmBertMLP):
                trunc(module.Wi.weight, std_in)
                trunc(module.Wo.weight, std_out)
            elif isinstance(module, MmBertPredictionHead):
                trunc(module.dense.weight, std_out)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm) and module.bias is not None:
                nn.init.zeros_(module.bias)
        if isinstance(getattr(self, "classifier", None), nn.Linear):  # every fine-tuning head
            trunc(self.classifier.weight, cfg.hidden_size**-0.5)

    def set_rope_theta(self, global_theta: float, local_theta: float) -> None:
        """Change RoPE's base frequencies (a phase change): no parameter depends on them."""
        self.config.global_rope_theta = float(global_theta)
        self.config.local_rope_theta = float(local_theta)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())


class MmBertModel(MmBertPreTrainedModel):
    hf_prefix = "model."

    def __init__(self, config: MmBertConfig):
        super().__init__()
        self.config = config
        self.embeddings = MmBertEmbeddings(config)
        self.layers = nn.ModuleList(MmBertEncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = _layer_norm(config)
        self.gradient_checkpointing = False
        if type(self) is MmBertModel:
            self.init_weights()

    def encode(self, input_ids: torch.Tensor, batch: VarlenBatch) -> torch.Tensor:
        """The packed path: (N,) token ids -> (N, H) hidden states."""
        cfg = self.config
        h = self.embeddings(input_ids)
        positions = batch.positions
        rope = {
            "full_attention": rope_cos_sin(positions, cfg.head_dim, cfg.global_rope_theta),
            "sliding_attention": rope_cos_sin(positions, cfg.head_dim, cfg.local_rope_theta),
        }
        for layer in self.layers:
            cos, sin = rope[layer.layer_type]
            if self.gradient_checkpointing and self.training:
                h = checkpoint(layer, h, batch, cos, sin, use_reentrant=False)
            else:
                h = layer(h, batch, cos, sin)
        return self.final_norm(h)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        return_packed: bool = False,
    ) -> EncoderOutput:
        """Padded: `input_ids` (B, T) [+ `attention_mask`]; packed: `input_ids` (N,) + `cu_seqlens`.

        Padded inputs come back re-padded as (B, T, H) (zeros at pad positions) unless `return_packed`.
        """
        flat_ids, batch, indices = unpad_inputs(input_ids, attention_mask, cu_seqlens, max_seqlen)
        hidden = self.encode(flat_ids, batch)
        if input_ids.dim() == 2 and not return_packed:
            hidden = repad(hidden, indices, input_ids.shape)
        return EncoderOutput(hidden, batch, indices)


class MmBertForMaskedLM(MmBertPreTrainedModel):
    hf_architecture = "ModernBertForMaskedLM"

    def __init__(self, config: MmBertConfig):
        super().__init__()
        self.config = config
        self.model = MmBertModel(config)
        self.head = MmBertPredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        self.init_weights()
        if config.tie_word_embeddings:
            self.decoder.weight = self.model.embeddings.tok_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        labels: torch.Tensor | None = None,
        prediction_mask: torch.Tensor | None = None,
    ) -> MaskedLMOutput:
        """Logits for every real token, or only where they are needed.

        With `labels` (same shape as `input_ids`, IGNORE_INDEX = -100 = ignore) the head and the decoder run only on the
        M labelled positions (sparse prediction): `logits` is (M, V) and `loss` their mean cross-entropy.
        With a boolean `prediction_mask` (same shape as `input_ids`) they run only where it is true
        (fill-mask: a 256k-vocabulary decoder costs more than the whole small encoder).
        """
        flat_ids, batch, indices = unpad_inputs(input_ids, attention_mask, cu_seqlens, max_seqlen)
        hidden = self.model.encode(flat_ids, batch)  # (N, H)
        select = labels if labels is not None else prediction_mask
        if select is not None:
            if select.shape != input_ids.shape:
                raise ValueError(
                    f"labels/prediction_mask shape {tuple(select.shape)} != input_ids {tuple(input_ids.shape)}"
                )
            flat = select.reshape(-1) if indices is None else select.reshape(-1)[indices]
            keep = flat != IGNORE_INDEX if labels is not None else flat.bool()
            logits = self.decoder(self.head(hidden[keep]))  # (M, V)
            loss = None
            if labels is not None:
                target = flat[keep]
                loss = (
                    F.cross_entropy(logits.float(), target)
                    if target.numel()
                    else logits.sum() * 0.0  # no masked token: a zero loss that still has a graph
                )
            return MaskedLMOutput(loss, logits)
        logits = self.decoder(self.head(hidden))  # (N, V)
        if input_ids.dim() == 2:
            logits = repad(logits, indices, input_ids.shape)
        return MaskedLMOutput(None, logits)


class _ClassifierModel(MmBertPreTrainedModel):
    """The encoder, the prediction head, dropout and a linear `classifier` of `outputs`: the parameters of
    every transformers ModernBERT head but the MLM one (sequence, token, multiple choice, QA)."""

    def __init__(self, config: MmBertConfig, outputs: int):
        super().__init__()
        self.config = config
        self.model = MmBertModel(config)
        self.head = MmBertPredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, outputs)
        self.init_weights()


class MmBertForSequenceClassification(_ClassifierModel):
    hf_architecture = "ModernBertForSequenceClassification"

    def __init__(self, config: MmBertConfig):
        super().__init__(config, config.num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        labels: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        flat_ids, batch, _ = unpad_inputs(input_ids, attention_mask, cu_seqlens, max_seqlen)
        hidden = self.model.encode(flat_ids, batch)  # (N, H)
        pooled = pool_packed(hidden, batch, self.config.classifier_pooling)  # (S, H)
        logits = self.classifier(self.drop(self.head(pooled)))
        loss = None
        if labels is not None:
            loss = classification_loss(logits, labels, self.config)
        return SequenceClassifierOutput(loss, logits, pooled)


class MmBertForMultipleChoice(_ClassifierModel):
    """One score per (context, choice) sequence, a softmax over each example's choices.

    transformers' `ModernBertForMultipleChoice` (same parameters: `model`, `head`, `drop`, `classifier` with one
    output). Padded input is (B, C, T) as there; packed input is B x C sequences, the C choices of an example
    one after another, with `num_choices` = C.
    """

    hf_architecture = "ModernBertForMultipleChoice"

    def __init__(self, config: MmBertConfig):
        super().__init__(config, 1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        num_choices: int | None = None,
        labels: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        if input_ids.dim() == 3:  # (B, C, T) as transformers takes it
            num_choices = input_ids.shape[1]
            input_ids = input_ids.reshape(-1, input_ids.shape[-1])
            if attention_mask is not None:
                attention_mask = attention_mask.reshape(-1, attention_mask.shape[-1])
        if num_choices is None:
            raise ValueError("packed multiple-choice input needs num_choices")
        flat_ids, batch, _ = unpad_inputs(input_ids, attention_mask, cu_seqlens, max_seqlen)
        pooled = pool_packed(self.model.encode(flat_ids, batch), batch, self.config.classifier_pooling)
        if pooled.shape[0] % num_choices:
            raise ValueError(
                f"{pooled.shape[0]} sequences are not a whole number of {num_choices}-choice examples"
            )
        logits = self.classifier(self.drop(self.head(pooled))).view(-1, num_choices)
        loss = F.cross_entropy(logits.float(), labels.long().reshape(-1)) if labels is not None else None
        return SequenceClassifierOutput(loss, logits, pooled)


class MmBertForTokenClassification(_ClassifierModel):
    """A label per token (NER, POS); transformers' `ModernBertForTokenClassification` parameters.

    `labels` has the shape of `input_ids` (IGNORE_INDEX where no label: continuation pieces, specials).
    """

    hf_architecture = "ModernBertForTokenClassification"

    def __init__(self, config: MmBertConfig):
        super().__init__(config, config.num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        labels: torch.Tensor | None = None,
    ) -> TokenClassifierOutput:
        flat_ids, batch, indices = unpad_inputs(input_ids, attention_mask, cu_seqlens, max_seqlen)
        logits = self.classifier(self.drop(self.head(self.model.encode(flat_ids, batch))))  # (N, L)
        loss = None
        if labels is not None:
            flat = labels.reshape(-1) if indices is None else labels.reshape(-1)[indices]
            loss = F.cross_entropy(logits.float(), flat.long(), ignore_index=IGNORE_INDEX)
        if input_ids.dim() == 2:
            logits = repad(logits, indices, input_ids.shape)
        return TokenClassifierOutput(loss, logits)


class MmBertForQuestionAnswering(_ClassifierModel):
    """Extractive QA: start and end logits per token; transformers' `ModernBertForQuestionAnswering`
    parameters (`classifier` has two outputs, `num_labels` = 2).

    `start_positions` / `end_positions` (B,) are token positions inside each sequence; the loss is the
    mean of the start and end cross-entropies over each sequence's own tokens.
    """

    hf_architecture = "ModernBertForQuestionAnswering"

    def __init__(self, config: MmBertConfig):
        if config.num_labels != 2:
            raise ValueError(f"question answering needs num_labels 2 (start, end), got {config.num_labels}")
        super().__init__(config, 2)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
    ) -> QuestionAnsweringOutput:
        flat_ids, batch, indices = unpad_inputs(input_ids, attention_mask, cu_seqlens, max_seqlen)
        logits = self.classifier(self.drop(self.head(self.model.encode(flat_ids, batch))))  # (N, 2)
        start, end = logits.float().unbind(-1)
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = (_span_loss(start, batch, start_positions) + _span_loss(end, batch, end_positions)) / 2
        if input_ids.dim() == 2:
            start, end = repad(start, indices, input_ids.shape), repad(end, indices, input_ids.shape)
        return QuestionAnsweringOutput(loss, start, end)


def _span_loss(flat_logits: torch.Tensor, batch: VarlenBatch, positions: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (N,) packed logits against one position per sequence, over that sequence's tokens."""
    n_seq = batch.cu_seqlens.numel() - 1
    padded = flat_logits.new_full((n_seq, batch.max_seqlen), float("-inf"))
    padded[batch.seq_ids, batch.positions] = flat_logits
    return F.cross_entropy(padded, positions.long().reshape(-1).to(padded.device))


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: MmBertConfig) -> torch.Tensor:
    problem = config.problem_type
    if problem is None:
        problem = "regression" if config.num_labels == 1 else "single_label_classification"
        if config.num_labels > 1 and labels.is_floating_point():
            problem = "multi_label_classification"
    if problem == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.float().reshape(logits.shape[0]))
    if problem == "single_label_classification":
        return F.cross_entropy(logits.float(), labels.long().reshape(-1))
    if problem == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
    raise ValueError(f"unknown problem_type {problem!r}")


# ---------------------------------------------------------------------------------------------- padding
def unpad_inputs(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    max_seqlen: int | None,
) -> tuple[torch.Tensor, VarlenBatch, torch.Tensor | None]:
    """Either input form -> (flat ids (N,), VarlenBatch, indices of real tokens in the flat B*T input)."""
    if cu_seqlens is not None:
        if input_ids.dim() != 1:
            raise ValueError(f"packed input_ids must be 1-D (N,), got shape {tuple(input_ids.shape)}")
        if attention_mask is not None:
            raise ValueError(
                "give either attention_mask (padded input) or cu_seqlens (packed input), not both"
            )
        cu = cu_seqlens.to(device=input_ids.device, dtype=torch.int32)
        if int(cu[-1]) != input_ids.shape[0]:
            raise ValueError(
                f"cu_seqlens ends at {int(cu[-1])} but input_ids has {input_ids.shape[0]} tokens"
            )
        m = int(max_seqlen) if max_seqlen is not None else int((cu[1:] - cu[:-1]).max())
        return input_ids.long(), VarlenBatch(cu, m), None
    if input_ids.dim() != 2:
        raise ValueError(f"padded input_ids must be 2-D (B, T), got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        b, t = input_ids.shape
        return (
            input_ids.reshape(-1).long(),
            VarlenBatch.from_seqlens(torch.full((b,), t, device=input_ids.device)),
            None,
        )
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} != input_ids {tuple(input_ids.shape)}"
        )
    mask = attention_mask.bool()
    indices = mask.reshape(-1).nonzero().squeeze(1)  # (N,)
    batch = VarlenBatch.from_seqlens(mask.sum(1))
    return input_ids.reshape(-1)[indices].long(), batch, indices


def repad(x: torch.Tensor, indices: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
    """(N, ...) packed rows -> (B, T, ...) with zeros at pad positions (no padding: a reshape)."""
    b, t = shape
    if indices is None:
        return x.view(b, t, *x.shape[1:])
    out = x.new_zeros((b * t, *x.shape[1:]))
    out[indices] = x
    return out.view(b, t, *x.shape[1:])


def pool_packed(hidden: torch.Tensor, batch: VarlenBatch, pooling: str) -> torch.Tensor:
    """(N, H) -> (S, H): mean over each sequence's tokens, or its first token ("cls")."""
    if pooling == "cls":
        return hidden[batch.cu_seqlens[:-1].long()]
    n_seq = batch.cu_seqlens.numel() - 1
    sums = hidden.new_zeros(n_seq, hidden.shape[1]).index_add_(0, batch.seq_ids, hidden)
    lengths = (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]).clamp(min=1).to(hidden.dtype)
    return sums / lengths[:, None]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H) padded hidden states -> (B, H) mean over real tokens (mmBERT's pooling)."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
