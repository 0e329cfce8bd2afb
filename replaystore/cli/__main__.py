"""`python -m replaystore.cli` runs the same command as the `replaystore` script."""

import sys

from replaystore.cli import main

sys.exit(main())
