"""``python -m consul_discovery.client``: see consul_discovery.client.cli."""

import sys

from consul_discovery.client.cli import main

sys.exit(main())
