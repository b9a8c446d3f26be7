"""Where an inference forward's time goes: matmuls, attention, the rest (torch.profiler, CPU).

mmBERT-small (or `--preset`) on bench/inference.py's inputs (8 x 512, uniform or variable), `compile="auto"`,
fp32, random weights. Each operator's self time is put in one of three groups: the matmuls (mm, addmm,
bmm, linear), the attention kernel (scaled_dot_product_attention and its CPU flash kernel) and everything
else (compiled elementwise kernels, norms, copies, Python and dynamo overhead). The matmuls' rate is their
FLOPs (2 x the layers' matmul parameters per real token) over their time, against the fp32 matmul peak
measured beside the profile (the best of three 2048³ matmuls before and after, the higher one).

    python bench/profile_inference.py                       # 512 variable, 3 profiled forwards
    python bench/profile_inference.py --input uniform

Writes bench/results/profile_inference_{variable,uniform}.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import inference  # noqa: E402

from mmbert import MmBertConfig, MmBertModel  # noqa: E402
from mmbert.io import atomic_write_text  # noqa: E402
from mmbert.process import retain_freed_memory  # noqa: E402

MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul"}
ATTENTION_OPS = {"aten::_scaled_dot_product_flash_attention_for_cpu", "aten::scaled_dot_product_attention",
                 "aten::_scaled_dot_product_attention_math"}  # fmt: skip


def peak_flops(n: int = 2048, tries: int = 3) -> float:
    a = torch.ones(n, n)
    best = float("inf")
    for _ in range(tries):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mmbert-small")
    ap.add_argument("--input", choices=["uniform", "variable"], default="variable")
    ap.add_argument("--forwards", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="default: bench/results/profile_inference_INPUT.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as bench/inference.py runs
    cfg = MmBertConfig.preset(args.preset)
    torch.manual_seed(0)
    model = MmBertModel(cfg).eval()
    ids, mask, lengths = inference.make_inputs(args.input, 512, 8, cfg.vocab_size)
    with torch.inference_mode():
        for _ in range(2):  # warm-up: compiles the regions
            model(ids, attention_mask=mask)
        before = peak_flops()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(args.forwards):
                model(ids, attention_mask=mask)
            wall = (time.perf_counter() - start) / args.forwards
        peak = max(before, peak_flops())
    groups = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for event in prof.key_averages():
        group = (
            "matmul" if event.key in MATMUL_OPS else "attention" if event.key in ATTENTION_OPS else "other"
        )
        groups[group] += event.self_cpu_time_total / 1e6 / args.forwards  # seconds per forward
    total = sum(groups.values())
    h, i = cfg.hidden_size, cfg.intermediate_size
    matmul_flops = cfg.num_hidden_layers * 2 * (4 * h * h + 3 * h * i) * sum(lengths)
    result = {
        "preset": args.preset, "input": f"512 {args.input}", "real_tokens": sum(lengths),
        "forward_s": wall, "profiled_s": total, "peak_gflops": peak / 1e9,
        "share": {g: t / total for g, t in groups.items()},
        "matmul_fraction_of_peak": matmul_flops / groups["matmul"] / peak,
        "mfu": sum(lengths) * inference.encoder_flops_per_token(cfg, lengths) / wall / peak,
        "command": "python bench/profile_inference.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }  # fmt: skip
    print(f"{args.preset} 512 {args.input}: {wall:.2f} s per forward, MFU {result['mfu']:.0%} "
          f"(peak {peak / 1e9:.0f} GFLOP/s) | matmuls {result['share']['matmul']:.0%} of the time at "
          f"{result['matmul_fraction_of_peak']:.0%} of the peak, attention {result['share']['attention']:.0%}, "
          f"other {result['share']['other']:.0%}")  # fmt: skip
    out = Path(args.out or Path(__file__).parent / "results" / f"profile_inference_{args.input}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
