"""Inference throughput: mmbert's unpadded encoder vs transformers' ModernBERT (same weights) and XLM-R base.

Counts only real tokens, on the mmBERT paper's four inputs (512 tokens uniform / variable, 8192 tokens
uniform / variable), at mmBERT-small and mmBERT-base shapes, fp32, random weights, all models measured
side by side in one run (this machine is shared: compare ratios, not absolute figures). Also measures
this machine's fp32 matmul peak in the same run and reports model FLOPs utilization (MFU) on real tokens,
and the fill-mask path (decoder only at masked positions) against full-vocabulary logits.

    python bench/inference.py            # full table (several minutes on 2 cores)
    python bench/inference.py --quick    # smaller batches, small shape only

On a CUDA GPU the same script runs in bf16 (FlashAttention when installed, else SDPA).
Writes bench/results/inference.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from mmbert import MmBertConfig, MmBertForMaskedLM, MmBertModel
from mmbert.flops import measure_matmul_flops


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


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


def encoder_flops_per_token(cfg, lengths: list[int], layer_types: list[str], window: int | None) -> float:
    """Forward FLOPs per real token: 2 x matmul params + attention scores/values over the keys each token sees."""
    h, i = cfg["hidden"], cfg["intermediate"]
    dense = 2 * (4 * h * h + h * i * cfg["mlp_mult"])
    total_tokens = sum(lengths)
    attn = 0.0
    for lt in layer_types:
        keys = 0
        for n in lengths:
            if lt == "full_attention" or window is None:
                keys += n * n
            else:  # each token sees min(n, 2w+1) keys, fewer at the edges
                w = window
                keys += sum(min(n - 1, t + w) - max(0, t - w) + 1 for t in range(n))
        attn += 4 * h * keys / total_tokens
    return len(layer_types) * dense + attn


def time_fn(fn, device: str, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build_models(preset: str, device: str, dtype: torch.dtype):
    from transformers import ModernBertConfig, ModernBertModel

    cfg = MmBertConfig.preset(preset)
    torch.manual_seed(0)
    ours = MmBertModel(cfg).to(device=device, dtype=dtype).eval()
    hf_cfg = ModernBertConfig(
        **{k: v for k, v in cfg.to_hf_dict().items() if k not in ("architectures", "model_type")}
    )
    with torch.device("meta"):
        hf = ModernBertModel(hf_cfg)
    hf.to_empty(device=device)
    hf.rotary_emb.__init__(hf_cfg, device=device)  # its buffers are not in the state dict
    hf.load_state_dict(ours.state_dict())
    hf.to(dtype).eval()
    attn = "flash_attention_2" if device == "cuda" and _has_flash() else "sdpa"
    hf.config._attn_implementation = attn
    return cfg, ours, hf, attn


def build_xlmr(device: str, dtype: torch.dtype):
    from transformers import XLMRobertaConfig, XLMRobertaModel

    cfg = XLMRobertaConfig(vocab_size=250_002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072, max_position_embeddings=514)  # fmt: skip
    with torch.device("meta"):
        m = XLMRobertaModel(cfg, add_pooling_layer=False)
    m.to_empty(device=device)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.02)
        m.embeddings.register_buffer("position_ids", torch.arange(514, device=device)[None], persistent=False)
        m.embeddings.register_buffer(
            "token_type_ids", torch.zeros(1, 514, dtype=torch.long, device=device), persistent=False
        )
    m.config._attn_implementation = "sdpa"
    return m.to(dtype).eval()


def _has_flash() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="small shape, 512-token inputs only, smaller batches"
    )
    ap.add_argument("--presets", nargs="+", default=None)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "inference.json"))
    args = ap.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.set_num_threads(args.threads)
    presets = args.presets or (["mmbert-small"] if args.quick else ["mmbert-small", "mmbert-base"])
    # (name, seq_len, kind, batch on CPU, batch on GPU)
    inputs = [("512 uniform", 512, "uniform", 8, 64), ("512 variable", 512, "variable", 8, 64)]
    if not args.quick:
        inputs += [("8192 uniform", 8192, "uniform", 1, 8), ("8192 variable", 8192, "variable", 2, 8)]
    if args.quick:
        inputs = [(n, s, k, b // 2, g) for n, s, k, b, g in inputs]

    peak = measure_matmul_flops(2048, 5, device, dtype) / 1e9
    print(f"device {device} ({torch.cuda.get_device_name() if device == 'cuda' else platform.processor() or 'cpu'}), "
          f"{dtype}, {torch.get_num_threads()} threads, matmul peak {peak:.0f} GFLOP/s")  # fmt: skip
    rows = []
    xlmr = build_xlmr(device, dtype) if "mmbert-base" in presets else None
    for preset in presets:
        cfg, ours, hf, hf_attn = build_models(preset, device, dtype)
        shape = dict(hidden=cfg.hidden_size, intermediate=cfg.intermediate_size, mlp_mult=3)
        for name, seq_len, kind, cpu_batch, gpu_batch in inputs:
            batch = gpu_batch if device == "cuda" else cpu_batch
            ids, mask, lengths = make_inputs(kind, seq_len, batch, cfg.vocab_size)
            ids, mask = ids.to(device), mask.to(device)
            real = sum(lengths)
            flops = encoder_flops_per_token(shape, lengths, cfg.layer_types, cfg.window)
            result = {
                "preset": preset,
                "input": name,
                "batch": batch,
                "real_tokens": real,
                "padded_tokens": ids.numel(),
            }
            with torch.inference_mode():
                t_ours = time_fn(
                    lambda m=ours, ids=ids, mask=mask: m(ids, attention_mask=mask), device, args.reps
                )
                t_hf = time_fn(
                    lambda m=hf, ids=ids, mask=mask: m(input_ids=ids, attention_mask=mask), device, args.reps
                )
                result.update(
                    ours_tok_s=real / t_ours,
                    hf_tok_s=real / t_hf,
                    ours_mfu=real / t_ours * flops / (peak * 1e9),
                    hf_mfu_padded=ids.numel() / t_hf * encoder_flops_per_token(shape, [seq_len] * batch, cfg.layer_types, cfg.window) / (peak * 1e9),
                    hf_attn=hf_attn,
                )  # fmt: skip
                if xlmr is not None and preset == "mmbert-base" and seq_len <= 512:
                    # Its own vocabulary (250,002) and pad id (1); the same lengths.
                    ids = torch.where(mask.bool(), ids % 249_990 + 5, torch.ones_like(ids))
                    t_x = time_fn(
                        lambda ids=ids, mask=mask: xlmr(input_ids=ids, attention_mask=mask), device, args.reps
                    )
                    result["xlmr_tok_s"] = real / t_x
            rows.append(result)
            x = f" | XLM-R {result['xlmr_tok_s']:.0f} tok/s (ours {result['ours_tok_s'] / result['xlmr_tok_s']:.2f}x)" if "xlmr_tok_s" in result else ""  # fmt: skip
            print(f"{preset:13s} {name:14s} ours {result['ours_tok_s']:8.0f} tok/s (MFU {result['ours_mfu']:.0%}) | "
                  f"transformers {result['hf_tok_s']:8.0f} tok/s | ratio {result['ours_tok_s'] / result['hf_tok_s']:.2f}x{x}",
                  flush=True)  # fmt: skip
        del ours, hf

    # Fill-mask: the 256k-vocabulary decoder only at the masked positions vs full logits.
    cfg = MmBertConfig.preset("mmbert-small")
    torch.manual_seed(0)
    mlm = MmBertForMaskedLM(cfg).to(device=device, dtype=dtype).eval()
    ids, mask, lengths = make_inputs("variable", 512, 4, cfg.vocab_size, seed=1)
    ids, mask = ids.to(device), mask.to(device)
    pred = (torch.rand(ids.shape, device=device) < 0.15) & mask.bool()
    with torch.inference_mode():
        t_sel = time_fn(lambda: mlm(ids, attention_mask=mask, prediction_mask=pred), device, args.reps)
        t_full = time_fn(lambda: mlm(ids, attention_mask=mask), device, args.reps)
    fill = {
        "real_tokens": sum(lengths),
        "masked": int(pred.sum()),
        "selected_s": t_sel,
        "full_logits_s": t_full,
    }
    print(f"fill-mask (mmbert-small, 4 x 512 variable, 15% masked): decoder at masked positions {t_sel:.2f} s, "
          f"full logits {t_full:.2f} s ({t_full / t_sel:.1f}x)")  # fmt: skip

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": device, "dtype": str(dtype), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "matmul_peak_gflops": peak, "command": "python bench/inference.py" + (" --quick" if args.quick else "")}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "rows": rows, "fill_mask": fill}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
