"""Document sources: the bundled corpus, local files, Hugging Face datasets and MDS shards.

Every source yields `Document`s (one text in one language) so that `mmbert prepare` treats them alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    """One training document: its text, its FineWeb2-style language key (`fra_Latn`), where it came from."""

    text: str
    lang: str
    source: str
    doc_id: str
    meta: dict[str, Any] = field(default_factory=dict)
