"""Cross-checks against libraries that cannot be installed beside this project's pins.

Each check builds (once) its own throwaway virtual environment outside the repository (default
`/tmp/mmbert-crosscheck/<name>`; `--fresh` rebuilds it), installs the other library there from the
package index, runs the same inputs through both sides and writes what it found, with the date, the
command, the machine and the package versions, to `scripts/results/crosscheck-<name>.json`.

    python scripts/crosscheck.py mergekit   # TIES: `mmbert merge` against mergekit 0.1.5's `mergekit-yaml`
    python scripts/crosscheck.py mds        # MDS: our reader against mosaicml-streaming 0.13.0, both ways
    python scripts/crosscheck.py pylate     # PyLate 1.6.0 in the README's separate environment

Run it from the repository root with the project's environment (`.venv/bin/python`). It exits 1 when
the two sides disagree. The first run of a check downloads its packages (minutes).

- mergekit: four tiny checkpoints (a random `tiny` base and three perturbed copies, with our tokenizer)
  merged with TIES at several densities and weights by both; every output tensor is compared.
- mds: mosaicml-streaming's `MDSWriter` writes shards (uint16/uint32/int64 token columns, fixed and
  dynamic dtype, raw and zstd, two datasets under one merged index) that `mmbert.data.sources.MdsSource`
  reads; and streaming's `StreamingDataset` reads the shards that the tests' writer
  (`tests/helpers/mds.py:write_mds`) makes. mosaicml-streaming needs torchvision, whose wheel for torch 2.13
  does not import here, so the environment gets a stand-in with the two names streaming imports.
- pylate: the environment the README's "PyLate" section describes (its install lines, plus pytest);
  there the tests that need PyLate run (`tests/test_interop.py::test_pylate_colbert`: ColBERT
  construction, encoding, MaxSim scores, save and reload; `tests/test_examples.py -k pylate`:
  `examples/train_colbert.py --backend pylate`), a tiny export is loaded by transformers 4.57
  (`AutoTokenizer`, `AutoModelForMaskedLM`) and compared with our model's logits, and a ColBERT
  checkpoint PyLate saves is loaded by this environment's Sentence Transformers `MultiVectorEncoder`
  (query and document vectors compared with PyLate's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from mmbert import MmBertConfig, MmBertForMaskedLM
from mmbert.data.corpus import load_udhr
from mmbert.data.sources import open_source
from mmbert.data.sources.base import normalize_lang
from mmbert.merge import merge_dirs
from mmbert.tokenizer import load_tokenizer, save_tokenizer
from mmbert.tokenizer_training import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results"
TORCH = "torch==2.13.0"
# pip install steps per environment (each a list of pip arguments); a constraint file pins torch.
ENVS: dict[str, list[list[str]]] = {
    "mergekit": [[TORCH], ["mergekit==0.1.5"]],
    # Every requirement of mosaicml-streaming 0.13.0 that `import streaming` needs, without torchvision
    # (and the cloud-storage clients, imported only for remote paths).
    "mds": [
        [TORCH],
        ["--no-deps", "mosaicml-streaming==0.13.0"],
        [
            "numpy<2.2",
            "transformers<5",
            "zstd<2",
            "xxhash<4",
            "python-snappy<1",
            "Brotli",
            "catalogue<3",
            "matplotlib<4",
            "tqdm",
        ],
    ],
    # The README's lines ("PyLate" section), then pytest to run the tests that need PyLate.
    "pylate": [
        [TORCH],
        ["--no-deps", "pylate==1.6.0", str(ROOT)],
        [
            "transformers==4.57.6",
            "sentence-transformers==5.3.0",
            "datasets",
            "accelerate",
            "pandas",
            "ujson",
            "fastkmeans==0.5.0",
            "scipy",
        ],
        ["pytest", "zstandard"],  # what the tests import beyond the README's lines
    ],
}
# What a check reports as the other side's versions.
VERSIONS = {
    "mergekit": ["mergekit", "torch", "transformers"],
    "mds": ["mosaicml-streaming", "numpy", "torch", "transformers"],
    "pylate": ["pylate", "sentence-transformers", "transformers", "torch", "ujson", "fastkmeans"],
}
TORCHVISION_STANDIN = {
    "__init__.py": '"""Stand-in: streaming.vision imports these names; nothing here calls them."""\n',
    "datasets.py": "class VisionDataset:\n    pass\n",
    "transforms/__init__.py": "",
    "transforms/functional.py": "def to_tensor(*args, **kwargs):\n    raise NotImplementedError\n",
}


# ---------------------------------------------------------------------------------------------- environments
def ensure_env(name: str, envs: Path, python: str, fresh: bool) -> Path:
    """The environment's python, built with `ENVS[name]` if it is not there (or `fresh`)."""
    env = envs / name
    stamp = env / ".mmbert-crosscheck-installed"
    if fresh and env.exists():
        shutil.rmtree(env)
    if not stamp.exists():
        print(f"building {env} (pip, minutes)", flush=True)
        subprocess.run([python, "-m", "venv", "--clear", str(env)], check=True)
        constraints = env / "constraints.txt"
        constraints.write_text(TORCH + "\n")
        for step in ENVS[name]:
            cmd = [str(env / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(constraints), *step]
            subprocess.run(cmd, check=True)
        if name == "mds":
            site = Path(
                _run(env / "bin" / "python", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
            )
            for rel, text in TORCHVISION_STANDIN.items():
                (site / "torchvision" / rel).parent.mkdir(parents=True, exist_ok=True)
                (site / "torchvision" / rel).write_text(text)
        stamp.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
    return env / "bin" / "python"


def _run(python: Path | str, code: str, *args: str, cwd: Path | None = None) -> str:
    """Run `code` with `python`; its stdout (stripped). A failure shows its stderr."""
    result = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"{python} failed:\n{result.stderr[-4000:]}")
    return result.stdout.strip()


def versions(python: Path, packages: list[str]) -> dict[str, str]:
    code = "import importlib.metadata as m, sys; print({p: m.version(p) for p in sys.argv[1:]})"
    return eval(_run(python, code, *packages))  # a dict literal printed by the line above


def machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    ) if Path("/proc/cpuinfo").exists() else platform.processor()  # fmt: skip
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def write_result(name: str, argv: list[str], result: dict[str, Any], python: Path) -> Path:
    git = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=ROOT)
    record = {
        "check": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python scripts/crosscheck.py " + shlex.join(argv),
        "commit": git.stdout.strip() or None,
        "machine": machine(),
        "ours": {"torch": torch.__version__, "numpy": np.__version__},
        "theirs": versions(python, VERSIONS[name]),
        **result,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"crosscheck-{name}.json"
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- mergekit
MERGEKIT_CASES = [  # (density, weights of the three models)
    (0.5, [1.0, 1.0, 1.0]),
    (0.3, [1.0, 0.5, 2.0]),
    (0.8, [0.2, 0.3, 0.5]),
    (1.0, [1.0, 1.0, 1.0]),
]


def _tiny_checkpoints(root: Path) -> tuple[Path, list[Path]]:
    """A random `tiny` MLM with a tokenizer (the base) and three copies with different random deltas."""
    texts = [a.text for d in load_udhr() if d.key in ("eng_Latn", "fra_Latn") for a in d.articles]
    tok = train_tokenizer(texts, vocab_size=400, model="bpe", seed=0)
    torch.manual_seed(0)
    base = MmBertForMaskedLM(MmBertConfig.preset("tiny", vocab_size=len(tok)))
    dirs = []
    for i in range(4):
        model = MmBertForMaskedLM(base.config)
        model.load_state_dict(base.state_dict())
        if i:
            g = torch.Generator().manual_seed(i)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.02)
        path = root / ("base" if i == 0 else f"model{i}")
        model.save_pretrained(path)
        save_tokenizer(tok, path)
        dirs.append(path)
    return dirs[0], dirs[1:]


