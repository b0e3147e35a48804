"""The toy shop's own `services` package: a name consul-discovery must not touch.

(Its two services are the README's quick start, which tests/packaging runs as written.)
"""

OWNER = "toy-shop"
