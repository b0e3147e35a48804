"""What runs on a threaded source's event loop: its watches are tasks there, not threads."""

from __future__ import annotations

import asyncio

from consul_discovery.client.consul_source import ConsulSource


async def _names() -> list[str]:
    return [task.get_name() for task in asyncio.all_tasks()]


def watch_tasks(source: ConsulSource, prefix: str = "consul-watch-") -> list[str]:
    """Names of the tasks on ``source``'s loop whose name starts with ``prefix``."""
    return [name for name in source.loop.run(_names(), 5.0) if name.startswith(prefix)]