def check_mergekit(python: Path, work: Path) -> dict[str, Any]:
    base, models = _tiny_checkpoints(work)
    base_tensors = load_file(base / "model.safetensors")
    mergekit_yaml = python.parent / "mergekit-yaml"
    cases = []
    for density, weights in MERGEKIT_CASES:
        tag = f"d{density}-w{'-'.join(map(str, weights))}"
        ours = merge_dirs("ties", base, models, work / f"ours-{tag}", weights=weights, density=density)
        config = {
            "merge_method": "ties",
            "base_model": str(base),
            "models": [
                {"model": str(m), "parameters": {"density": density, "weight": w}}
                for m, w in zip(models, weights, strict=True)
            ],
            "parameters": {"normalize": True},
            "dtype": "float32",
        }
        (work / f"{tag}.yaml").write_text(json.dumps(config))  # YAML is a superset of JSON
        cmd = [str(mergekit_yaml), str(work / f"{tag}.yaml"), str(work / f"theirs-{tag}")]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"mergekit-yaml failed:\n{run.stderr[-4000:]}")
        a = load_file(ours / "model.safetensors")
        b = {}
        for f in sorted((work / f"theirs-{tag}").glob("*.safetensors")):
            b.update(load_file(f))
        # transformers leaves the tied decoder out of the file; either side may write it under its own name.
        b.pop("decoder.weight", None)
        a.pop("decoder.weight", None)
        diffs = {k: float((a[k] - b[k]).abs().max()) for k in sorted(a.keys() & b.keys())}
        unchanged = sum(int((a[k] == base_tensors[k]).sum()) for k in diffs)
        cases.append(
            {
                "density": density,
                "weights": weights,
                "tensors": len(diffs),
                "only_ours": sorted(a.keys() - b.keys()),
                "only_mergekit": sorted(b.keys() - a.keys()),
                "elements": sum(a[k].numel() for k in diffs),
                "elements_left_at_base": unchanged,
                "identical_tensors": sum(d == 0 for d in diffs.values()),
                "max_abs_diff": max(diffs.values()),
                "max_abs_value": max(float(a[k].abs().max()) for k in diffs),
            }
        )
        print(f"ties {tag}: {cases[-1]['identical_tensors']}/{len(diffs)} tensors identical, "
              f"max |diff| {cases[-1]['max_abs_diff']:.3g}", flush=True)  # fmt: skip
    agree = all(c["max_abs_diff"] <= 1e-6 and not c["only_ours"] and not c["only_mergekit"] for c in cases)
    return {
        "what": "mmbert merge --method ties against mergekit-yaml (merge_method ties, normalize true, "
        "float32) on a random tiny base and three perturbed copies (N(0, 0.02^2) deltas)",
        "cases": cases,
        "agree": agree,
    }


