"""Peak memory of one long-sequence forward: mmbert's encoder vs transformers' ModernBERT (same shape).

For each length, a fresh subprocess builds the mmBERT-small encoder (random weights, a small vocabulary
so that the embedding table does not dominate), runs one forward on a single sequence under
`inference_mode`, and reports the growth of its peak resident memory over what the model itself takes.
mmbert's local layers attend in blocks of `window` tokens and its global layers use SDPA's
memory-efficient CPU kernel, so the growth should be linear in length; transformers builds dense
(L x L) masks for both layer types.

    python bench/memory.py [--lengths 1024 2048 4096 8192]

Writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import resource, sys, torch
impl, length = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(2)
from mmbert import MmBertConfig, MmBertModel
cfg = MmBertConfig.preset("mmbert-small", vocab_size=4096)
if impl == "mmbert":
    model = MmBertModel(cfg).eval()
    run = lambda ids: model(ids)
else:
    from transformers import ModernBertConfig, ModernBertModel
    hf = {k: v for k, v in cfg.to_hf_dict().items() if k not in ("architectures", "model_type")}
    model = ModernBertModel(ModernBertConfig(**hf)).eval()
    model.config._attn_implementation = "sdpa"
    run = lambda ids: model(input_ids=ids, attention_mask=torch.ones_like(ids))
ids = torch.randint(5, 4096, (1, length))
with torch.inference_mode():
    run(ids[:, :16])  # warm-up: allocator and kernels, not the length under test
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(ids)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((peak - base) / 1024)
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory.json"))
    args = ap.parse_args(argv)
    rows = []
    print(f"{'length':>7} | {'mmbert MiB':>10} | {'transformers MiB':>16}")
    for length in args.lengths:
        row = {"length": length}
        for impl in ("mmbert", "transformers"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, impl, str(length)], capture_output=True, text=True, check=True
            )
            row[impl] = float(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{length:>7} | {row['mmbert']:>10.0f} | {row['transformers']:>16.0f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"command": "python bench/memory.py", "peak_growth_mib": rows}, indent=2) + "\n"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
