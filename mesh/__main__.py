"""``python -m consul_discovery.mesh intentions ...`` (see ``intentions_cli``)."""

from __future__ import annotations

import sys

from consul_discovery.mesh.intentions_cli import main


def run(argv: list[str]) -> int:
    """Dispatch the one command group there is: ``intentions``."""
    usage = "usage: python -m consul_discovery.mesh intentions list|allow|deny|delete ..."
    if argv and argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    if not argv or argv[0] != "intentions":
        print(usage, file=sys.stderr)
        return 2
    return main(argv[1:])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