# ---------------------------------------------------------------------------------------------- MDS
_STREAMING_WRITE = r"""
import json, sys
import numpy as np
from streaming import MDSWriter
from streaming.base.util import merge_index

root = sys.argv[1]
rng = np.random.default_rng(0)
cases = json.loads(sys.argv[2])
for case in cases:
    out = f"{root}/{case['dir']}"
    with MDSWriter(out=out, columns=case["columns"], compression=case["compression"],
                   size_limit=case["size_limit"]) as w:
        for i in range(case["samples"]):
            n = int(rng.integers(1, 300))
            ids = rng.integers(0, case["high"], n).astype(case["dtype"])
            sample = {"input_ids": ids}
            if "lang" in case["columns"]:
                sample["lang"] = ["fra_Latn", "deu_Latn", "eng"][i % 3]
            w.write(sample)
merge_index([f"{root}/merged/a/index.json", f"{root}/merged/b/index.json"], f"{root}/merged", keep_local=True)
"""

_STREAMING_READ = r"""
import json, sys
from streaming import StreamingDataset

out = {}
for name in sys.argv[2:]:
    ds = StreamingDataset(local=f"{sys.argv[1]}/{name}", shuffle=False, batch_size=1)
    out[name] = [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in ds[i].items()} for i in range(len(ds))]
print(json.dumps(out))
"""

