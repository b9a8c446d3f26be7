"""The data path at mmBERT's scale, simulated: what one rank pays as documents, cells and shards grow.

mmBERT's run is ~2.7T tokens in ~2,000 (source, language) cells, ~82k shard files of 32M tokens, read
by 64 ranks. This writes synthetic prepared data directly in `mmbert prepare`'s format (shard files and
a manifest through `mmbert.data.manifest`), with tiny token arrays where only the metadata matters,
and measures one rank (rank 0 of 64) in a fresh process under `ulimit -n 1024`: the store opened with
the vocabulary check, the sampler over every cell (without the read-ahead, whose thread would share the
machine's cores with the draws being timed; its queue is at most 1024 document lengths), then `--draws`
documents drawn. Per run:

- start-up: from opening the data directory to the first document (the manifest read, the vocabulary
  check from the manifest's id ranges, the sampler's tables);
- data-path memory: peak resident memory minus the resident memory after the imports;
- open descriptors (`/proc/self/fd`) after the draws, beyond those after the imports, and memory maps of
  the data's files (`/proc/self/maps`);
- draws per second, and bytes read per draw against the bytes of the tokens drawn.

Sweeps (one quantity grows, the rest stay small): documents in one cell (its shards' offsets files are
sparse files of zeros: empty documents, which cost the store the same two positional reads as any),
cells (one shard each) and shards (in 100 cells). Then a layout like mmBERT's (the released
per-language counts as proportions: FineWeb2's languages, the English and code sources, a filtered
FineWeb2 for 20 languages; shards per cell in proportion to its tokens), over which the training
loader also runs `--ranks` ranks in one process (rank r of 8: each packs the global batch of `--rows`
rows of 1024 from the documents' lengths and reads only its own rows' documents) to count the bytes
each rank reads per step against its rows' tokens, and the extrapolation to the
real run from the sweeps' slopes. Last, the sampler against the plan: with the released counts as the
data (`mmbert.plan.released_data_counts`, what `mmbert plan --released-counts` plans with, as token
counts), each phase of recipes/mmbert-base.yaml simulated for --plan-draws documents; the realized
token share per language against the plan's target (largest relative error among languages above
0.1%, beside the sampling error that many draws allow).

    python bench/scale.py                          # a few minutes; writes bench/results/scale.json
    python bench/scale.py --smoke --out X.json     # tiny sizes (the test)
    python bench/scale.py --limit-check 100000     # also: 100k shards read under ulimit -n 1024
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mmbert.data.manifest import language_entries, new_manifest, write_manifest  # noqa: E402
from mmbert.io import atomic_write_text  # noqa: E402

VOCAB = 256_000
NOFILE = 1024
REAL = {"cells": 2000, "shards": 82_000, "ranks": 64, "tokens": 2.7e12, "shard_tokens": 1 << 25}
# FineWeb2 documents are ~1,000 tokens on average (the shards' metadata only needs a count): 2.7e9 in all.
REAL["documents"] = REAL["tokens"] / 1000


# ------------------------------------------------------------------------------------------ writing data
def _save_header(path: Path, dtype: str, length: int) -> None:
    """A `.npy` file of `length` zeros of `dtype`, sparse: the header, then a hole up to the size."""
    header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (length,)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.truncate(f.tell() + length * np.dtype(dtype).itemsize)


def write_data(root: Path, cells: list[tuple[str, str, int, int, int]]) -> dict[str, Any]:
    """Prepared data: per cell (source, lang, shards, documents per shard, tokens per document).

    Tokens per document 0: empty documents in sparse files (offsets all zero), so a cell of 10^9
    documents costs no disk. Negative: documents of random lengths averaging that many tokens, the
    tokens a sparse file of zeros (real lengths to read, no disk). Else real offsets and tokens of
    that many per document (ids 5 + document number mod 1000).
    """
    rng = np.random.default_rng(0)
    shards_by_source: dict[str, list[dict[str, Any]]] = {}
    for source, lang, n_shards, docs, per_doc in cells:
        (root / source).mkdir(parents=True, exist_ok=True)
        for k in range(n_shards):
            rel = f"{source}/{lang}.{k:05d}"
            ids = [0, 0]
            if per_doc == 0:
                _save_header(root / f"{rel}.offsets.npy", "<i8", docs + 1)
                _save_header(root / f"{rel}.tokens.npy", "<u4", 0)
                n_tokens = 0
            elif per_doc < 0:
                lengths = rng.integers(1, -2 * per_doc, docs)
                offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
                np.save(root / f"{rel}.offsets.npy", offsets)
                n_tokens = int(offsets[-1])
                _save_header(root / f"{rel}.tokens.npy", "<u4", n_tokens)
            else:
                np.save(root / f"{rel}.offsets.npy", np.arange(docs + 1, dtype=np.int64) * per_doc)
                tokens = np.repeat(5 + np.arange(docs, dtype=np.uint32) % 1000, per_doc)
                np.save(root / f"{rel}.tokens.npy", tokens)
                ids, n_tokens = [int(tokens.min()), int(tokens.max())], len(tokens)
            shards_by_source.setdefault(source, []).append(
                {"path": f"{rel}.tokens.npy", "langs": {lang: [0, docs, n_tokens]}, "ids": ids}
            )
    manifest = new_manifest()
    manifest["tokenizer"] = {"path": "synthetic", "vocab_size": VOCAB, "special_ids": {}, "sha256": "0" * 64}
    manifest["sources"] = {s: language_entries(shards) for s, shards in shards_by_source.items()}
    write_manifest(root, manifest)
    return {
        "cells": len(cells),
        "shards": sum(c[2] for c in cells),
        "documents": sum(c[2] * c[3] for c in cells),
    }


def mmbert_layout(
    total_shards: int, docs_per_shard: int, per_doc: int
) -> list[tuple[str, str, int, int, int]]:
    """Cells like mmBERT's: the released per-language counts (all phases) as each cell's share of tokens."""
    from mmbert.languages import released_counts

    counts = released_counts()
    per_lang: dict[str, float] = {}
    for column in counts.values():
        for lang, n in column.items():
            per_lang[lang] = per_lang.get(lang, 0.0) + n
    english = {"dclm": 600.0, "arxiv": 27.8, "stackexchange": 18.6, "flan": 15.3, "math": 11.2,
               "pes2o": 8.4, "books": 4.3, "dclm_filtered": 73.0, "textbooks": 5.0}  # fmt: skip
    tokens: dict[tuple[str, str], float] = {}
    for lang, n in per_lang.items():
        if lang == "code":
            tokens[("starcoder", "code")] = n
        elif lang == "eng":
            for source, weight in english.items():
                tokens[(source, "eng_Latn")] = n * weight / sum(english.values())
        elif n > 0:
            tokens[("fineweb2", f"{lang}_Latn")] = n
    top20 = sorted((k for k in tokens if k[0] == "fineweb2"), key=lambda k: -tokens[k])[:20]
    for key in top20:  # FineWeb2-HQ: a filtered copy of the 20 largest languages
        tokens[("fineweb2_hq", key[1])] = tokens[key] * 0.3
    total = sum(tokens.values())
    return [
        (source, lang, max(1, round(total_shards * n / total)), docs_per_shard, per_doc)
        for (source, lang), n in sorted(tokens.items())
    ]


# ------------------------------------------------------------------------------------------ one rank
def _status_kb(key: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: the peak).

    VmHWM, not getrusage's ru_maxrss: Linux carries the peak of the process this one was forked from
    across exec into ru_maxrss (the benchmark's own, which holds the data it wrote).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def _counts(data: str) -> tuple[int, int]:
    """(open descriptors, memory maps of the data's files): libraries loaded on first use map
    themselves too, which says nothing about the data path."""
    root = str(Path(data).resolve())
    maps = sum(
        line.split(maxsplit=5)[-1].startswith(root)
        for line in Path("/proc/self/maps").read_text().splitlines()
        if len(line.split()) > 5
    )
    return len(os.listdir("/proc/self/fd")), maps


def measure(data: str, draws: int, world_size: int = 64) -> dict[str, Any]:
    """One rank: open the data, build the sampler over every cell, draw (run in a fresh process)."""
    started = time.perf_counter()
    from mmbert.data.mixture import Mixture, SourceMixture, temperature_probs
    from mmbert.data.sampler import DataSampler, store_counts
    from mmbert.data.shards import open_data

    imports = time.perf_counter() - started
    base_rss, (base_fds, base_maps) = _status_kb("VmRSS"), _counts(data)
    rchar = _rchar()
    t0 = time.perf_counter()
    store = open_data([data], vocab_size=VOCAB)
    counts = store_counts(store)
    # Cells weighed by documents (the documents sweep's big cell holds empty ones), at tau 0.7.
    docs = {name: {lang: store.num_docs(name, lang) for lang in per} for name, per in counts.items()}
    total = sum(n for per in docs.values() for n in per.values())
    sources = []
    for name, per in sorted(docs.items()):
        langs = sorted(per)
        probs = temperature_probs(per, 0.7)
        share = sum(per.values()) / total
        sources.append(
            SourceMixture(name, share, 0.7, langs, [probs[k] for k in langs], [per[k] for k in langs])
        )
    shares = sum(s.share for s in sources)
    for s in sources:
        s.share /= shares
    sampler = DataSampler(store, Mixture("sim", sources), seed=0, rank=0, world_size=world_size)
    first = sampler.next_document()
    startup = time.perf_counter() - t0
    bytes_before, tokens = store.bytes_read, 0
    t1 = time.perf_counter()
    for _ in range(draws):
        tokens += sampler.next_document().tokens.size
    seconds = time.perf_counter() - t1
    fds, maps = _counts(data)
    return {
        "imports_s": imports,
        "startup_s": startup,
        "draws": draws,
        "draws_per_s": draws / seconds,
        "bytes_read_per_draw": (store.bytes_read - bytes_before) / draws,
        "token_bytes_per_draw": 4 * tokens / draws,
        "rchar_per_draw": (_rchar() - rchar) / (draws + 1),
        "base_rss_mb": base_rss / 1024,
        "peak_rss_mb": _status_kb("VmHWM") / 1024,
        "data_rss_mb": (_status_kb("VmHWM") - base_rss) / 1024,
        "open_fds": fds - base_fds,
        "data_maps": maps - base_maps,
        "open_shards": store.open_shards,
        "shard_opens": store.shard_opens,
        "first_document_tokens": int(first.tokens.size),
    }


def run_rank(data: Path, draws: int, nofile: int = NOFILE) -> dict[str, Any]:
    """`measure` in a fresh process under `ulimit -n nofile` (its peak memory is its own)."""
    code = (
        "import json, resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
        f"sys.path.insert(0, {str(ROOT / 'bench')!r})\n"
        "import scale\n"
        "print(json.dumps(scale.measure(sys.argv[1], int(sys.argv[2]))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(data), str(draws)], env=env, capture_output=True,
                          text=True, timeout=1800)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"rank process failed on {data}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sweep(
    tmp: Path, name: str, sizes: list[int], layout, draws: int, keep: bool = False
) -> list[dict[str, Any]]:
    """One rank measured over data of each size (`keep`: the data stays, in `tmp / f"{name}-{size}"`)."""
    rows = []
    for size in sizes:
        data = tmp / f"{name}-{size}"
        t = time.perf_counter()
        shape = write_data(data, layout(size))
        written = time.perf_counter() - t
        row = {name: size, **shape, "write_s": written, **run_rank(data, draws)}
        rows.append(row)
        print(
            f"{name:>9} {size:>11,}: start-up {row['startup_s']:.3f} s, data memory {row['data_rss_mb']:.1f} MB, "
            f"+{row['open_fds']} fds, {row['data_maps']} maps of data files, {row['draws_per_s']:,.0f} draws/s, "
            f"{row['bytes_read_per_draw']:.0f} B read / {row['token_bytes_per_draw']:.0f} B of tokens per draw",
            flush=True,
        )
        if not keep:
            _remove(data)
    return rows


def loader_reads(
    data: Path, ranks: int, rows: int, warmup: int, steps: int, seq_len: int = 1024
) -> dict[str, Any]:
    """Bytes read per rank per step by the training loader: `ranks` ranks simulated in this process
    (`BatchLoader`s of rank r of `ranks`, each over a store of its own, no read-ahead so that the count
    is exact), global batches of `rows` rows of `seq_len`; measured over `steps` steps after `warmup`
    (a store's first open of a shard reads its headers, once per run)."""
    from mmbert.data.loader import BatchLoader
    from mmbert.data.shards import open_data
    from mmbert.recipe import Phase, SourceSpec

    stores = [open_data([data], vocab_size=VOCAB) for _ in range(ranks)]
    weights = {
        s: sum(stores[0].num_tokens(s, lang) for lang in stores[0].languages(s)) for s in stores[0].sources()
    }
    phase = Phase("sim", tokens=10**12, tau=0.7, seq_len=seq_len,
                  sources=[SourceSpec(s, weight=w) for s, w in weights.items() if w > 0])  # fmt: skip
    loaders = [BatchLoader(store, [phase], seed=0, rank=r, world_size=ranks, vocab_size=VOCAB,
                           micro_batch_tokens=8 * seq_len, read_ahead=0) for r, store in enumerate(stores)]  # fmt: skip
    per_rank = []
    for loader, store in zip(loaders, stores, strict=True):
        for _ in range(warmup):
            loader.next_step(rows * seq_len, seq_len, 0.3)
        before = store.bytes_read
        for _ in range(steps):
            loader.next_step(rows * seq_len, seq_len, 0.3)
        per_rank.append((store.bytes_read - before) / steps)
        store.close()
    documents = sum(loaders[0].sampler.realized_docs.values()) / (warmup + steps)
    own = 4 * rows * seq_len / ranks  # uint32 ids (the packer's <bos>/<eos> included: a slight over-count)
    return {
        "ranks": ranks,
        "rows_per_step": rows,
        "seq_len": seq_len,
        "warmup_steps": warmup,
        "steps": steps,
        "documents_per_step": documents,
        "bytes_read_per_rank_per_step": per_rank,
        "own_token_bytes_per_rank_per_step": own,
        "global_token_bytes_per_step": 4 * rows * seq_len,
        "read_over_own": max(per_rank) / own,
    }


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def slope(rows: list[dict[str, Any]], x: str, y: str) -> float:
    """Least-squares growth of `y` per unit of `x` over a sweep."""
    xs = np.array([r[x] for r in rows], dtype=np.float64)
    ys = np.array([r[y] for r in rows], dtype=np.float64)
    return float(np.polyfit(xs, ys, 1)[0]) if len(rows) > 1 else 0.0


# ------------------------------------------------------------------------------------------ sampler vs plan
class _Counts:
    """A store of metadata only: a cell's tokens and documents (a fixed length per cell), no files."""

    def __init__(self, cells: dict[tuple[str, str], tuple[int, int]]) -> None:
        self.cells = cells  # (source, lang) -> (documents, tokens per document)
        self._docs = {k: np.zeros(length, np.uint32) for k, (_, length) in cells.items()}

    def sources(self) -> list[str]:
        return sorted({s for s, _ in self.cells})

    def languages(self, source: str | None = None) -> list[str]:
        return sorted({lang for s, lang in self.cells if source in (None, s)})

    def num_docs(self, source: str, lang: str) -> int:
        return self.cells[(source, lang)][0]

    def num_tokens(self, source: str, lang: str) -> int:
        docs, length = self.cells[(source, lang)]
        return docs * length

    def doc(self, source: str, lang: str, i: int) -> np.ndarray:
        return self._docs[(source, lang)]

    def doc_length(self, source: str, lang: str, i: int) -> int:
        return self.cells[(source, lang)][1]


def sampler_vs_plan(draws: int) -> list[dict[str, Any]]:
    """Each phase of recipes/mmbert-base.yaml on the released counts: realized vs planned language shares."""
    from mmbert.data.mixture import recipe_mixtures
    from mmbert.data.sampler import DataSampler, store_counts
    from mmbert.plan import plan_recipe, released_data_counts
    from mmbert.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "mmbert-base.yaml")
    available = released_data_counts(recipe, [None])
    rng = np.random.default_rng(0)
    cells = {}
    for source, per in sorted(available.items()):
        for lang, n in sorted(per.items()):
            length = int(rng.integers(200, 2000))  # documents of unequal mean length across cells
            cells[(source, lang)] = (max(1, round(n * 1e6 / length)), length)  # the smallest: 1M tokens
    store = _Counts(cells)
    counts = store_counts(store)
    plan = plan_recipe(recipe, counts)  # what `mmbert plan --data` prints for this data
    rows = []
    for index, (phase, mixture) in enumerate(
        zip(recipe.phases, recipe_mixtures(recipe.phases, counts), strict=True)
    ):
        target: dict[str, float] = {}
        for cell in plan["phases"][index]["cells"]:
            target[cell["language"]] = target.get(cell["language"], 0.0) + cell["share"]
        sampler = DataSampler(store, mixture, seed=index)
        t = time.perf_counter()
        for _ in range(draws):
            sampler.next_document()
        seconds = time.perf_counter() - t
        realized = sampler.realized_shares()["language"]
        above = [lang for lang, share in target.items() if share > 0.001]
        errors = {lang: realized.get(lang, 0.0) / target[lang] - 1 for lang in above}
        worst = max(above, key=lambda lang: abs(errors[lang]))
        # The sampling error of a language's share: its documents are a binomial count of the draws.
        p_docs: dict[str, float] = {}
        for (_, lang), p in sampler.doc_probs.items():
            p_docs[lang] = p_docs.get(lang, 0.0) + p
        sd = {lang: math.sqrt((1 - p_docs[lang]) / (draws * p_docs[lang])) for lang in above}
        p_doc = p_docs[worst]
        rows.append(
            {
                "phase": phase.name,
                "draws": draws,
                "draws_per_s": draws / seconds,
                "languages": len(target),
                "languages_above_0.1%": len(above),
                "max_relative_error": abs(errors[worst]),
                "worst_language": worst,
                "worst_target_share": target[worst],
                "worst_sampling_sd": math.sqrt((1 - p_doc) / (draws * p_doc)),
                "mean_abs_relative_error": float(np.mean([abs(e) for e in errors.values()])),
                # The largest error in units of its own sampling error: ~2.5 is the expected largest of
                # ~100 languages drawn exactly at their targets.
                "max_error_in_sd": max(abs(errors[lang]) / sd[lang] for lang in above),
            }
        )
        r = rows[-1]
        print(
            f"plan {phase.name:>8}: {len(above)} of {len(target)} languages above 0.1%, largest relative error "
            f"{100 * r['max_relative_error']:.2f}% ({worst}, target {100 * r['worst_target_share']:.2f}%, "
            f"sampling sd {100 * r['worst_sampling_sd']:.2f}%; largest error {r['max_error_in_sd']:.1f} sd), "
            f"{r['draws_per_s']:,.0f} draws/s",
            flush=True,
        )
    return rows


# ------------------------------------------------------------------------------------------ extrapolation
def extrapolate(docs: list, cells: list, shards: list, layout: dict[str, Any]) -> dict[str, Any]:
    """The real run's per-rank figures from the measured layout plus each sweep's growth."""
    out: dict[str, Any] = {"real": dict(REAL)}
    rows = [*docs, *cells, *shards, layout]
    # Bounded by the store's cache (2 descriptors per open shard), not growing: the most seen.
    out["open_fds"] = {
        "predicted": max(r["open_fds"] for r in rows),
        "bound": f"2 x max_open_shards ({2 * 64})",
    }
    out["data_maps"] = {"predicted": max(r["data_maps"] for r in rows), "bound": "0 (positional reads)"}
    for y in ("data_rss_mb", "startup_s"):
        per = {"cells": slope(cells, "cells", y), "shards": slope(shards, "shards", y)}
        # Documents: what one cell of the sweep's most documents (more than mmBERT's largest cell holds)
        # costs beyond one of the fewest, once: a cell's cost does not depend on its documents.
        by_documents = max(0.0, docs[-1][y] - docs[0][y])
        # Each sweep's size also grows the other's quantities a little (a cell has a shard): the
        # slopes over-count, so the sum is an upper estimate.
        predicted = (
            layout[y] + by_documents + sum(max(0.0, per[k]) * max(0.0, REAL[k] - layout[k]) for k in per)
        )
        out[y] = {
            "growth_per_unit": per,
            "largest_cell_over_smallest": docs[-1][y] - docs[0][y],
            "predicted": predicted,
        }
    # Every draw of the layout opens its shard (thousands of shards, 64 open): the headers and the
    # first and last offsets of two files besides the document's offsets and tokens.
    out["bytes_read_per_token_byte"] = {
        "measured": layout["bytes_read_per_draw"] / max(layout["token_bytes_per_draw"], 1e-9),
        "syscall_bytes_measured": layout["rchar_per_draw"] / max(layout["token_bytes_per_draw"], 1e-9),
    }
    out["targets"] = {
        "data_memory_under_1GB": out["data_rss_mb"]["predicted"] < 1024,
        "startup_under_10s": out["startup_s"]["predicted"] < 10,
        "bytes_read_within_2x": out["bytes_read_per_token_byte"]["measured"] <= 2,
        # From the fewest to the most documents in one cell: memory and start-up stay within noise.
        "no_growth_with_documents": docs[-1]["data_rss_mb"] - docs[0]["data_rss_mb"] < 10
        and docs[-1]["startup_s"] - docs[0]["startup_s"] < 0.5,
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--draws", type=int, default=20_000, help="documents drawn per rank measurement")
    parser.add_argument(
        "--plan-draws", type=int, default=2_000_000, help="documents drawn per phase vs the plan"
    )
    parser.add_argument("--layout-shards", type=int, default=5000, help="shards of the mmBERT-like layout")
    parser.add_argument(
        "--limit-check", type=int, default=0, help="also read this many shards under ulimit -n 1024"
    )
    parser.add_argument("--ranks", type=int, default=8, help="ranks simulated for the loader's reads")
    parser.add_argument("--rows", type=int, default=512, help="rows of 1024 in the loader's global batch")
    parser.add_argument("--warmup", type=int, default=20, help="loader steps before its reads are counted")
    parser.add_argument("--steps", type=int, default=10, help="loader steps whose reads are counted")
    parser.add_argument(
        "--tmp", default=None, help="where the synthetic data is written (default: a temp dir)"
    )
    args = parser.parse_args()
    if args.smoke:
        doc_sizes, cell_sizes, shard_sizes = [10**3, 10**5], [10, 40], [100, 400]
        args.draws, args.plan_draws, args.layout_shards = 500, 2000, 300
        args.rows, args.warmup, args.steps = 64, 2, 2
    else:
        doc_sizes = [10**5, 10**6, 10**7, 10**8, 10**9]
        cell_sizes = [10, 100, 1000, 5000]
        shard_sizes = [100, 1000, 10_000, 20_000]
    result: dict[str, Any] = {
        "command": "python bench/scale.py" + (" --smoke" if args.smoke else ""),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "nofile": NOFILE,
    }  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_dir:
        tmp = Path(tmp_dir)
        result["documents"] = sweep(tmp, "documents", doc_sizes,
                                    lambda n: [("web", "big_Latn", 10, n // 10, 0)]
                                    + [("web", f"l{i:02d}_Latn", 1, 100, 8) for i in range(9)], args.draws)  # fmt: skip
        result["cells"] = sweep(tmp, "cells", cell_sizes,
                                lambda n: [("web", f"l{i:05d}_Latn", 1, 100, 8) for i in range(n)], args.draws)  # fmt: skip
        result["shards"] = sweep(tmp, "shards", shard_sizes,
                                 lambda n: [("web", f"l{i:03d}_Latn", n // 100, 100, 8) for i in range(100)], args.draws)  # fmt: skip
        # Documents of ~1,000 tokens (FineWeb2's order of size), their tokens sparse: real reads, no disk.
        layout = mmbert_layout(args.layout_shards, 100, -1000)
        (row,) = sweep(tmp, "layout", [args.layout_shards], lambda _: layout, args.draws, keep=True)
        result["layout"] = row
        reads = loader_reads(
            tmp / f"layout-{args.layout_shards}", args.ranks, args.rows, args.warmup, args.steps
        )
        result["loader_reads"] = reads
        print(
            f"   loader {reads['ranks']} ranks, {reads['rows_per_step']} rows of {reads['seq_len']} a step: "
            f"bytes read per rank per step {min(reads['bytes_read_per_rank_per_step']):,.0f} to "
            f"{max(reads['bytes_read_per_rank_per_step']):,.0f}, its rows' tokens {reads['own_token_bytes_per_rank_per_step']:,.0f} B "
            f"(at most {reads['read_over_own']:.2f}x; the global batch: {reads['global_token_bytes_per_step']:,} B)",
            flush=True,
        )  # fmt: skip
        _remove(tmp / f"layout-{args.layout_shards}")
        if args.limit_check:
            (result["limit_check"],) = sweep(tmp, "shards", [args.limit_check],
                                             lambda n: [("web", f"l{i:03d}_Latn", n // 100, 10, 8) for i in range(100)], args.draws)  # fmt: skip
    result["sampler_vs_plan"] = sampler_vs_plan(args.plan_draws)
    result["extrapolation"] = extrapolate(
        result["documents"], result["cells"], result["shards"], result["layout"]
    )
    ext = result["extrapolation"]
    ext["targets"]["loader_bytes_read_per_rank_step_within_2x"] = result["loader_reads"]["read_over_own"] <= 2
    print(
        f"real run (~{REAL['cells']:,} cells, ~{REAL['shards']:,} shards, {REAL['documents']:.1e} documents), per rank: "
        f"data memory {ext['data_rss_mb']['predicted']:.0f} MB, start-up {ext['startup_s']['predicted']:.2f} s, "
        f"+{ext['open_fds']['predicted']:.0f} fds, {ext['data_maps']['predicted']:.0f} maps of data files; bytes read "
        f"{ext['bytes_read_per_token_byte']['measured']:.3f}x the tokens' bytes (documents of ~1,000 tokens); "
        f"targets {ext['targets']}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
