"""Builders the tests share, one module per area (fixtures stay in `tests/conftest.py`)."""
