"""The toy shop's own services: orders (Flask under gunicorn), stock (FastAPI under uvicorn)."""

OWNER = "toy-shop"
