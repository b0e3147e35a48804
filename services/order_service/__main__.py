"""``python -m services.order_service``: serve on the Flask dev server (development only)."""

from services.common.devserver import run
from services.order_service import create_app

run(create_app, "services.order_service")
