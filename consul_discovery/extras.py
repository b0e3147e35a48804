"""Which optional dependency ("extra") each integration needs, and the error that says so.

The core (``pip install consul-discovery``) registers an instance and discovers and calls
services with requests. Each integration lives in a module of its own that imports its
third-party package at the top; when the package is missing, that import raises
:class:`ExtraMissingError`, which names the module, the package and the exact ``pip``
command, e.g.::

    consul_discovery.registry.flask needs Flask: pip install 'consul-discovery[flask]'

The same table is the ``[project.optional-dependencies]`` of ``pyproject.toml`` (a test
holds the two together).
"""

from __future__ import annotations

DISTRIBUTION = "consul-discovery"

#: extra name -> the package (as people call it) that the extra installs.
EXTRAS: dict[str, str] = {
    "flask": "Flask",
    "httpx": "httpx",
    "http2": "h2",
    "speedups": "orjson",
    "gunicorn": "gunicorn",
    "uvicorn": "uvicorn",
    "prometheus": "prometheus_client",
    "yaml": "PyYAML",
    "tracing": "opentelemetry-api",
    "testing": "pytest",
}

#: integration module -> the extra it cannot be imported without. Every other module of
#: the package is core: it imports with the core's dependencies alone (some use an
#: extra when it is there: ``consul_discovery.registry.metrics`` publishes gauges with
#: prometheus_client, ``consul_discovery.client.propagation`` follows OpenTelemetry).
INTEGRATIONS: dict[str, str] = {
    "consul_discovery.registry.flask": "flask",
    "consul_discovery.config.flask": "flask",
    "consul_discovery.client.httpx_transport": "httpx",
    "consul_discovery.client.httpx_pools": "httpx",
    "consul_discovery.client.httpx_shell": "httpx",
    "consul_discovery.mesh.uvicorn": "uvicorn",
    "consul_discovery.connection.aio_http2": "http2",
    "consul_discovery.client.metrics": "prometheus",
    "consul_discovery.pytest_plugin": "testing",
}


class ExtraMissingError(ImportError):
    """An integration's optional dependency is not installed; the message says how to add it."""

    def __init__(self, feature: str, extra: str, cause: ImportError | None = None) -> None:
        self.feature = feature
        self.extra = extra
        detail = f" ({cause})" if cause is not None and str(cause) else ""
        super().__init__(
            f"{feature} needs {EXTRAS[extra]}: {install_command(extra)}{detail}",
            name=cause.name if cause is not None else None,
        )


def install_command(extra: str) -> str:
    """``pip install 'consul-discovery[<extra>]'`` (the extra must be a known one)."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(sorted(EXTRAS))}")
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def missing(feature: str, extra: str, cause: ImportError) -> ExtraMissingError:
    """The error to raise from ``except ImportError as cause`` around an optional import.

    Use it as ``raise missing(__name__, "flask", exc) from exc``: ``feature`` is the module
    (or function) that needs the package.
    """
    return ExtraMissingError(feature, extra, cause)
