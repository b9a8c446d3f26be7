"""Inference throughput: mmbert's unpadded encoder vs transformers' ModernBERT (same weights) and XLM-R base.

Counts only real tokens, on the mmBERT paper's four inputs (512 tokens uniform / variable, 8192 tokens
uniform / variable), at mmBERT-small and mmBERT-base shapes, fp32, random weights, all models measured
side by side in one run, their repetitions interleaved (this machine is shared: compare ratios, not
absolute figures). Each figure is the median over `--reps` (at least 5) repetitions, with the min-max.
Also measures this machine's fp32 matmul peak in the same run, in every round of repetitions (the best of
3 square matmuls), and reports model FLOPs utilization (MFU) on real tokens against the peak of the same
round; and the fill-mask path (decoder only at masked positions) against full-vocabulary logits.

The process keeps freed tensor memory for reuse (`mmbert.process.retain_freed_memory`, as the `mmbert`
commands that run models do; all sides run under it; `--no-retain-freed-memory` leaves glibc's defaults);
each row records `ours`'s minor page faults and system seconds per call.

Sides: `ours` (the model's `compile="auto"`: compiled layer regions where they pay,
`mmbert.model.compiles`), `ours_eager` (`compile="off"`, the same weights; its largest difference from
`ours` is reported), transformers' `ModernBertModel` (SDPA, its best CPU attention; it pads) and XLM-R
base (512-token inputs, its limit).

    python bench/inference.py            # full table (several minutes on 2 cores)
    python bench/inference.py --quick    # smaller batches, small shape only

On a CUDA GPU the same script runs in bf16 (`bench/gpu.py` runs it there, with the GPU's batches).
Writes bench/results/inference.json.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mmbert import MmBertConfig, MmBertForMaskedLM, MmBertModel
from mmbert.flops import doc_attention_pairs, measure_matmul_flops
from mmbert.io import atomic_write_text
from mmbert.process import retain_freed_memory

# (name, seq_len, kind, batch on CPU, batch on GPU)
INPUTS = [
    ("512 uniform", 512, "uniform", 8, 64),
    ("512 variable", 512, "variable", 8, 64),
    ("8192 uniform", 8192, "uniform", 1, 8),
    ("8192 variable", 8192, "variable", 2, 8),
]


# The side of the square matmul that measures the peak (as at the start of the run).
PEAK_N = {"cpu": 2048, "cuda": 8192}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class PeakProbe:
    """The matmul peak now: each call records the best rate of 3 square matmuls (one of them alone swings
    by a third on this shared host, and a low peak would inflate the MFU measured against it)."""

    def __init__(self, device: str, dtype: torch.dtype, tries: int = 3):
        self.square = torch.ones(PEAK_N[device], PEAK_N[device], device=device, dtype=dtype)
        self.device, self.tries, self.rates = device, tries, []

    def __call__(self) -> None:
        best = float("inf")
        for _ in range(self.tries):
            sync(self.device)
            t = time.perf_counter()
            self.square @ self.square
            sync(self.device)
            best = min(best, time.perf_counter() - t)
        self.rates.append(2 * self.square.shape[0] ** 3 / best)


def make_inputs(kind: str, seq_len: int, batch: int, vocab: int, seed: int = 0):
    """Right-padded ids + mask. Variable lengths are uniform in [seq_len/16, seq_len] (about 47% padding)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "uniform":
        lengths = [seq_len] * batch
    else:
        lengths = torch.randint(seq_len // 16, seq_len + 1, (batch,), generator=g).tolist()
        lengths[0] = seq_len  # the padded width is the longest sequence
    ids = torch.randint(5, vocab, (batch, seq_len), generator=g)
    mask = torch.zeros(batch, seq_len, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids[mask == 0] = 0
    return ids, mask, lengths


def encoder_flops_per_token(cfg: MmBertConfig, lengths: list[int]) -> float:
    """Forward FLOPs per real token: 2 x matmul params + attention scores/values over the keys each token sees."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    dense = 2 * (4 * h * h + 3 * h * i)
    pairs = {
        "full_attention": doc_attention_pairs(lengths, None),
        "sliding_attention": doc_attention_pairs(lengths, cfg.window),
    }
    attn = sum(4 * h * pairs[lt] for lt in cfg.layer_types) / sum(lengths)
    return cfg.num_hidden_layers * dense + attn


def xlmr_ceiling(cfg: MmBertConfig, xlmr_config, lengths: list[int], padded_width: int) -> float:
    """Ours / XLM-R in tokens/s if both ran at the same MFU: XLM-R's FLOPs over the padded batch (every
    position sees the padded width) / ours over the real tokens. With no padding, 1 / (1.3x the FLOPs)."""
    h, i, layers = xlmr_config.hidden_size, xlmr_config.intermediate_size, xlmr_config.num_hidden_layers
    padded = len(lengths) * padded_width
    xlmr = padded * layers * (2 * (4 * h * h + 2 * h * i) + 4 * h * padded_width)
    return xlmr / (sum(lengths) * encoder_flops_per_token(cfg, lengths))


def time_interleaved(fns: dict[str, Callable], device: str, reps: int) -> dict[str, list[float]]:
    """Seconds per call of each function: one warm-up each, then `reps` rounds, the order alternating."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(reps):
        for name in names if r % 2 == 0 else names[::-1]:
            sync(device)
            t = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return times


def page_faults(fn: Callable, calls: int = 2) -> tuple[float, float]:
    """Minor page faults and system seconds per call of `fn` (this process, Linux): what the allocator's
    handling of freed memory costs (see `--no-retain-freed-memory`)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(calls):
        fn()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_minflt - before.ru_minflt) / calls, (after.ru_stime - before.ru_stime) / calls


def rate(n: float, times: list[float]) -> dict[str, float | list[float]]:
    """n / time: the median over the repetitions and the min-max."""
    rates = [n / t for t in times]
    return {"median": statistics.median(rates), "min_max": [min(rates), max(rates)]}


def build_models(preset: str, device: str, dtype: torch.dtype, **overrides):
    """Ours (compile "auto"), ours with compile off, and transformers' ModernBertModel: the same weights."""
    from transformers import ModernBertConfig, ModernBertModel  # measured-slow import (5 s), benches only

    cfg = MmBertConfig.preset(preset, **overrides)
    torch.manual_seed(0)
    ours = MmBertModel(cfg).to(device=device, dtype=dtype).eval()
    eager = MmBertModel(cfg.replace(compile="off")).to(device=device, dtype=dtype).eval()
    eager.load_state_dict(ours.state_dict())
    hf_cfg = ModernBertConfig(
        **{k: v for k, v in cfg.to_hf_dict().items() if k not in ("architectures", "model_type")}
    )
    with torch.device("meta"):
        hf = ModernBertModel(hf_cfg)
    hf.to_empty(device=device)
    hf.rotary_emb.__init__(hf_cfg, device=device)  # its buffers are not in the state dict
    hf.load_state_dict(ours.state_dict())
    hf.to(dtype).eval()
    attn = "flash_attention_2" if device == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"
    hf.config._attn_implementation = attn
    return cfg, ours, eager, hf, attn


def build_xlmr(device: str, dtype: torch.dtype, **sizes):
    """XLM-R base (or `sizes`), random weights."""
    from transformers import XLMRobertaConfig, XLMRobertaModel  # measured-slow import, benches only

    shape = dict(vocab_size=250_002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=514)  # fmt: skip
    cfg = XLMRobertaConfig(**{**shape, **sizes})
    positions = cfg.max_position_embeddings
    with torch.device("meta"):
        m = XLMRobertaModel(cfg, add_pooling_layer=False)
    m.to_empty(device=device)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.02)
        m.embeddings.register_buffer(
            "position_ids", torch.arange(positions, device=device)[None], persistent=False
        )
        m.embeddings.register_buffer(
            "token_type_ids", torch.zeros(1, positions, dtype=torch.long, device=device), persistent=False
        )
    m.config._attn_implementation = "sdpa"
    return m.to(dtype).eval()


