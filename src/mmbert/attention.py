"""Variable-length attention: one function per backend behind one signature.

Every backend takes the packed ("unpadded") token stream of a batch: `q, k, v` of shape (N, heads, head_dim)
where N is the number of real tokens, and a `VarlenBatch` that says where each sequence starts
(`cu_seqlens`, as FlashAttention's varlen API). `window` is the half window of a local layer (a token sees
keys with |i - j| <= window, i.e. FlashAttention's `window_size=(window, window)`) or None for a global
layer. No token ever attends across a sequence boundary.

Backends:
- `reference`: explicit scores and fp32 softmax, one sequence at a time. Slow; the ground truth in tests.
- `sdpa`: PyTorch's scaled_dot_product_attention. Global layers run one SDPA call per sequence (or one
  batched call when all sequences have the same length); local layers cut the whole stream into blocks of
  `window` tokens, each attending to itself and its two neighbours under a band + same-sequence mask, so
  memory and time grow linearly with length.
- `flex`: `flex_attention` with a document + sliding-window block mask (block-sparse). Forward only on CPU.
- `flash`: FlashAttention-2 `flash_attn_varlen_func` (CUDA, fp16/bf16). Without CUDA or flash-attn it
  fails when the model is built; fp32 activations (no bf16 autocast) fail at the first forward, since
  the dtype a model will run in is not known when it is built.
- `auto`: `flash` on CUDA when flash_attn is installed, else `sdpa`.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

AttentionFn = Callable[..., torch.Tensor]


@dataclass
class VarlenBatch:
    """Sequence boundaries of a packed batch, plus per-batch caches shared by all layers."""

    cu_seqlens: torch.Tensor  # (S + 1,) int32, cu_seqlens[0] = 0, cu_seqlens[-1] = N
    max_seqlen: int
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_seqlens(cls, seqlens: torch.Tensor) -> VarlenBatch:
        cu = F.pad(torch.cumsum(seqlens, 0, dtype=torch.int32), (1, 0))
        return cls(cu, int(seqlens.max()) if seqlens.numel() else 0)

    def cached(self, key, build: Callable):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @property
    def total(self) -> int:
        return self.cached("total", lambda: int(self.cu_seqlens[-1]))

    @property
    def seqlens(self) -> list[int]:
        """Python lengths (one device sync per batch, shared by every layer)."""
        return self.cached("seqlens", lambda: (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).tolist())

    @property
    def seq_ids(self) -> torch.Tensor:
        """(N,) index of the sequence each token belongs to."""

        def build():
            lengths = (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()
            ids = torch.arange(lengths.numel(), device=self.cu_seqlens.device)
            return torch.repeat_interleave(ids, lengths, output_size=self.total)

        return self.cached("seq_ids", build)

    @property
    def positions(self) -> torch.Tensor:
        """(N,) position of each token inside its own sequence: RoPE restarts at every sequence."""

        def build():
            starts = self.cu_seqlens[:-1].long()[self.seq_ids]
            return torch.arange(self.total, device=self.cu_seqlens.device) - starts

        return self.cached("positions", build)


# ---------------------------------------------------------------------------------------------- reference
def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    batch: VarlenBatch,
    window: int | None,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    out = torch.empty_like(q)
    starts = batch.cu_seqlens.tolist()
    for s, e in zip(starts[:-1], starts[1:], strict=True):
        if e == s:
            continue
        qs, ks, vs = (t[s:e].transpose(0, 1).float() for t in (q, k, v))  # (H, L, D)
        scores = qs @ ks.transpose(1, 2) * scale  # (H, L, L)
        if window is not None:
            i = torch.arange(e - s, device=q.device)
            scores = scores.masked_fill((i[:, None] - i[None, :]).abs() > window, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[s:e] = (probs @ vs).transpose(0, 1).to(q.dtype)
    return out


# ---------------------------------------------------------------------------------------------- sdpa
def _sdpa_per_sequence(q, k, v, batch: VarlenBatch, scale: float, dropout_p: float) -> torch.Tensor:
    lengths = batch.seqlens
    n_seq = len(lengths)
    if n_seq and all(n == lengths[0] for n in lengths):
        # Uniform lengths: one batched call. (N, H, D) -> (S, H, L, D)
        shape = (n_seq, lengths[0], q.shape[1], q.shape[2])
        qs, ks, vs = (t.reshape(shape).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(qs, ks, vs, dropout_p=dropout_p, scale=scale)
        return o.transpose(1, 2).reshape(q.shape)
    outs = []
    for qs, ks, vs in zip(*(t.split(lengths) for t in (q, k, v)), strict=True):
        if qs.shape[0] == 0:
            outs.append(qs)
            continue
        o = F.scaled_dot_product_attention(
            qs.transpose(0, 1)[None],
            ks.transpose(0, 1)[None],
            vs.transpose(0, 1)[None],
            dropout_p=dropout_p,
            scale=scale,
        )  # (1, H, L, D)
        outs.append(o[0].transpose(0, 1))
    return torch.cat(outs) if outs else q.new_empty(q.shape)


def _local_block_mask(batch: VarlenBatch, window: int) -> torch.Tensor:
    """(nb, 1, B, 3B) bool: query block b sees key blocks b-1, b, b+1 within the band and its own sequence."""
    n, block = batch.total, window
    nb = -(-n // block)
    pad = nb * block - n
    # Padding positions get sequence id -1: they only see each other, so no row of the mask is empty.
    seq = F.pad(batch.seq_ids, (0, pad), value=-1)
    pos = F.pad(batch.positions, (0, pad), value=0)
    qseq, qpos = seq.view(nb, block), pos.view(nb, block)

    def neighbours(t: torch.Tensor, fill: int) -> torch.Tensor:  # (nb, B) -> (nb, 3B)
        tp = F.pad(t, (0, 0, 1, 1), value=fill)
        return torch.cat([tp[:-2], tp[1:-1], tp[2:]], dim=1)

    kseq, kpos = neighbours(qseq, -2), neighbours(qpos, 0)
    same = qseq[:, :, None] == kseq[:, None, :]
    near = (qpos[:, :, None] - kpos[:, None, :]).abs() <= window
    mask = same & near
    # Rows of padding queries: let them see themselves (their output is dropped) so softmax stays finite.
    pad_rows = (qseq == -1)[:, :, None] & (kseq == -1)[:, None, :]
    return (mask | pad_rows)[:, None]  # (nb, 1, B, 3B)


def _sdpa_local(q, k, v, batch: VarlenBatch, window: int, scale: float, dropout_p: float) -> torch.Tensor:
    n, h, d = q.shape
    block = window
    nb = -(-n // block)
    pad = nb * block - n
    mask = batch.cached(("local_block_mask", window), lambda: _local_block_mask(batch, window))
    qb = (F.pad(q, (0, 0, 0, 0, 0, pad)) if pad else q).view(nb, block, h, d)

    def neighbours(t: torch.Tensor) -> torch.Tensor:  # (N, H, D) -> (nb, 3B, H, D), a strided view
        # One zero block before and after (plus the tail padding), then overlapping windows of 3 blocks
        # that step by one block: no copy beyond the padding.
        tp = F.pad(t, (0, 0, 0, 0, block, block + pad))  # ((nb + 2) * B, H, D)
        return tp.as_strided((nb, 3 * block, h, d), (block * h * d, h * d, d, 1))

    o = F.scaled_dot_product_attention(
        qb.transpose(1, 2),  # (nb, H, B, D)
        neighbours(k).transpose(1, 2),  # (nb, H, 3B, D)
        neighbours(v).transpose(1, 2),
        attn_mask=mask,
        dropout_p=dropout_p,
        scale=scale,
    )  # (nb, H, B, D)
    return o.transpose(1, 2).reshape(nb * block, h, d)[:n]


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    batch: VarlenBatch,
    window: int | None,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    if window is None or batch.max_seqlen <= window + 1:
        # Global layer, or every sequence fits inside the window: plain full attention per sequence.
        return _sdpa_per_sequence(q, k, v, batch, scale, dropout_p)
    return _sdpa_local(q, k, v, batch, window, scale, dropout_p)


# ---------------------------------------------------------------------------------------------- flex
@functools.cache
def _compiled_flex():
    return torch.compile(flex_attention, dynamic=True)


def flex_attention_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    batch: VarlenBatch,
    window: int | None,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    if dropout_p:
        raise ValueError("attn_backend='flex' does not support attention dropout; use 'sdpa'")
    if not q.is_cuda and torch.is_grad_enabled() and q.requires_grad:
        raise RuntimeError(
            "attn_backend='flex' has no backward pass on CPU (torch flex_attention); "
            "train with attn_backend='sdpa' (the default on CPU)"
        )
    seq, pos = batch.seq_ids, batch.positions

    def build():
        if window is None:

            def mask_mod(b, h, qi, ki):
                return seq[qi] == seq[ki]
        else:

            def mask_mod(b, h, qi, ki):
                return (seq[qi] == seq[ki]) & ((pos[qi] - pos[ki]).abs() <= window)

        n = batch.total
        return create_block_mask(mask_mod, None, None, n, n, device=q.device)

    block_mask = batch.cached(("flex_mask", window), build)
    fn = _compiled_flex() if q.is_cuda else flex_attention
    o = fn(
        q.transpose(0, 1)[None],
        k.transpose(0, 1)[None],
        v.transpose(0, 1)[None],
        block_mask=block_mask,
        scale=scale,
    )
    return o[0].transpose(0, 1)  # (1, H, N, D) -> (N, H, D)


# ---------------------------------------------------------------------------------------------- flash
def flash_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    batch: VarlenBatch,
    window: int | None,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    from flash_attn import flash_attn_varlen_func  # optional: the flash-attn package, CUDA only

    if not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
        raise RuntimeError(
            f"attn_backend='flash' needs CUDA fp16/bf16 tensors, got {q.device} {q.dtype}; "
            "use autocast(bfloat16) on CUDA, or attn_backend='sdpa'"
        )
    return flash_attn_varlen_func(
        q,
        k,
        v,
        batch.cu_seqlens,
        batch.cu_seqlens,
        batch.max_seqlen,
        batch.max_seqlen,
        dropout_p=dropout_p,
        softmax_scale=scale,
        causal=False,
        window_size=(-1, -1) if window is None else (window, window),
    )


def auto_attention(q, k, v, batch: VarlenBatch, window: int | None, scale: float, dropout_p: float = 0.0):
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and flash_available():
        return flash_attention(q, k, v, batch, window, scale, dropout_p)
    return sdpa_attention(q, k, v, batch, window, scale, dropout_p)


BACKENDS: dict[str, AttentionFn] = {
    "auto": auto_attention,
    "reference": reference_attention,
    "sdpa": sdpa_attention,
    "flex": flex_attention_varlen,
    "flash": flash_attention,
}


def get_backend(name: str, dropout_p: float = 0.0) -> AttentionFn:
    """The attention function for `name`; fails now, with the fix, when it cannot run here."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attn_backend {name!r}; choose from {sorted(BACKENDS)}")
    if name == "flash" and not flash_available():
        raise RuntimeError(
            "attn_backend='flash' needs a CUDA GPU and the flash-attn package "
            "(pip install flash-attn --no-build-isolation); use attn_backend='sdpa' (or 'auto') instead"
        )
    if name == "flex":
        if importlib.util.find_spec("torch.nn.attention.flex_attention") is None:
            raise RuntimeError("attn_backend='flex' needs torch>=2.5; use attn_backend='sdpa'")
        if dropout_p:
            raise ValueError("attn_backend='flex' does not support attention_dropout > 0; use 'sdpa'")
    if name == "reference" and dropout_p:
        raise ValueError("attn_backend='reference' does not support attention_dropout > 0; use 'sdpa'")
    return BACKENDS[name]
