"""``python -m services.user_service``: serve on the Flask dev server (development only)."""

from services.common.devserver import run
from services.user_service import create_app

run(create_app, "services.user_service")
