"""The base class of expected failures: bad input, a refused action, a run that cannot go on.

Library code raises a subclass with a message that names the file, line or key; the command layer
(`mmbert.cli`) prints that message on one line and exits non-zero, and shows a traceback only with
`--debug`. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class MmbertError(Exception):
    """An expected failure whose message is complete on its own (no traceback needed to act on it)."""
