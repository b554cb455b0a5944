"""``python -m var_fast.cli``: the var-fast command line (also under torchrun)."""
import sys

from var_fast.cli import main

sys.exit(main())