def measure(
    preset: str,
    inputs: list[tuple[str, int, str, int]],
    device: str,
    dtype: torch.dtype,
    reps: int,
    xlmr=None,
    **overrides,
) -> list[dict]:
    """One row per input (name, seq_len, kind, batch): real tokens/s of every side, MFU, output differences."""
    cfg, ours, eager, hf, hf_attn = build_models(preset, device, dtype, **overrides)
    rows = []
    for name, seq_len, kind, batch in inputs:
        ids, mask, lengths = make_inputs(kind, seq_len, batch, cfg.vocab_size)
        ids, mask = ids.to(device), mask.to(device)
        real = sum(lengths)
        sides = {
            "ours": functools.partial(ours, ids, attention_mask=mask),
            "ours_eager": functools.partial(eager, ids, attention_mask=mask),
            "transformers": functools.partial(hf, input_ids=ids, attention_mask=mask),
        }
        if xlmr is not None and seq_len <= xlmr.config.max_position_embeddings - 2:
            # Its own vocabulary and pad id (1); the same lengths.
            x_ids = torch.where(mask.bool(), ids % (xlmr.config.vocab_size - 12) + 5, torch.ones_like(ids))
            sides["xlmr"] = functools.partial(xlmr, input_ids=x_ids, attention_mask=mask)
        # The matmul peak, measured in every round beside the models: this host's rate drifts by a third
        # within a minute, so each round's MFU is taken against the peak of that round.
        sides["matmul_peak"] = probe = PeakProbe(device, dtype)
        with torch.inference_mode():
            times = time_interleaved(sides, device, reps)
            del times["matmul_peak"]
            peaks = probe.rates[-reps:]
            diff = (
                ours(ids, attention_mask=mask).last_hidden_state
                - eager(ids, attention_mask=mask).last_hidden_state
            )
            faults = page_faults(sides["ours"]) if device == "cpu" else None
        flops = encoder_flops_per_token(cfg, lengths)
        row = {"preset": preset, "input": name, "batch": batch, "real_tokens": real, "padded_tokens": ids.numel(),
               "hf_attn": hf_attn, "reps": reps, "ours_vs_eager_max_abs_diff": diff[mask.bool()].abs().max().item()}  # fmt: skip
        for side, t in times.items():
            row[f"{side}_tok_s"] = rate(real, t)
        if faults is not None:
            row["ours_page_faults_per_call"], row["ours_system_s_per_call"] = faults
        row["matmul_peak_gflops"] = {
            "median": statistics.median(peaks) / 1e9,
            "min_max": [min(peaks) / 1e9, max(peaks) / 1e9],
        }
        for side in ("ours", "ours_eager"):
            mfu = [real * flops / t / p for t, p in zip(times[side], peaks, strict=True)]
            row[f"{side}_mfu"] = {"median": statistics.median(mfu), "min_max": [min(mfu), max(mfu)]}
        if "xlmr" in sides:
            row["xlmr_ceiling"] = xlmr_ceiling(cfg, xlmr.config, lengths, seq_len)
        rows.append(row)
        x = (f" | XLM-R {row['xlmr_tok_s']['median']:.0f} ({row['ours_tok_s']['median'] / row['xlmr_tok_s']['median']:.2f}x, "
             f"ceiling at equal MFU {row['xlmr_ceiling']:.2f}x)" if "xlmr_tok_s" in row else "")  # fmt: skip
        print(f"{preset:13s} {name:14s} ours {row['ours_tok_s']['median']:8.0f} tok/s (MFU {row['ours_mfu']['median']:.0%}, "
              f"eager {row['ours_eager_mfu']['median']:.0%}) | transformers {row['transformers_tok_s']['median']:8.0f} "
              f"({row['ours_tok_s']['median'] / row['transformers_tok_s']['median']:.2f}x){x}", flush=True)  # fmt: skip
    return rows


