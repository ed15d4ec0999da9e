"""`python -m ablate ...`: the ablate command line (also how study workers are started)."""

import sys

from ablate.cli import main

sys.exit(main())
