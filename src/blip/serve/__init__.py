"""`blip serve`: a FastAPI app with a page of its own (no CDN) for caption, ask, match, Grad-CAM and search."""

from blip.serve.app import create_app

__all__ = ["create_app"]
