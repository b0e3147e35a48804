"""``python -m services.inventory_service``: serve under uvicorn on SERVICE_PORT (8401)."""

import os

import uvicorn

if __name__ == "__main__":
    uvicorn.run(
        "services.inventory_service:create_app",
        factory=True,
        host=os.environ.get("SERVICE_ADDRESS", "127.0.0.1"),
        port=int(os.environ.get("SERVICE_PORT", "8401")),
    )
