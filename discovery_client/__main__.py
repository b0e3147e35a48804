"""``python -m consul_discovery.client``: see consul_discovery.client.cli."""

import sys

from consul_discovery.client.cli import MODULE_PROG, main

sys.exit(main(prog=MODULE_PROG))
