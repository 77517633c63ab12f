"""Integrations: adapters that plug Tube's transports into host servers and tools.

One module per host server (``http_server`` for the standard library's ``http.server`` today;
WSGI and ASGI later). Each is a thin layer over a transport and imports only downwards.
"""
