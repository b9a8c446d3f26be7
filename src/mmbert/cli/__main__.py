"""`python -m mmbert.cli COMMAND ...` (what `torchrun ... -m mmbert.cli train` runs)."""

import sys

from mmbert.cli import console

sys.exit(console())
