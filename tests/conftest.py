"""Fixtures shared by the tests (the builders they use are in `tests/helpers/`, one module per area:
model, tokenizer, corpora, data, training, mds, exports, files, processes, composer). Everything is built in
the test; nothing is downloaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from mmbert import MmBertConfig
from mmbert.data.prepare import prepare
from mmbert.data.sources import open_source
from tests.helpers.tokenizer import make_tokenizer
from tests.helpers.training import fake_documents, write_recipe

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_config() -> MmBertConfig:
    return MmBertConfig.preset("tiny")


@pytest.fixture
def one_thread():
    """For the tiny model a second thread only adds overhead (and spinning threads cost on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def train_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """(recipe without variants, recipe with variants) over a tokenizer and prepared data (source `web`,
    4 fake languages x 30 documents), built once for the training and distributed tests."""
    root = tmp_path_factory.mktemp("train_inputs")
    docs = fake_documents()
    tok = make_tokenizer(root / "tok", [text for _, text in docs])
    path = root / "docs.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, (lang, text) in enumerate(docs):
            f.write(json.dumps({"text": text, "lang": lang, "id": str(i)}, ensure_ascii=False) + "\n")
    source = open_source(str(path), lang_field="lang")
    # The fake languages' keys are not real ones.
    prepare(source, tok, root / "data", name="web", progress=False, allow_unknown_languages=True)
    plain = write_recipe(root / "recipe.yaml", tok, root / "data", variants=False)
    return plain, write_recipe(root / "variants.yaml", tok, root / "data")
