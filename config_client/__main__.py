"""``python -m consul_discovery.config``: see ``consul_discovery.config.cli``."""

import sys

from consul_discovery.config.cli import MODULE_PROG, main

sys.exit(main(prog=MODULE_PROG))
