"""``python -m discovery_client``: see discovery_client.cli."""

import sys

from discovery_client.cli import main

sys.exit(main())
