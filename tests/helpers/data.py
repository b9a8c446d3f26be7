"""Stand-ins for the data layer: an in-memory `TokenStore`, recipe phases from their fields."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmbert.recipe import Phase, _build

# Documents (their lengths) of a multilingual web source and a code source: 8000 tokens of French,
# 2000 of German, 400 of Faroese, 1000 of English, 3000 of code.
WEB_AND_CODE: dict[tuple[str, str], list[int]] = {
    ("web", "fra_Latn"): [20] * 400,  # 8000 tokens
    ("web", "deu_Latn"): [20] * 100,  # 2000
    ("web", "fao_Latn"): [20] * 20,  # 400
    ("web", "eng_Latn"): [20] * 50,  # 1000
    ("code", "code"): [30] * 100,
}


def make_phase(**fields: Any) -> Phase:
    """A recipe phase (`mmbert.recipe.Phase`) from its fields, with a small default for the rest."""
    data = {"name": "p", "tokens": 1000, "languages": "all", "tau": 0.5, "sources": [], **fields}
    return _build(Phase, data, "")


class FakeStore:
    """A TokenStore stand-in: (source, lang) -> documents of given lengths (token values = doc index)."""

    def __init__(self, cells: dict[tuple[str, str], list[int]]) -> None:
        self.cells = cells

    def sources(self) -> list[str]:
        return sorted({s for s, _ in self.cells})

    def languages(self, source: str | None = None) -> list[str]:
        return sorted({lang for s, lang in self.cells if source in (None, s)})

    def num_tokens(self, source: str, lang: str) -> int:
        return sum(self.cells[(source, lang)])

    def num_docs(self, source: str, lang: str) -> int:
        return len(self.cells[(source, lang)])

    def doc(self, source: str, lang: str, i: int) -> np.ndarray:
        return np.full(self.cells[(source, lang)][i], i, dtype=np.uint32)

    def doc_length(self, source: str, lang: str, i: int) -> int:
        return self.cells[(source, lang)][i]

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: {lang: self.num_tokens(s, lang) for lang in self.languages(s)} for s in self.sources()}
