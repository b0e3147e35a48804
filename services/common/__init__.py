"""Pieces every service shares: JSON errors, validation, SQLite, access log, OpenAPI."""
