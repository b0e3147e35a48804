"""``python -m services.gateway``: serve on the Flask dev server (development only)."""

from services.common.devserver import run
from services.gateway import create_app

run(create_app, "services.gateway")
