"""The GPU check in one command: attention parity, training and inference throughput, memory, DDP.

    python bench/gpu.py              # on a CUDA GPU, bf16; ends within --deadline (400 s) + one section
    python bench/gpu.py --smoke      # tiny shapes on any device, seconds (the test suite runs it on CPU)
    make bench-gpu                   # the first line, with PYTHONPATH=src

Prints one table and writes it as JSON (`--out`, default bench/results/gpu.json), rewritten after every
row, so a run killed at its time limit keeps what it printed; the exit status is 1 when a check fails or a
section raises (the table still prints). Sections, run cheapest first (parity, ddp, train, memory,
inference), each skipped (and listed as skipped) once the deadline has passed:

1. parity: each attention backend that runs here (`sdpa`, `flex`, `flash` when importable) against
   `reference` (fp32) on mixed sequence lengths with a window shorter than the longest ones and without
   one; fp32 and bf16 on CUDA; forward, and backward (dq, dk, dv) wherever the backend has one (flex has
   none on CPU). The figure is max |error| / max |reference|.
2. train: `bench/train.py`'s two sides on the same documents, steps interleaved, bf16 autocast on CUDA:
   ours (packed rows, `auto` attention = flex compiled with the document + sliding-window block mask, or
   FlashAttention-2 when installed; compiled layer regions; the decoder only at masked positions;
   StableAdamW) and transformers' `ModernBertForMaskedLM` (SDPA) on the same documents padded, with its
   collator and AdamW. Real tokens/s and MFU against the bf16 matmul peak measured in this run (median
   over the timed steps, with min-max). Target: mmBERT-base at least 1.5x transformers.
3. inference: `bench/inference.py` on the paper's four inputs (512 and 8192 tokens, uniform and
   variable; batches 64 and 8), ours against transformers' `ModernBertModel` and XLM-R base (512 only),
   bf16 weights. Targets: variable 512 at least 2x transformers; mmBERT-base at or above the paper's
   Figure 3 (about 103K tokens/s, GPU unnamed).
4. memory: peak allocated memory of one training step on one 8192-token document (ours and
   transformers).
5. ddp: one step of a single-process process group (NCCL on CUDA, gloo on CPU) through
   `DistributedDataParallel`, as `mmbert.distributed.wrap_model` wraps it: loss and gradients against the
   unwrapped model's.

On a machine lent by the `device` tool (torch 2.11, CUDA, Triton, transformers; no network, no
torch-optimi), carry torch-optimi as a wheel. Here, once:

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: -d .whl torch-optimi==0.3.3

then one call with carry [".whl"] and timeout_s 590 (the sections' first compiles are not measured yet:
the deadline leaves about three minutes for the last section that starts):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
    PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 python3 bench/gpu.py --out $OUT/gpu.json 2>&1 | tee $OUT/gpu.log
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
from torch.nn.parallel import DistributedDataParallel

# bench/train.py and bench/inference.py: the sides and inputs measured here are theirs.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import inference  # noqa: E402
import train  # noqa: E402

from mmbert.attention import BACKENDS, VarlenBatch, flash_available, reference_attention  # noqa: E402
from mmbert.config import MmBertConfig  # noqa: E402
from mmbert.data.masking import mask_tokens  # noqa: E402
from mmbert.data.packing import Packer  # noqa: E402
from mmbert.flops import measure_matmul_flops  # noqa: E402
from mmbert.io import atomic_write_text  # noqa: E402
from mmbert.model import MmBertForMaskedLM  # noqa: E402

PAPER_BASE_TOK_S = 103_000  # mmBERT paper, Figure 3: mmBERT-base, variable-length 512 (GPU unnamed)


@dataclasses.dataclass
class Plan:
    """The sizes of one run: the full GPU check, or the smoke test's tiny ones."""

    presets: list[str]
    overrides: dict  # model config overrides (the smoke test's vocabulary)
    parity_lengths: list[int]
    parity_heads: int
    parity_dim: int
    window: int
    train_shape: dict  # bench/train.py's shape keys
    train_steps: int
    train_warmup: int
    inputs: list[tuple[str, int, str, int]]  # bench/inference.py's (name, seq_len, kind, batch)
    xlmr: dict  # XLM-R sizes (empty: base)
    memory_tokens: int
    reps: int


