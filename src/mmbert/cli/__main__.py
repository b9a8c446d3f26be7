"""`python -m mmbert.cli COMMAND ...` (what `torchrun ... -m mmbert.cli train` runs)."""

import sys

from mmbert.cli import main

sys.exit(main())
