"""The toy shop's own registry of product categories (nothing to do with Consul)."""

OWNER = "toy-shop"
CATEGORIES = ("fruit", "tools")