FULL = Plan(
    presets=["mmbert-small", "mmbert-base"],
    overrides={},
    parity_lengths=[1000, 3, 130, 1, 517, 64, 300, 2000],
    parity_heads=12,
    parity_dim=64,
    window=64,
    train_shape=dict(vocab_size=256_000, seq_len=1024, step_tokens=32_768, micro_tokens=8192),
    train_steps=5,
    train_warmup=3,
    inputs=[(n, s, k, gpu) for n, s, k, _, gpu in inference.INPUTS],
    xlmr={},
    memory_tokens=8192,
    reps=5,
)
SMOKE = Plan(
    presets=["tiny"],
    overrides=dict(vocab_size=1024),
    parity_lengths=[40, 3, 17, 1, 26],
    parity_heads=2,
    parity_dim=16,
    window=4,
    train_shape=dict(vocab_size=1024, seq_len=64, step_tokens=256, micro_tokens=128),
    train_steps=5,
    train_warmup=1,
    inputs=[("64 uniform", 64, "uniform", 2), ("64 variable", 64, "variable", 2)],
    xlmr=dict(
        vocab_size=1024,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=130,
    ),  # fmt: skip
    memory_tokens=256,
    reps=5,
)


class Report:
    """The table: one row per figure, with its check (None: a figure, no check).

    Written to `path` (atomically) after every row, so that a run killed at the device call's time limit
    keeps every figure it printed. `deadline` (seconds after `start`): `past_deadline` tells a section to
    stop starting new work."""

    def __init__(
        self,
        path: Path | None = None,
        meta: dict | None = None,
        deadline: float = math.inf,
        start: float | None = None,
    ) -> None:
        self.rows: list[dict] = []
        self.skipped: list[str] = []
        self.errors: list[dict] = []
        self.path, self.meta, self.deadline = path, meta if meta is not None else {}, deadline
        self.start = time.monotonic() if start is None else start

    def add(self, section: str, item: str, value: str, ok: bool | None = None, **data) -> None:
        self.rows.append({"section": section, "item": item, "value": value, "ok": ok, **data})
        check = "" if ok is None else ("ok" if ok else "FAILED")
        print(f"{section:<10} {item:<52} {value:<44} {check}", flush=True)
        self.save()

    def skip(self, what: str) -> None:
        self.skipped.append(what)
        print(f"{what:<10} skipped: past the {self.deadline:.0f} s deadline", flush=True)
        self.save()

    def past_deadline(self) -> bool:
        return time.monotonic() - self.start > self.deadline

    def save(self) -> None:
        if self.path is None:
            return
        self.meta["seconds"] = time.monotonic() - self.start
        result = {"meta": self.meta, "rows": self.rows, "skipped": self.skipped, "errors": self.errors}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(result, indent=2, default=str) + "\n")

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(r["ok"] is False for r in self.rows)


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().float(), ref.detach()
    return float((x - ref).abs().max() / ref.abs().max().clamp(min=1e-30))


# ---------------------------------------------------------------------------------------------- sections
def parity(plan: Plan, device: torch.device, peak: float, report: Report) -> None:
    backends = ["sdpa", "flex"] + (["flash"] if flash_available() else [])
    dtypes = [torch.float32, torch.bfloat16] if device.type == "cuda" else [torch.float32]
    tolerance = {torch.float32: 2e-4, torch.bfloat16: 3e-2}
    cu = VarlenBatch.from_seqlens(torch.tensor(plan.parity_lengths, device=device))
    n, h, d = cu.total, plan.parity_heads, plan.parity_dim
    scale = d**-0.5
    g = torch.Generator(device="cpu").manual_seed(0)
    q32, k32, v32, up = (torch.randn(n, h, d, generator=g).to(device) for _ in range(4))
    for window in (plan.window, None):
        leaves = [t.clone().requires_grad_() for t in (q32, k32, v32)]
        ref = reference_attention(*leaves, cu, window, scale)
        ref_grads = torch.autograd.grad(ref, leaves, up)
        for dtype in dtypes:
            for backend in backends:
                if backend == "flash" and dtype == torch.float32:
                    continue  # FlashAttention-2 is fp16/bf16 only
                fn = BACKENDS[backend]
                name = f"{backend} {str(dtype).removeprefix('torch.')} window={window}"
                backward = not (backend == "flex" and device.type != "cuda")
                ins = [t.detach().to(dtype).requires_grad_(backward) for t in (q32, k32, v32)]  # fresh leaves
                batch = VarlenBatch(cu.cu_seqlens, cu.max_seqlen)
                out = fn(*ins, batch, window, scale)
                err = _rel_err(out, ref)
                report.add("parity", f"{name} forward", f"max rel err {err:.1e}", err <= tolerance[dtype],
                           backend=backend, dtype=str(dtype), window=window, pass_="forward", error=err)  # fmt: skip
                if not backward:
                    report.add("parity", f"{name} backward", "n/a: flex has no backward on CPU")
                    continue
                grads = torch.autograd.grad(out, ins, up.to(dtype))
                err = max(_rel_err(x, r) for x, r in zip(grads, ref_grads, strict=True))
                report.add("parity", f"{name} backward", f"max rel err {err:.1e} (dq, dk, dv)",
                           err <= tolerance[dtype], backend=backend, dtype=str(dtype), window=window,
                           pass_="backward", error=err)  # fmt: skip