_OUR_WRITE = r"""
import json, sys
from pathlib import Path
import numpy as np
from tests.helpers.mds import write_mds

root = Path(sys.argv[1])
rng = np.random.default_rng(1)
made = {}
for name, columns, dtype, compression in json.loads(sys.argv[2]):
    samples = []
    for i in range(40):
        ids = rng.integers(0, 60000, int(rng.integers(1, 300))).astype(dtype)
        samples.append({"input_ids": ids, "lang": ["fra_Latn", "deu_Latn"][i % 2]} if "lang" in columns else {"input_ids": ids})
    write_mds(root / name, columns, samples, compression=compression, samples_per_shard=15)
    made[name] = [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in s.items()} for s in samples]
print(json.dumps(made))
"""


def _read_ours(path: Path, lang_field: str | None) -> list[dict[str, Any]]:
    """Every document `MdsSource` reads under `path`, in order, as plain data."""
    src = open_source(f"mds:{path}", lang_field=lang_field)
    return [
        {"tokens": doc.tokens.tolist(), "lang": doc.lang, "doc_id": doc.doc_id}
        for unit in src.units()
        for doc in src.read(unit, "mds")
    ]


def check_mds(python: Path, work: Path) -> dict[str, Any]:
    # Direction 1: streaming writes, we read.
    cases = [
        {"dir": "u16-fixed-raw/fra_Latn", "columns": {"input_ids": "ndarray:uint16"}, "compression": None,
         "dtype": "uint16", "high": 60000, "samples": 200, "size_limit": 1 << 13},
        {"dir": "u32-dynamic-zstd/deu_Latn", "columns": {"input_ids": "ndarray"}, "compression": "zstd",
         "dtype": "uint32", "high": 256000, "samples": 200, "size_limit": 1 << 13},
        {"dir": "i64-shape-zstd/ell_Grek", "columns": {"input_ids": "ndarray:int64"}, "compression": "zstd:7",
         "dtype": "int64", "high": 256000, "samples": 50, "size_limit": 1 << 20},
        {"dir": "merged/a", "columns": {"input_ids": "ndarray:uint32", "lang": "str"}, "compression": None,
         "dtype": "uint32", "high": 256000, "samples": 30, "size_limit": 1 << 12},
        {"dir": "merged/b", "columns": {"input_ids": "ndarray:uint32", "lang": "str"}, "compression": "zstd",
         "dtype": "uint32", "high": 256000, "samples": 30, "size_limit": 1 << 12},
    ]  # fmt: skip
    written = work / "streaming"
    _run(python, _STREAMING_WRITE, str(written), json.dumps(cases))
    # Streaming reads each dataset at its index (merged/ has the merged one); ours reads the top
    # directory, a tree whose `lang_Script` directory names give the language.
    datasets = sorted({"merged" if c["dir"].startswith("merged/") else c["dir"] for c in cases})
    expected = json.loads(_run(python, _STREAMING_READ, str(written), *datasets))
    read_by_us = []
    for name in datasets:
        samples = expected[name]
        top = written / name.split("/")[0]
        ours = _read_ours(top, "lang" if "lang" in samples[0] else None)
        same = [d["tokens"] for d in ours] == [s["input_ids"] for s in samples]
        if "lang" in samples[0]:
            same = same and [d["lang"] for d in ours] == [normalize_lang(s["lang"], name) for s in samples]
        shards = sorted(str(p.relative_to(top)) for p in top.rglob("shard.*"))
        read_by_us.append({"dataset": name, "samples": len(samples), "shards": len(shards),
                           "shard_files": shards[:4] + (["..."] if len(shards) > 4 else []),
                           "identical": same})  # fmt: skip
        print(f"streaming wrote {name} ({len(samples)} samples, {len(shards)} shards): ours reads "
              f"{'the same' if same else 'SOMETHING ELSE'}", flush=True)  # fmt: skip

    # Direction 2: the tests' writer writes, streaming reads.
    ours_cases = [
        ["ours-u32-fixed-raw", {"input_ids": "ndarray:uint32"}, "uint32", None],
        ["ours-u16-dynamic-zstd", {"input_ids": "ndarray"}, "uint16", "zstd"],
        ["ours-i64-lang-zstd", {"input_ids": "ndarray:int64", "lang": "str"}, "int64", "zstd"],
    ]
    made = json.loads(_run(sys.executable, _OUR_WRITE, str(work / "ours"), json.dumps(ours_cases), cwd=ROOT))
    theirs = json.loads(_run(python, _STREAMING_READ, str(work / "ours"), *made))
    read_by_streaming = []
    for name, samples in made.items():
        same = theirs[name] == samples
        read_by_streaming.append({"dataset": name, "samples": len(samples), "identical": same})
        print(
            f"tests' writer wrote {name}: streaming reads {'the same' if same else 'SOMETHING ELSE'}",
            flush=True,
        )
    agree = all(r["identical"] for r in read_by_us + read_by_streaming)
    return {
        "what": "mosaicml-streaming's MDSWriter (+ merge_index) output read by mmbert's MdsSource, and the "
        "tests' MDS writer's output read by streaming's StreamingDataset; samples compared in order",
        "streaming_wrote_mmbert_read": read_by_us,
        "tests_writer_wrote_streaming_read": read_by_streaming,
        "agree": agree,
    }


