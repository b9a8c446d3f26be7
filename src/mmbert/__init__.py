"""mmbert: train, merge, evaluate and serve massively multilingual ModernBERT-style encoders."""

from mmbert.config import MmBertConfig
from mmbert.model import MmBertForMaskedLM, MmBertForSequenceClassification, MmBertModel

__version__ = "0.1.0"
__all__ = [
    "MmBertConfig",
    "MmBertModel",
    "MmBertForMaskedLM",
    "MmBertForSequenceClassification",
    "__version__",
]