def training(plan: Plan, device: torch.device, peak: float, report: Report) -> None:
    shape = plan.train_shape
    for preset in plan.presets:
        config = MmBertConfig.preset(preset, **plan.overrides)
        steps = plan.train_steps + plan.train_warmup
        docs = train.make_documents(shape["step_tokens"] * (steps + 1), shape["vocab_size"], shape["seq_len"])
        groups = train.step_groups(docs, shape["step_tokens"])[:steps]
        sides = {
            "ours": train.OursSide(config, shape, device),
            "transformers_padded": train.HFSide(config, shape, device),
        }
        results = {
            side: train.summarize(r, peak)
            for side, r in train.run_interleaved(sides, groups, plan.train_warmup).items()
        }
        del sides
        _free(device)
        for side, r in results.items():
            lo, hi = r["real_tokens_per_s_min_max"]
            report.add("train", f"{preset} {side}",
                       f"{r['real_tokens_per_s']:,.0f} tok/s ({lo:,.0f}-{hi:,.0f}), MFU {r['mfu']:.1%}",
                       preset=preset, side=side, **r)  # fmt: skip
        speedup = results["ours"]["real_tokens_per_s"] / results["transformers_padded"]["real_tokens_per_s"]
        target = 1.5 if preset == "mmbert-base" else None
        report.add("train", f"{preset} ours / transformers padded", f"{speedup:.2f}x"
                   + (f" (target >= {target}x)" if target else ""),
                   None if target is None else speedup >= target, preset=preset, speedup=speedup)  # fmt: skip


def inference_section(plan: Plan, device: torch.device, peak: float, report: Report) -> None:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    xlmr = inference.build_xlmr(device.type, dtype, **plan.xlmr)
    for preset in plan.presets:
        if report.past_deadline():
            report.skip(f"inference {preset}")
            continue
        rows = inference.measure(preset, plan.inputs, device.type, dtype, plan.reps,
                                 xlmr if preset == plan.presets[-1] else None, **plan.overrides)  # fmt: skip
        _free(device)
        for row in rows:
            ours, hf = row["ours_tok_s"]["median"], row["transformers_tok_s"]["median"]
            lo, hi = row["ours_tok_s"]["min_max"]
            x = f", XLM-R {ours / row['xlmr_tok_s']['median']:.2f}x" if "xlmr_tok_s" in row else ""
            report.add("inference", f"{preset} {row['input']} (batch {row['batch']})",
                       f"{ours:,.0f} tok/s ({lo:,.0f}-{hi:,.0f}), MFU {row['ours_mfu']['median']:.0%}",
                       **row)  # fmt: skip
            target = 2.0 if row["input"].endswith("variable") and row["input"].startswith("512") else None
            report.add("inference", f"{preset} {row['input']} ours / transformers", f"{ours / hf:.2f}x{x}"
                       + (f" (target >= {target}x)" if target else ""),
                       None if target is None else ours / hf >= target)  # fmt: skip
            if preset == "mmbert-base" and row["input"] == "512 variable":
                report.add("inference", "mmbert-base 512 variable vs paper Figure 3",
                           f"{ours:,.0f} vs about {PAPER_BASE_TOK_S:,} tok/s", ours >= PAPER_BASE_TOK_S)  # fmt: skip


def memory(plan: Plan, device: torch.device, peak: float, report: Report) -> None:
    if device.type != "cuda":
        report.add("memory", f"one {plan.memory_tokens}-token step", "n/a: peak memory is measured on CUDA")
        return
    n = plan.memory_tokens
    doc = np.random.default_rng(0).integers(5, plan.train_shape["vocab_size"], size=n - 2)
    shape = dict(plan.train_shape, seq_len=n, step_tokens=n, micro_tokens=n)
    for preset in plan.presets:
        config = MmBertConfig.preset(preset, **plan.overrides)
        for side_name, side_cls in (("ours", train.OursSide), ("transformers_padded", train.HFSide)):
            side = side_cls(config, shape, device)
            side.step([doc])  # compiles, allocates optimizer state
            torch.cuda.reset_peak_memory_stats(device)
            side.step([doc])
            gib = torch.cuda.max_memory_allocated(device) / 2**30
            del side
            _free(device)
            report.add("memory", f"{preset} {side_name}, one {n}-token document", f"{gib:.2f} GiB peak",
                       preset=preset, side=side_name, gib=gib)  # fmt: skip