# ---------------------------------------------------------------------------------------------- PyLate
_TRANSFORMERS4_LOAD = r"""
import json, sys
import torch, transformers
from transformers import AutoModelForMaskedLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForMaskedLM.from_pretrained(sys.argv[1]).eval()
texts = json.loads(sys.argv[2])
batch = tok(texts, padding=True, return_tensors="pt")
with torch.no_grad():
    logits = model(**batch).logits
torch.save({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "logits": logits}, sys.argv[3])
print(json.dumps({"transformers": transformers.__version__, "tokenizer_class": type(tok).__name__,
                  "special_ids": [tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id, tok.mask_token_id]}))
"""


_PYLATE_SAVE = r"""
import json, sys
import torch
from pylate import models

texts = json.loads(sys.argv[3])
colbert = models.ColBERT(model_name_or_path=sys.argv[1], embedding_size=16, device="cpu")
colbert.save(sys.argv[2])
queries = colbert.encode(texts[:1], is_query=True)
docs = colbert.encode(texts[1:], is_query=False)
torch.save({"queries": [torch.as_tensor(q) for q in queries], "docs": [torch.as_tensor(d) for d in docs]},
           sys.argv[2] + "/pylate-vectors.pt")
"""


def _multi_vector_load(saved: Path, texts: list[str]) -> dict[str, Any]:
    """A checkpoint PyLate saved, loaded by Sentence Transformers' MultiVectorEncoder here: the same vectors?"""
    from sentence_transformers import MultiVectorEncoder  # seconds to import: this check only

    vectors = torch.load(saved / "pylate-vectors.pt", weights_only=True)
    model = MultiVectorEncoder(str(saved), device="cpu")
    queries = model.encode_query(texts[:1])
    docs = model.encode_document(texts[1:])
    shapes = [list(torch.as_tensor(x).shape) for x in (*queries, *docs)]
    theirs = [*vectors["queries"], *vectors["docs"]]
    same_shapes = shapes == [list(x.shape) for x in theirs]
    diff = (
        max(
            float((torch.as_tensor(a) - b).abs().max())
            for a, b in zip((*queries, *docs), theirs, strict=True)
        )
        if same_shapes
        else None
    )
    return {"shapes_st": shapes, "shapes_pylate": [list(x.shape) for x in theirs], "max_abs_diff": diff}


