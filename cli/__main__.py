"""`python -m cli VERB ...`: the `aesthetic` command without its console script (torchrun -m cli curate ...)."""

import sys

from cli.main import main

sys.exit(main())
