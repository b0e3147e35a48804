"""``python -m consul_discovery.config``: see ``consul_discovery.config.cli``."""

import sys

from consul_discovery.config.cli import main

sys.exit(main())
