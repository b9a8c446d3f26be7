"""mmbert: train, merge, evaluate and serve massively multilingual ModernBERT-style encoders."""

__version__ = "0.1.0"