def check_pylate(python: Path, work: Path) -> dict[str, Any]:
    texts = [a.text for d in load_udhr() if d.key in ("eng_Latn", "fra_Latn", "rus_Cyrl") for a in d.articles]
    export = work / "export"
    save_tokenizer(train_tokenizer(texts, vocab_size=512, model="bpe", seed=0), export)
    torch.manual_seed(0)
    MmBertForMaskedLM(MmBertConfig.preset("tiny", vocab_size=len(load_tokenizer(export)))).save_pretrained(
        export
    )

    # transformers 4.57 loads our export (tokenizer config and both config forms) with our logits.
    sample = [t for t in texts if 60 < len(t) < 300][:4]
    loaded = json.loads(
        _run(python, _TRANSFORMERS4_LOAD, str(export), json.dumps(sample), str(work / "t4.pt"))
    )
    t4 = torch.load(work / "t4.pt", weights_only=True)
    ours = MmBertForMaskedLM.from_pretrained(export).eval()
    mine = load_tokenizer(export)(sample, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = ours(mine["input_ids"], attention_mask=mine["attention_mask"]).logits
    real = mine["attention_mask"].bool()
    same_ids = torch.equal(mine["input_ids"], t4["input_ids"])
    max_diff = float((logits[real] - t4["logits"][real]).abs().max()) if same_ids else None
    print(
        f"transformers {loaded['transformers']}: same token ids {same_ids}, max |logit diff| {max_diff}",
        flush=True,
    )

    # A ColBERT checkpoint saved by PyLate loads in this environment's MultiVectorEncoder.
    _run(python, _PYLATE_SAVE, str(export), str(work / "pylate-colbert"), json.dumps(sample[:3]))
    st_load = _multi_vector_load(work / "pylate-colbert", sample[:3])
    print(f"PyLate checkpoint in MultiVectorEncoder: {st_load}", flush=True)

    # The tests that need PyLate, in PyLate's environment.
    tests = [
        "tests/test_interop.py::test_pylate_colbert",
        "tests/test_examples.py::test_train_colbert_with_pylate",
    ]
    # The working tree's code (PYTHONPATH), not the copy the environment installed when it was built.
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT / "src")}  # fmt: skip
    run = subprocess.run(
        [str(python), "-m", "pytest", "-o", "addopts=", "-v", "-p", "no:cacheprovider", "-p", "no:warnings", *tests],
        capture_output=True, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    # A test that cannot import PyLate is skipped, which pytest counts as success: require PASSED.
    outcomes = {t: ("passed" if f"{t} PASSED" in run.stdout else "not passed") for t in tests}
    print(run.stdout[-1500:], flush=True)
    passed = all(v == "passed" for v in outcomes.values())
    st_agrees = st_load["max_abs_diff"] is not None and st_load["max_abs_diff"] < 1e-5
    agree = passed and same_ids and max_diff is not None and max_diff < 1e-4 and st_agrees
    return {
        "what": "the README's PyLate environment: transformers 4.57 loads a tiny export of ours (logits "
        "compared with our model's), the tests that need PyLate run there, and a checkpoint PyLate "
        "saves loads in the main environment's MultiVectorEncoder",
        "transformers4_load": {**loaded, "same_input_ids": same_ids, "max_abs_logit_diff": max_diff},
        "pylate_checkpoint_in_multi_vector_encoder": {
            "what": "a ColBERT checkpoint saved by PyLate, loaded by sentence-transformers "
            f"{version('sentence-transformers')} (this environment); query and document vectors compared with PyLate's",
            **st_load,
        },
        "pytest": {"command": "python -m pytest " + " ".join(tests), "returncode": run.returncode,
                   "outcomes": outcomes, "summary": run.stdout.strip().splitlines()[-1] if run.stdout else ""},
        "not_checked": "PLAID indexing (fast-plaid has no wheel for torch 2.13)",
        "agree": agree,
    }  # fmt: skip


CHECKS = {"mergekit": check_mergekit, "mds": check_mds, "pylate": check_pylate}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("check", choices=sorted(CHECKS))
    p.add_argument("--envs", type=Path, default=Path(tempfile.gettempdir()) / "mmbert-crosscheck",
                   help="where the throwaway environments live (outside the repository)")  # fmt: skip
    p.add_argument("--python", default="python3.11", help="interpreter the environments are built with")
    p.add_argument("--fresh", action="store_true", help="rebuild the environment")
    args = p.parse_args(argv)
    if ROOT in args.envs.resolve().parents:
        p.error("--envs must be outside the repository")
    python = ensure_env(args.check, args.envs, args.python, args.fresh)
    with tempfile.TemporaryDirectory(prefix=f"mmbert-crosscheck-{args.check}-") as tmp:
        result = CHECKS[args.check](python, Path(tmp))
    path = write_result(args.check, argv, result, python)
    print(f"{'agree' if result['agree'] else 'DISAGREE'}; wrote {path.relative_to(ROOT)}")
    return 0 if result["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
