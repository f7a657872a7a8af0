"""`python -m engine.cli ...`: the same as `stark ...`."""

import sys

from engine.cli.main import main

sys.exit(main())