def fill_mask(device: str, dtype: torch.dtype, reps: int) -> dict:
    """The 256k-vocabulary decoder only at the masked positions vs full logits (mmBERT-small)."""
    cfg = MmBertConfig.preset("mmbert-small")
    torch.manual_seed(0)
    mlm = MmBertForMaskedLM(cfg).to(device=device, dtype=dtype).eval()
    ids, mask, lengths = make_inputs("variable", 512, 4, cfg.vocab_size, seed=1)
    ids, mask = ids.to(device), mask.to(device)
    pred = (torch.rand(ids.shape, device=device) < 0.15) & mask.bool()
    with torch.inference_mode():
        times = time_interleaved(
            {
                "selected": lambda: mlm(ids, attention_mask=mask, prediction_mask=pred),
                "full": lambda: mlm(ids, attention_mask=mask),
            },
            device,
            reps,
        )
    sel, full = statistics.median(times["selected"]), statistics.median(times["full"])
    print(f"fill-mask (mmbert-small, 4 x 512 variable, 15% masked): decoder at masked positions {sel:.2f} s, "
          f"full logits {full:.2f} s ({full / sel:.1f}x)")  # fmt: skip
    return {"real_tokens": sum(lengths), "masked": int(pred.sum()), "selected_s": sel, "full_logits_s": full,
            "selected_s_min_max": [min(times["selected"]), max(times["selected"])],
            "full_logits_s_min_max": [min(times["full"]), max(times["full"])]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="small shape, 512-token inputs only, smaller batches"
    )
    ap.add_argument("--presets", nargs="+", default=None)
    ap.add_argument("--inputs", nargs="+", default=None, help="input names, e.g. '512 uniform'")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-fill-mask", dest="fill_mask", action="store_false")
    ap.add_argument(
        "--no-retain-freed-memory", dest="retain", action="store_false",
        help="leave glibc's defaults (freed activations go back to the kernel; see mmbert.process)",
    )  # fmt: skip
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "inference.json"))
    args = ap.parse_args(argv)
    if args.reps < 5:
        ap.error("--reps must be at least 5 (figures are medians with their min-max)")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.set_num_threads(args.threads)
    presets = args.presets or (["mmbert-small"] if args.quick else ["mmbert-small", "mmbert-base"])
    inputs = [(n, s, k, g if device == "cuda" else b) for n, s, k, b, g in INPUTS]
    if args.quick:
        inputs = [(n, s, k, max(1, b // 2)) for n, s, k, b in inputs if s == 512]
    if args.inputs:
        inputs = [i for i in inputs if i[0] in args.inputs]

    # As the `mmbert` commands that run models do; every side runs under it.
    retained = retain_freed_memory() if args.retain else False
    start = time.monotonic()
    peak = measure_matmul_flops(PEAK_N[device], 5, device, dtype)
    load = os.getloadavg()[0]
    print(f"device {device} ({torch.cuda.get_device_name() if device == 'cuda' else platform.processor() or 'cpu'}), "
          f"{dtype}, {torch.get_num_threads()} threads, matmul peak {peak / 1e9:.0f} GFLOP/s, load {load:.1f}")  # fmt: skip
    rows = []
    xlmr = build_xlmr(device, dtype) if "mmbert-base" in presets else None
    for preset in presets:
        rows += measure(preset, inputs, device, dtype, args.reps, xlmr if preset == "mmbert-base" else None)
    fill = fill_mask(device, dtype, args.reps) if args.fill_mask else None
    meta = {"device": device, "dtype": str(dtype), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "matmul_peak_gflops": peak / 1e9, "load_average_1min": load, "retain_freed_memory": retained, "seconds": time.monotonic() - start,
            "command": "python bench/inference.py " + " ".join(argv if argv is not None else sys.argv[1:])}  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"meta": meta, "rows": rows, "fill_mask": fill}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
