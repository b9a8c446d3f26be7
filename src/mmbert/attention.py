"""Variable-length attention: one function per backend behind one signature.

Every backend takes the packed ("unpadded") token stream of a batch: `q, k, v` of shape (N, heads, head_dim)
where N is the number of real tokens, and a `VarlenBatch` that says where each sequence starts
(`cu_seqlens`, as FlashAttention's varlen API). `window` is the half window of a local layer (a token sees
keys with |i - j| <= window, i.e. FlashAttention's `window_size=(window, window)`) or None for a global
layer. No token ever attends across a sequence boundary.

Backends:
- `reference`: explicit scores and fp32 softmax, one sequence at a time. Slow; the ground truth in tests.
- `sdpa`: PyTorch's scaled_dot_product_attention. Global layers run one SDPA call per sequence (or one
  batched call when all sequences have the same length); local layers cut the whole stream into query
  blocks (`window` tokens, 32 without autograd), each attending to the `window` keys on either side of it
  under a band + same-sequence mask, so memory and time grow linearly with length. A packer's stream of
  short rows (at most `ROWS_MAX` tokens, no sequence crossing a row end) runs as one call over the rows
  under a per-row mask instead, when that is cheaper: many short documents per row (global layers), rows
  under 8 windows (local layers). Masks are additive and built once per batch.
- `flex`: `flex_attention` with a document + sliding-window block mask (block-sparse, built from
  `cu_seqlens` tile by tile). Compiled on CUDA, where it has a backward; forward only (eager) on CPU.
- `flash`: FlashAttention-2 `flash_attn_varlen_func` (CUDA, fp16/bf16). Without CUDA or flash-attn it
  fails when the model is built; fp32 activations (no bf16 autocast) fail at the first forward, since
  the dtype a model will run in is not known when it is built.
- `auto`: `flash` on CUDA in fp16/bf16 when flash_attn is installed, else `flex` on CUDA, else `sdpa`.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

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
    def row_len(self) -> int | None:  # None for an empty stream
        """The shortest C such that the stream is rows of C tokens that no sequence crosses (N at most).

        A packer's rows end at sequence boundaries: C is the first boundary (at least `max_seqlen`) that
        divides N and has a boundary at each of its multiples.
        """

        def build():
            bounds = self.cu_seqlens.tolist()
            n, have = bounds[-1], set(bounds)
            for c in bounds[1:]:
                if c > 0 and c >= self.max_seqlen and n % c == 0 and all(k in have for k in range(c, n, c)):
                    return c
            return None

        return self.cached("row_len", build)

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


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean attention mask as SDPA's additive one (0 where allowed, -inf elsewhere), built once per
    batch: SDPA converts a boolean mask at every call, every layer and both passes (2-15% of the kernel
    on 2 CPU threads, at 128-512-token blocks and rows)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
        ~allowed, float("-inf")
    )


# Query block of a local layer without autograd: a block of B queries reads the B + 2 x window keys around
# it, of which at most 2 x window + 1 per query are in the band. Blocks of 32 (160 keys at window 64) beat
# blocks of `window` (192 keys) by about 12% in the forward (the CPU flash kernel, 2 threads); with
# autograd blocks of `window` stay: the backward of the smaller blocks measured 10-60% slower.
LOCAL_INFERENCE_BLOCK = 32


def _local_block_mask(batch: VarlenBatch, window: int, block: int, dtype: torch.dtype) -> torch.Tensor:
    """(nb, 1, B, B + 2W) additive mask (0 or -inf in `dtype`): query block b sees the keys from W before
    its first query to W after its last, those within the band and its own sequence.

    Additive (see `_additive`)."""
    n, span = batch.total, block + 2 * window
    nb = -(-n // block)
    pad = nb * block - n
    # Padding positions get sequence id -1: they only see each other, so no row of the mask is empty.
    seq = F.pad(batch.seq_ids, (0, pad), value=-1)
    pos = F.pad(batch.positions, (0, pad), value=0)
    qseq, qpos = seq.view(nb, block), pos.view(nb, block)
    # The keys of each block, as for `neighbours` in `_sdpa_local`: -2 marks the zero rows outside the stream.
    kseq = F.pad(seq, (window, window), value=-2).as_strided((nb, span), (block, 1))
    kpos = F.pad(pos, (window, window), value=0).as_strided((nb, span), (block, 1))
    same = qseq[:, :, None] == kseq[:, None, :]
    near = (qpos[:, :, None] - kpos[:, None, :]).abs() <= window
    # Rows of padding queries: let them see themselves (their output is dropped) so softmax stays finite.
    pad_rows = (qseq == -1)[:, :, None] & (kseq == -1)[:, None, :]
    return _additive((same & near) | pad_rows, dtype)[:, None]  # (nb, 1, B, B + 2W)


def _sdpa_local(q, k, v, batch: VarlenBatch, window: int, scale: float, dropout_p: float) -> torch.Tensor:
    n, h, d = q.shape
    block = window if torch.is_grad_enabled() else min(window, LOCAL_INFERENCE_BLOCK)
    span = block + 2 * window
    nb = -(-n // block)
    pad = nb * block - n
    mask = batch.cached(
        ("local_block_mask", window, block, q.dtype),
        lambda: _local_block_mask(batch, window, block, q.dtype),
    )
    qb = (F.pad(q, (0, 0, 0, 0, 0, pad)) if pad else q).view(nb, block, h, d)

    def neighbours(t: torch.Tensor) -> torch.Tensor:  # (N, H, D) -> (nb, B + 2W, H, D), a strided view
        # W zero rows before and after (plus the tail padding), then overlapping windows of B + 2W rows
        # that step by one block: no copy beyond the padding.
        tp = F.pad(t, (0, 0, 0, 0, window, window + pad))  # (nb * B + 2W, H, D)
        return tp.as_strided((nb, span, h, d), (block * h * d, h * d, d, 1))

    o = F.scaled_dot_product_attention(
        qb.transpose(1, 2),  # (nb, H, B, D)
        neighbours(k).transpose(1, 2),  # (nb, H, B + 2W, D)
        neighbours(v).transpose(1, 2),
        attn_mask=mask,
        dropout_p=dropout_p,
        scale=scale,
    )  # (nb, H, B, D)
    return o.transpose(1, 2).reshape(nb * block, h, d)[:n]


# Rows up to this long run as one masked call (measured on 2 CPU threads, forward and backward: 1.5-5x
# faster than a call per sequence or the band of blocks on 128-512-token rows, even at 1024).
ROWS_MAX = 512


def _sdpa_rows(
    q, k, v, batch: VarlenBatch, window: int | None, scale: float, dropout_p: float
) -> torch.Tensor:
    """One batched call over rows of `batch.row_len` tokens, each under its own document (+ band) mask."""
    n, h, d = q.shape
    rows = batch.row_len

    def build():
        seq, pos = batch.seq_ids.view(-1, rows), batch.positions.view(-1, rows)
        allowed = seq[:, :, None] == seq[:, None, :]
        if window is not None:
            allowed &= (pos[:, :, None] - pos[:, None, :]).abs() <= window
        return _additive(allowed, q.dtype)[:, None]  # (R, 1, C, C)

    mask = batch.cached(("rows_mask", window, q.dtype), build)
    qs, ks, vs = (t.view(-1, rows, h, d).transpose(1, 2) for t in (q, k, v))  # (R, H, C, D)
    o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    return o.transpose(1, 2).reshape(n, h, d)


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    batch: VarlenBatch,
    window: int | None,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    rows = batch.row_len
    local = window is not None and batch.max_seqlen > window + 1
    if (
        rows is not None
        and rows <= ROWS_MAX
        and (rows < 8 * window if local else batch.total < rows * len(batch.seqlens))
    ):
        # Packed short rows: one masked call over the rows beats a call per sequence (when there are
        # more sequences than rows) and the band of window blocks (when rows are under 8 windows).
        return _sdpa_rows(q, k, v, batch, window if local else None, scale, dropout_p)
    if not local:
        # Global layer, or every sequence fits inside the window: plain full attention per sequence.
        return _sdpa_per_sequence(q, k, v, batch, scale, dropout_p)
    return _sdpa_local(q, k, v, batch, window, scale, dropout_p)


# ---------------------------------------------------------------------------------------------- flex
FLEX_BLOCK = 128  # flex_attention's tile (its default sparse block size)


# Every compiled flex_attention in a process shares one dynamo cache (on flex_attention's code), and grad
# mode, autocast, the dtype, the number of heads and the mask function (window or none) each take an entry
# of it: training two model sizes and then running inference passes dynamo's default limit of 8, past which
# flex silently runs uncompiled and materializes the N x N scores (out of memory at GPU batch sizes).
FLEX_RECOMPILE_LIMIT = 64


@functools.cache
def _compiled_flex():
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.6
    setattr(config, name, max(getattr(config, name), FLEX_RECOMPILE_LIMIT))
    return torch.compile(flex_attention, dynamic=True)


def flex_block_mask(batch: VarlenBatch, window: int | None, block: int = FLEX_BLOCK) -> BlockMask:
    """The document (+ sliding-window) BlockMask of the packed stream, built from `cu_seqlens` alone.

    Equal to `create_block_mask` with the same mask_mod, which evaluates the mask at all N x N pairs;
    this works per tile, O((N / block)^2). Sequences are contiguous, so the keys any query of tile i may
    see form one interval [lo_i, hi_i): from the start of its first query's sequence (or that query minus
    the window) to the end of its last query's sequence (or that query plus the window). Key tiles that
    meet the interval are visited; those whose every pair is allowed ("full": both tiles whole and inside
    one sequence, every distance within the window) skip the mask_mod.
    """
    n, cu, device = batch.total, batch.cu_seqlens.long(), batch.cu_seqlens.device
    seq, pos = batch.seq_ids, batch.positions
    nb = -(-n // block)
    first = torch.arange(nb, device=device) * block  # first token of each tile
    last = (first + block).clamp(max=n) - 1  # last token of each tile
    lo, hi = cu[seq[first]], cu[seq[last] + 1]
    if window is not None:
        lo, hi = torch.maximum(lo, first - window), torch.minimum(hi, last + window + 1)
    tiles = first // block
    visit = (tiles[None, :] >= lo[:, None] // block) & (tiles[None, :] < -(-hi[:, None] // block))
    # Full tiles: whole, inside one sequence each, the same one, and (local layers) every pair in reach.
    whole_one_seq = (last - first == block - 1) & (seq[first] == seq[last])
    full = whole_one_seq[:, None] & whole_one_seq[None, :] & (seq[first][:, None] == seq[first][None, :])
    if window is not None:
        reach = torch.maximum(last[:, None] - first[None, :], last[None, :] - first[:, None])
        full &= reach <= window
    partial = visit & ~full

    def ordered(dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # flex's (count, indices) form
        counts = dense.sum(-1, dtype=torch.int32)
        indices = torch.argsort(dense.to(torch.int32), dim=-1, descending=True, stable=True)
        return counts[None, None], indices.to(torch.int32)[None, None]

    if window is None:

        def mask_mod(b, h, q_idx, kv_idx):
            return seq[q_idx] == seq[kv_idx]
    else:

        def mask_mod(b, h, q_idx, kv_idx):
            return (seq[q_idx] == seq[kv_idx]) & ((pos[q_idx] - pos[kv_idx]).abs() <= window)

    return BlockMask.from_kv_blocks(
        *ordered(partial), *ordered(full), BLOCK_SIZE=block, mask_mod=mask_mod, seq_lengths=(n, n)
    )


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
    block_mask = batch.cached(("flex_mask", window), lambda: flex_block_mask(batch, window))
    # Compiled on CUDA (fused kernels with a backward); eager on CPU, where flex only runs forward.
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
    """The one place that picks a kernel: FlashAttention-2 on CUDA in fp16/bf16 when installed, else
    flex_attention (compiled, block-sparse, with a backward) on CUDA, else SDPA (every CPU run; CUDA
    runs with attention dropout, which flex lacks)."""
    if q.is_cuda:
        if q.dtype in (torch.float16, torch.bfloat16) and flash_available():
            return flash_attention(q, k, v, batch, window, scale, dropout_p)
        if not dropout_p:
            return flex_attention_varlen(q, k, v, batch, window, scale)
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
