"""`python -m server.plan`: `wai plan` on a node where only the config's modules are installed."""

import sys

from server.plan.cli import main

sys.exit(main())
