"""mmbert: train, merge, evaluate and serve massively multilingual ModernBERT-style encoders.

The model classes are imported lazily (PEP 562), so that `import mmbert.data...` in a worker process or
`mmbert --help` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "MmBertConfig",
    "MmBertModel",
    "MmBertForMaskedLM",
    "MmBertForSequenceClassification",
    "MmBertForTokenClassification",
    "MmBertForQuestionAnswering",
    "MmBertForMultipleChoice",
    "__version__",
]

_LAZY = {
    "MmBertConfig": "mmbert.config",
    "MmBertModel": "mmbert.model",
    "MmBertForMaskedLM": "mmbert.model",
    "MmBertForSequenceClassification": "mmbert.model",
    "MmBertForTokenClassification": "mmbert.model",
    "MmBertForQuestionAnswering": "mmbert.model",
    "MmBertForMultipleChoice": "mmbert.model",
}

if TYPE_CHECKING:
    from mmbert.config import MmBertConfig
    from mmbert.model import (
        MmBertForMaskedLM,
        MmBertForMultipleChoice,
        MmBertForQuestionAnswering,
        MmBertForSequenceClassification,
        MmBertForTokenClassification,
        MmBertModel,
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmbert' has no attribute {name!r}")
