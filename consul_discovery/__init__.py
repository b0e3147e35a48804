"""consul_discovery: Consul service registration, discovery and balancing for Python services.

One distinctive import name over the repository's library folders (see the README's
"Import names" table):

==================================  ======================  ==============================
import                              repository folder       what it owns
==================================  ======================  ==============================
``consul_discovery.connection``     ``consul_connection/``  how to reach Consul
``consul_discovery.registry``       ``registry/``           an instance's life in Consul
``consul_discovery.client``         ``discovery_client/``   watch, pick, call, retry
``consul_discovery.config``         ``config_client/``      live settings from Consul KV
``consul_discovery.mesh``           ``mesh/``               Connect identity, mTLS, intentions
``consul_discovery.testing``        ``consul_discovery/``   real Consul agents for tests
==================================  ======================  ==============================

The core needs only requests, urllib3, py-consul and tenacity; each integration takes an
extra (``pip install 'consul-discovery[flask]'``; the table: ``consul_discovery.extras``).
The pytest plugin is opt-in: ``pytest -p consul_discovery.pytest_plugin``.
"""

__version__ = "0.2.0"

__all__ = ["__version__"]
