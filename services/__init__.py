"""The example platform: user-service, order-service and a gateway, plus a client.

Each service is an ordinary Flask app built by ``create_app(config)``; they reach each
other only by service name through ``consul_discovery.client`` and register through
``registry/``. ``services.client`` is the Python client of the public API.
"""
