"""``python -m fleetwave.cli``: the same as the ``fleetwave`` console script."""

import sys

from fleetwave.cli.main import main

sys.exit(main())
