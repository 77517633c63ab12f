"""The chat demo that ``python -m tube`` runs: a page whose tabs chat over WebSockets.

The page and the WebSocket endpoint are served by one :class:`http.server.ThreadingHTTPServer`;
:func:`tube.websocket.upgrade_connection` turns ``GET /ws`` into a WebSocket. Every chat line
a tab sends is broadcast to every open connection.
"""
