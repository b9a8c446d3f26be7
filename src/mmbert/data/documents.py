"""The document types: one text in one language (`Document`), or its token ids (`TokenizedDocument`).

The bundled corpus (`mmbert.data.corpus`) and every document source (`mmbert.data.sources`) yield
them; they live apart from both so that the corpus does not depend on the sources that read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Document:
    """One training document: its text, its FineWeb2-style language key (`fra_Latn`), where it came from."""

    text: str
    lang: str
    source: str
    doc_id: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TokenizedDocument:
    """A document that arrives already tokenized (MDS shards): token ids instead of text."""

    tokens: np.ndarray
    lang: str
    source: str
    doc_id: str
