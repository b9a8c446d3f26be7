"""The package's layering as imports, each checked in a fresh interpreter so that no other test's
imports hide one: the model (and its Hugging Face file format) imports nothing of data, tokenizers or
training; the data layer imports nothing of the recipe or training."""

from __future__ import annotations

import json
import subprocess
import sys

# What `import mmbert.model, mmbert.hf` may load of the package: the model, its config and attention,
# its weight files, and the small modules they stand on (atomic writes, errors, the special ids).
MODEL_CLOSURE = {
    "mmbert",
    "mmbert.attention",
    "mmbert.config",
    "mmbert.errors",
    "mmbert.hf",
    "mmbert.io",
    "mmbert.model",
    "mmbert.process",
    "mmbert.tokens",
    "mmbert.weights",
}
# Third-party packages the model never needs: document readers and tokenizer libraries.
NOT_IMPORTED = ("datasets", "pyarrow", "tokenizers", "transformers", "zstandard")


def _imported_after(statement: str) -> list[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_model_imports_no_data_reader_nor_tokenizer():
    modules = _imported_after("import mmbert.model, mmbert.hf")
    ours = {m for m in modules if m == "mmbert" or m.startswith("mmbert.")}
    assert ours - MODEL_CLOSURE == set(), "the model now imports these: keep them out, or widen MODEL_CLOSURE"
    assert "mmbert.model" in ours and "mmbert.hf" in ours  # the check ran on the package under test
    assert [m for m in NOT_IMPORTED if m in modules] == []


def test_the_data_layer_imports_no_recipe():
    """The data layer owns the mixture's schema (`mmbert.data.mixture`): the recipe imports it, not back."""
    modules = _imported_after("import mmbert.data.loader, mmbert.data.prepare")
    assert "mmbert.data.loader" in modules
    assert [m for m in modules if m in ("mmbert.recipe", "mmbert.schedule", "mmbert.train")] == []
