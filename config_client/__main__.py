"""``python -m config_client``: see ``config_client.cli``."""

import sys

from config_client.cli import main

sys.exit(main())
