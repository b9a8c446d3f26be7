"""Training throughput: our packed, sparse-prediction step vs transformers' padded ModernBERT step.

    python bench/train.py [--shapes tiny mini mmbert-small] [--out bench/results/train.json]

Both sides train on the same documents, in the same order, with the same number of real tokens per
optimizer step, their steps interleaved (so that a busy machine slows both alike) (documents of 32-510 tokens, the mix of `../shared/reference/environment.md`):

- ours: `mmbert.data.packing.Packer` packs the documents into rows of `seq_len` (no padding, attention
  kept inside each document through `cu_seqlens`), `mmbert.data.masking.mask_tokens` masks them,
  `MmBertForMaskedLM` runs the head and the decoder only on the masked positions, and the optimizer is
  the trainer's (`mmbert.optim.build_optimizer`: StableAdamW). The model's `compile` setting is "auto"
  (compiled layer regions and a fused optimizer step where they pay, `mmbert.model.compiles`).
- ours_eager: the same with `compile="off"` (eager layers, optimi's own step), to show what compiling
  gives in the same run.
- ours_full_decoder: ours with the head and the 256k decoder on every position (full logits, the loss
  over the masked ones, as transformers does), to show what sparse prediction gives in the same run.
- baseline: `DataCollatorForLanguageModeling` pads each micro-batch of documents to its longest and
  masks it, and transformers' `ModernBertForMaskedLM` (sdpa attention, its default full-vocabulary
  output) trains with `torch.optim.AdamW`, as a stock Hugging Face `Trainer` run would.

Reported per side: real (non-pad) tokens per second and MFU as the median over the timed steps with
their min-max, time spent preparing batches (data wait), where MFU = useful FLOPs / time / peak, the
useful FLOPs of a step (`mmbert.flops.train_flops`) are those of the real tokens with sparse
prediction, the same numerator for every side, and the peak is this machine's fp32 matmul rate
measured in the same run (2048^3 matmuls, median of 9). The "mini" shape is the demo's model
(`recipes/tiny.yaml`, first phase: 128-token rows, 2,048 tokens per step).

`OursSide` and `HFSide` also take a CUDA device (bf16 autocast, as the trainer): `bench/gpu.py` uses them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmbert.config import MmBertConfig
from mmbert.data.masking import mask_tokens
from mmbert.data.packing import Packer
from mmbert.flops import measure_matmul_flops, train_flops
from mmbert.io import atomic_write_text
from mmbert.model import MmBertForMaskedLM
from mmbert.optim import build_optimizer
from mmbert.recipe import TrainSpec

# shape -> (vocab, seq_len, tokens per optimizer step, micro-batch tokens, timed steps)
SHAPES = {
    # A tiny step is ~1 s: many of them, or another process's burst decides the figure.
    "tiny": dict(vocab_size=1000, seq_len=512, step_tokens=8192, micro_tokens=8192, steps=30),
    # The mini preset with the demo recipe's first phase (recipes/tiny.yaml): 8k vocabulary, 16 rows of 128.
    "mini": dict(vocab_size=8192, seq_len=128, step_tokens=2048, micro_tokens=16_384, steps=30),
    "mmbert-small": dict(vocab_size=256_000, seq_len=512, step_tokens=4096, micro_tokens=1024, steps=5),
}
MASK_RATE = 0.3
CPU = torch.device("cpu")


class Doc:
    """What the packer reads: a source, a language, the length and the token ids (no special tokens)."""

    def __init__(self, tokens: np.ndarray) -> None:
        self.source, self.lang, self.tokens, self.length = "bench", "und", tokens, len(tokens)


def make_documents(n_tokens: int, vocab: int, seq_len: int, seed: int = 0) -> list[np.ndarray]:
    """Random documents of 32..seq_len-2 ids (bos/eos make a document at most one row)."""
    rng = np.random.default_rng(seed)
    docs, total = [], 0
    while total < n_tokens:
        n = int(rng.integers(32, seq_len - 1))
        docs.append(rng.integers(5, vocab, size=n).astype(np.int64))
        total += n + 2
    return docs


def step_groups(docs: list[np.ndarray], step_tokens: int) -> list[list[np.ndarray]]:
    """Consecutive documents grouped into optimizer steps of about `step_tokens` real tokens."""
    groups, cur, n = [], [], 0
    for d in docs:
        cur.append(d)
        n += d.size + 2
        if n >= step_tokens:
            groups.append(cur)
            cur, n = [], 0
    return groups


def autocast(device: torch.device):
    """The trainer's precision: bf16 autocast on CUDA, fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class OursSide:
    """Our trainer's step: packer rows with `cu_seqlens`, sparse prediction (or, with `sparse=False`, the
    decoder on every position), StableAdamW."""

    def __init__(
        self, config: MmBertConfig, shape: dict, device: torch.device = CPU, sparse: bool = True
    ) -> None:
        torch.manual_seed(0)
        self.config, self.device, self.sparse = config, device, sparse
        self.model = MmBertForMaskedLM(config).to(device)
        train = TrainSpec(lr=1e-4)
        self.optimizer = build_optimizer(self.model, train, train.lr, train.weight_decay)
        self.generator = torch.Generator().manual_seed(0)
        self.packer = Packer()
        self.seq_len = shape["seq_len"]
        self.micro_rows = max(1, shape["micro_tokens"] // shape["seq_len"])

    def step(self, group: list[np.ndarray]) -> dict:
        t0 = time.perf_counter()
        # The step's documents, packed: ceil(real tokens / seq_len) rows, as the trainer asks for.
        stream = iter(Doc(d) for d in group)
        rows = math.ceil(sum(d.size + 2 for d in group) / self.seq_len)
        micro = []
        while rows > 0:
            batch = self.packer.next_batch(stream, min(rows, self.micro_rows), self.seq_len)
            rows -= self.micro_rows
            if batch is None:
                break
            ids, labels = mask_tokens(batch.input_ids, MASK_RATE, self.generator, self.config.vocab_size)
            micro.append((ids, labels, batch.cu_seqlens, batch.max_seqlen))
        t_data = time.perf_counter() - t0
        n_masked = sum(int((lab != -100).sum()) for _, lab, _, _ in micro)
        flops = 0.0
        for ids, labels, cu, max_seqlen in micro:
            m = int((labels != -100).sum())
            flops += train_flops(self.config, torch.diff(cu).tolist(), m)
            ids, labels, cu = (t.to(self.device, non_blocking=True) for t in (ids, labels, cu))
            with autocast(self.device):
                if self.sparse:
                    loss = self.model(input_ids=ids, cu_seqlens=cu, max_seqlen=max_seqlen, labels=labels).loss
                else:
                    logits = self.model(input_ids=ids, cu_seqlens=cu, max_seqlen=max_seqlen).logits
                    loss = F.cross_entropy(logits.float(), labels)  # -100 (unmasked) is ignored
            (loss * m / n_masked).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sync(self.device)
        real = sum(int(ids.numel()) for ids, *_ in micro)
        return {
            "tokens": real,
            "time": time.perf_counter() - t0,
            "data": t_data,
            "flops": flops,
            "padded": real,
        }


def _word_tokenizer(vocab: int):
    """A word-level fast tokenizer with `vocab` ids and the mmBERT special layout (for the collator)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    words = {w: i for i, w in enumerate(specials)}
    words.update({f"t{i}": i for i in range(len(specials), vocab)})
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        mask_token="<mask>",
    )  # fmt: skip


class HFSide:
    """The stock path: collator-padded micro-batches, transformers' ModernBERT (full output), AdamW."""

    def __init__(self, config: MmBertConfig, shape: dict, device: torch.device = CPU) -> None:
        from transformers import DataCollatorForLanguageModeling, ModernBertConfig, ModernBertForMaskedLM

        torch.manual_seed(0)
        self.config, self.device = config, device
        self.model = ModernBertForMaskedLM(
            ModernBertConfig(**config.to_hf_dict(), attn_implementation="sdpa")
        ).to(device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=8e-5
        )
        self.collator = DataCollatorForLanguageModeling(
            _word_tokenizer(config.vocab_size), mlm_probability=MASK_RATE, seed=0
        )
        self.micro_tokens = shape["micro_tokens"]

    def step(self, group: list[np.ndarray]) -> dict:
        t0 = time.perf_counter()
        # Micro-batches of documents holding about `micro_tokens` real tokens, each padded to its longest.
        micro, cur, n = [], [], 0
        for d in group:
            cur.append({"input_ids": [2, *d.tolist(), 1]})
            n += d.size + 2
            if n >= self.micro_tokens:
                micro.append(self.collator(cur))
                cur, n = [], 0
        if cur:
            micro.append(self.collator(cur))
        t_data = time.perf_counter() - t0
        n_masked = sum(int((b["labels"] != -100).sum()) for b in micro)
        flops = 0.0
        for b in micro:
            m = int((b["labels"] != -100).sum())
            flops += train_flops(self.config, b["attention_mask"].sum(1).tolist(), m)
            inputs = {
                k: b[k].to(self.device, non_blocking=True) for k in ("input_ids", "attention_mask", "labels")
            }
            with autocast(self.device):
                out = self.model(**inputs)
            (out.loss * m / n_masked).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sync(self.device)
        return {
            "tokens": sum(int(b["attention_mask"].sum()) for b in micro),
            "time": time.perf_counter() - t0,
            "data": t_data,
            "flops": flops,
            "padded": sum(b["attention_mask"].numel() for b in micro),
        }


def run_interleaved(sides: dict, groups: list, warmup: int) -> dict[str, list[dict]]:
    """Alternate the sides step by step (and which goes first), so all see the same machine load."""
    steps: dict[str, list[dict]] = {name: [] for name in sides}
    names = list(sides)
    for i, group in enumerate(groups):
        for name in names if i % 2 == 0 else names[::-1]:
            r = sides[name].step(group)
            if i >= warmup:
                steps[name].append(r)
    return steps


def summarize(steps: list[dict], peak: float) -> dict:
    """Per-step rates: the median over the timed steps with min-max; totals for the data wait and padding."""
    tok_s = [r["tokens"] / r["time"] for r in steps]
    mfu = [r["flops"] / r["time"] / peak for r in steps]
    total = {key: sum(r[key] for r in steps) for key in ("tokens", "time", "data", "padded")}
    return {
        "real_tokens_per_s": statistics.median(tok_s),
        "real_tokens_per_s_min_max": [min(tok_s), max(tok_s)],
        "mfu": statistics.median(mfu),
        "mfu_min_max": [min(mfu), max(mfu)],
        "step_s": statistics.median(r["time"] for r in steps),
        "data_wait_fraction": total["data"] / total["time"],
        "pad_fraction": 1 - total["tokens"] / total["padded"],
        "steps": len(steps),
    }


SIDES = {
    "ours": lambda config, shape: OursSide(config, shape),
    "ours_eager": lambda config, shape: OursSide(config.replace(compile="off"), shape),
    "ours_full_decoder": lambda config, shape: OursSide(config, shape, sparse=False),
    "transformers_padded": lambda config, shape: HFSide(config, shape),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--sides", nargs="+", default=list(SIDES), choices=list(SIDES))
    p.add_argument("--steps", type=int, help="timed steps per side (default: per shape, at least 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps (compilation happens here)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    start = time.monotonic()
    peak = measure_matmul_flops(n=2048, reps=9)
    load = os.getloadavg()[0]
    print(
        f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s, {torch.get_num_threads()} threads, load {load:.1f}",
        flush=True,
    )
    results = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "peak_flops": peak, "load_average_1min": load},
        "command": "python bench/train.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "mask_rate": MASK_RATE,
        "shapes": {},
    }  # fmt: skip
    rows = []
    for name in args.shapes:
        shape = dict(SHAPES[name])
        steps = args.steps or shape["steps"]
        config = MmBertConfig.preset(name, vocab_size=shape["vocab_size"], attn_backend="auto")
        docs = make_documents(
            shape["step_tokens"] * (steps + args.warmup + 1), shape["vocab_size"], shape["seq_len"]
        )
        groups = step_groups(docs, shape["step_tokens"])[: steps + args.warmup]
        entry = {"seq_len": shape["seq_len"], "step_tokens": shape["step_tokens"], "peak_flops": peak}
        print(f"{name}: {steps} timed steps per side, interleaved ...", flush=True)
        sides = {side: SIDES[side](config, shape) for side in args.sides}
        for side, r in run_interleaved(sides, groups, args.warmup).items():
            entry[side] = summarize(r, peak)
            rows.append((name, side, entry[side]))
        del sides
        if "ours" in entry and "transformers_padded" in entry:
            entry["speedup"] = (
                entry["ours"]["real_tokens_per_s"] / entry["transformers_padded"]["real_tokens_per_s"]
            )
        results["shapes"][name] = entry
    print()
    print(
        f"{'shape':<13} {'side':<20} {'real tok/s (min-max)':>24} {'MFU (min-max)':>20} {'data wait':>10} {'pad':>6}"
    )
    for name, side, r in rows:
        lo, hi = r["real_tokens_per_s_min_max"]
        mlo, mhi = r["mfu_min_max"]
        print(
            f"{name:<13} {side:<20} {r['real_tokens_per_s']:>8.0f} ({lo:.0f}-{hi:.0f}) "
            f"{100 * r['mfu']:>8.1f}% ({100 * mlo:.0f}-{100 * mhi:.0f}%) "
            f"{100 * r['data_wait_fraction']:>9.2f}% {100 * r['pad_fraction']:>5.1f}%"
        )
    for name, entry in results["shapes"].items():
        if "speedup" in entry:
            print(f"{name}: ours / padded transformers = {entry['speedup']:.2f}x")
        for other in ("ours_eager", "ours_full_decoder"):
            if other in entry and "ours" in entry:
                ratio = entry["ours"]["real_tokens_per_s"] / entry[other]["real_tokens_per_s"]
                entry[f"speedup_vs_{other}"] = ratio
                print(f"{name}: ours / {other.replace('_', ' ')} = {ratio:.2f}x")
    results["seconds"] = time.monotonic() - start
    # Shapes not measured in this run keep their earlier entries.
    if args.out.exists():
        earlier = json.loads(args.out.read_text())
        results["shapes"] = {**earlier.get("shapes", {}), **results["shapes"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
