"""gunicorn's ``UvicornWorker`` with Tube's protocol class, as the README shows it.

``gunicorn -k tests.integrations.asgi_gunicorn_worker.TubeUvicornWorker
tests.integrations.asgi_starlette_app:app``
"""

from __future__ import annotations

from uvicorn.workers import UvicornWorker


class TubeUvicornWorker(UvicornWorker):
    """uvicorn's gunicorn worker, serving WebSockets with Tube's protocol class."""

    # uvicorn declares it a plain attribute (not ClassVar) and documents overriding it here.
    CONFIG_KWARGS = {  # noqa: RUF012
        **UvicornWorker.CONFIG_KWARGS,
        "ws": "tube.websocket.asgi:UvicornProtocol",
    }