def ddp(plan: Plan, device: torch.device, peak: float, report: Report) -> None:
    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")  # one local rank: loopback (the device has no network)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tdist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                             timeout=datetime.timedelta(seconds=120))  # fmt: skip
    try:
        config = MmBertConfig.preset(plan.presets[0], **plan.overrides)
        torch.manual_seed(0)
        plain = MmBertForMaskedLM(config).to(device)
        copy = MmBertForMaskedLM(config).to(device)
        copy.load_state_dict(plain.state_dict())
        # As mmbert.distributed.wrap_model wraps it for more than one rank.
        wrapped = DistributedDataParallel(
            copy, device_ids=[device.index or 0] if device.type == "cuda" else None
        )
        seq_len = plan.train_shape["seq_len"]
        docs = train.make_documents(4 * seq_len, plan.train_shape["vocab_size"], seq_len)
        batch = Packer().next_batch(iter(train.Doc(d) for d in docs), 4, seq_len)
        ids, labels = mask_tokens(
            batch.input_ids, train.MASK_RATE, torch.Generator().manual_seed(0), config.vocab_size
        )
        inputs = dict(input_ids=ids.to(device), labels=labels.to(device), cu_seqlens=batch.cu_seqlens.to(device),
                      max_seqlen=batch.max_seqlen)  # fmt: skip
        losses = []
        for model in (plain, wrapped):
            with train.autocast(device):
                loss = model(**inputs).loss
            loss.backward()
            losses.append(float(loss))
        grads = [(p.grad, q.grad) for p, q in zip(plain.parameters(), copy.parameters(), strict=True)]
        err = max(_rel_err(b, a) for a, b in grads if a is not None)
        # Same kernels, world of one: equal up to the GPU's nondeterministic reductions.
        tol = 1e-6 if device.type == "cpu" else 1e-2
        ok = math.isclose(losses[0], losses[1], rel_tol=tol) and err <= tol
        report.add("ddp", f"one {backend} DDP step (world of one)",
                   f"loss {losses[1]:.4f} vs {losses[0]:.4f}, grads max rel err {err:.1e}", ok,
                   backend=backend, losses=losses, grad_error=err)  # fmt: skip
    finally:
        tdist.destroy_process_group()


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# Cheap checks first: a section that starts after the deadline is skipped.
SECTIONS: dict[str, Callable[[Plan, torch.device, float, Report], None]] = {
    "parity": parity,
    "ddp": ddp,
    "train": training,
    "memory": memory,
    "inference": inference_section,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (seconds, any device)")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    ap.add_argument("--deadline", type=float, default=400.0, help="seconds; later sections are skipped")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu.json")
    args = ap.parse_args(argv)
    start = time.monotonic()
    plan = SMOKE if args.smoke else FULL
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = measure_matmul_flops(8192, 5, device, torch.bfloat16)
        peak_what = "bf16"
    else:
        name = platform.processor() or platform.machine()
        peak = measure_matmul_flops(1024, 5, device, torch.float32)
        peak_what = "fp32"
    meta = {
        "date": datetime.date.today().isoformat(), "device": device.type, "name": name, "torch": torch.__version__,
        "cuda": torch.version.cuda, "flash_attn": flash_available(), "smoke": args.smoke,
        "matmul_peak_flops": peak, "peak_dtype": peak_what, "threads": torch.get_num_threads(),
        "command": "python bench/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }  # fmt: skip
    print(f"{name}, torch {torch.__version__}, {peak_what} matmul peak {peak / 1e9:,.0f} GFLOP/s "
          f"(measured now), flash_attn {'installed' if flash_available() else 'not installed'}")  # fmt: skip
    report = Report(args.out, meta, args.deadline, start)
    print(f"{'section':<10} {'item':<52} {'value':<44} check")
    for section in args.sections:
        if report.past_deadline():
            report.skip(section)
            continue
        try:
            SECTIONS[section](plan, device, peak, report)
        except Exception as e:  # one broken section must not lose the others' figures
            report.errors.append({"section": section, "error": repr(e), "traceback": traceback.format_exc()})
            print(f"{section:<10} ERROR {e!r}", flush=True)
            traceback.print_exc()
    report.save()
    print(f"{meta['seconds']:.0f} s; wrote {args.out}" + ("; SOME CHECKS FAILED" if report.failed else ""))
    return 1 if report.failed else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
