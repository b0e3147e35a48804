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
==================================  ======================  ==============================
"""

__version__ = "0.2.0"

__all__ = ["__version__"]
