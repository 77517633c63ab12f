"""Integrations: adapters that plug Tube's transports into host servers and tools.

One module per host server: ``http_server`` (the standard library's ``http.server``), ``wsgi``
(werkzeug's server and gunicorn) with the optional ``flask`` helper, and ``server`` (the ready
:func:`~tube.websocket.serve`); ``upgrade`` holds the public ``upgrade_connection`` for both
request kinds. ASGI comes with the asyncio transport. Each is a thin layer over a transport and
imports only downwards.
"""
