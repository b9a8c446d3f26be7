"""The paper's evaluation, runnable: `mmbert benchmark TASK` (see `run.py`).

settings.py   versioned protocol files (resources/benchmarks/*.yaml), key=value overrides
data.py       HF datasets by name or local files in the same layout, with their revision / sha256
kinds.py      classification, regression, multiple choice, extractive QA, token classification
metrics.py    GLUE metrics, SQuAD EM/F1, entity-level F1
mteb_tasks.py MTEB tasks through the `mteb` package (optional), a local STS task
paper.py      the paper's figures; report.py the markdown report
"""

from mmbert.benchmark.run import (
    BenchmarkOptions,
    BenchmarkResult,
    FamilyResult,
    run_benchmark,
    run_family,
)
from mmbert.benchmark.settings import FAMILIES

__all__ = ["FAMILIES", "BenchmarkOptions", "BenchmarkResult", "FamilyResult", "run_benchmark", "run_family"]
