"""Peak memory of `mmbert merge` on mmBERT-base-shaped checkpoints (307M parameters, fp32).

Writes a random base and three random variants (22 layers, hidden 768, intermediate 1152, vocab
256,000; tied decoder left out of the file as transformers does), then runs `mmbert merge` in a
subprocess per method and reads that process's peak resident set size from `wait4`. The same is done
for a bare `import torch, mmbert.merge` (the interpreter's own footprint) and, for comparison, for
an in-memory merge that loads all four state dicts first (`--no-naive` skips it).

Linux keeps a process's peak RSS across fork + exec, so this parent process stays small: it imports
no torch, and the checkpoints are written by a child (`--generate`).

    .venv/bin/python bench/merge_memory.py            # ~4 x 1.2 GB of temporary files
    -> table on stdout, bench/results/merge_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "merge_memory.json"

NAIVE = """
import sys, torch
from safetensors.torch import load_file, save_file
from mmbert.merge import merge_ties
base, *models, out = sys.argv[1:]
merged = merge_ties(load_file(base), [load_file(m) for m in models], density=0.5)
save_file(merged, out, metadata={"format": "pt"})
"""


def generate(work: Path) -> None:
    """Child process: write base/eng/cont/all checkpoints (variants = base + 0.01 x noise) and a
    shapes summary. Tensors are streamed to safetensors one by one, never a whole model."""
    import torch
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    from mmbert.config import MmBertConfig
    from mmbert.merge import EMBEDDING_KEY
    from mmbert.weights import SafetensorsWriter, TensorInfo

    config = ModernBertConfig(**MmBertConfig.preset("mmbert-base").to_hf_dict())
    # Meta device: shapes only, no 60-second random init.
    with torch.device("meta"):
        model = ModernBertForMaskedLM(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "decoder.weight"}
    entries = [(k, TensorInfo(s, torch.float32)) for k, s in sorted(shapes.items())]
    for seed, name in enumerate(("base", "eng", "cont", "all")):
        path = work / name
        if (path / "model.safetensors").is_file():
            continue
        path.mkdir(parents=True, exist_ok=True)
        config.to_json_file(path / "config.json")
        with open(path / "model.safetensors.tmp", "wb") as f:
            writer = SafetensorsWriter(f, entries, {"format": "pt"})
            for i, (key, info) in enumerate(entries):
                t = torch.randn(info.shape, generator=torch.Generator().manual_seed(i))
                if seed:
                    t += 0.01 * torch.randn(
                        info.shape, generator=torch.Generator().manual_seed(seed * 1000 + i)
                    )
                writer.write(key, t.reshape(-1))
            writer.close()
        os.replace(path / "model.safetensors.tmp", path / "model.safetensors")
    summary = {
        "parameters": sum(info.numel for _, info in entries),
        "largest_tensor": torch.Size(shapes[EMBEDDING_KEY]).numel(),
        "torch": torch.__version__,
    }
    (work / "shapes.json").write_text(json.dumps(summary))


def run(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of a subprocess, from its own rusage."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[:6]} failed with status {status}")
    return usage.ru_maxrss / 1024, wall  # ru_maxrss is in KiB on Linux


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--work-dir", help="where to write the 4 checkpoints (default: a temporary directory, removed)"
    )
    p.add_argument("--no-naive", action="store_true", help="skip the load-everything comparison")
    p.add_argument("--generate", metavar="DIR", help=argparse.SUPPRESS)  # the child's entry point
    args = p.parse_args()
    if args.generate:
        generate(Path(args.generate))
        return 0
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="mmbert-merge-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        _, gen_s = run([sys.executable, __file__, "--generate", str(work)])
        summary = json.loads((work / "shapes.json").read_text())
        print(f"checkpoints ready in {work} ({gen_s:.0f}s)", file=sys.stderr)
        dirs = [work / name for name in ("base", "eng", "cont", "all")]
        merge = [sys.executable, "-m", "mmbert.cli", "merge"]
        models = ["--models", *map(str, dirs[1:])]
        runs = {
            "python + torch + mmbert.merge imported": [sys.executable, "-c", "import torch, mmbert.merge"],
            "ties, 3 models, density 0.5 (streamed)": merge
            + ["--method", "ties", "--base", str(dirs[0]), *models, "--density", "0.5"]
            + ["--out", str(work / "ties"), "--overwrite"],
            "linear, 3 models (streamed)": merge
            + ["--method", "linear", *models, "--out", str(work / "linear"), "--overwrite"],
        }
        if not args.no_naive:
            runs["ties, all 4 state dicts loaded first"] = [
                sys.executable,
                "-c",
                NAIVE,
                *[str(d / "model.safetensors") for d in dirs],
                str(work / "naive.safetensors"),
            ]
        results = []
        for name, cmd in runs.items():
            rss, wall = run(cmd)
            results.append({"run": name, "peak_rss_mib": round(rss), "wall_s": round(wall, 1)})
            print(f"{name}: {rss:.0f} MiB, {wall:.1f}s", file=sys.stderr)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    params = summary["parameters"]
    model_mib = params * 4 / 2**20
    largest_mib = summary["largest_tensor"] * 4 / 2**20
    interpreter = results[0]["peak_rss_mib"]
    print(
        f"\nmmBERT-base shape: {params / 1e6:.1f}M params = {model_mib:.0f} MiB fp32 per model; "
        f"largest tensor (embedding) {largest_mib:.0f} MiB"
    )
    print(f"{'run':<42} {'peak RSS MiB':>12} {'minus import':>12} {'x model':>8} {'wall s':>7}")
    for r in results:
        r["peak_minus_import_mib"] = extra = r["peak_rss_mib"] - interpreter
        r["x_model_size"] = round(extra / model_mib, 2)
        print(
            f"{r['run']:<42} {r['peak_rss_mib']:>12} {extra:>12} {r['x_model_size']:>8.2f} {r['wall_s']:>7}"
        )
    record = {
        "model": "mmBERT-base shape (22 layers, hidden 768, intermediate 1152, vocab 256000), fp32, tied decoder",
        "parameters": params,
        "model_mib": round(model_mib),
        "largest_tensor_mib": round(largest_mib),
        "inputs": "base + 3 models",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {summary['torch']}",
        "runs": results,
        "command": "python bench/merge_memory.py",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, RESULTS)
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
