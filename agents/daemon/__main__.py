"""``python -m agents.daemon``: the agent process."""

import sys

from agents.daemon.main import main

sys.exit(main())
