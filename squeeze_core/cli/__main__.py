"""`python -m squeeze_core.cli` (what `accelerate launch -m squeeze_core.cli ...` runs): the `squeeze` command."""

import sys

from . import main

sys.exit(main())
