"""The catalog in a browser: a JSON API and a page, as aiohttp routes.

Needs the ``web`` extra (``pip install 'modelvault[web]'``: aiohttp, and Pillow
for thumbnails); nothing else in modelvault imports this package.

    from modelvault.web import setup
    setup(app, DatabaseManager(), prefix="/modelvault")  # app: an aiohttp Application

``modelvault serve`` runs it alone. The guard module says what is refused and why.
"""

from modelvault.web.app import build_app, setup

__all__ = ["build_app", "setup"]
