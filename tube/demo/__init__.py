"""The chat demo that ``python -m tube.demo`` runs: a page whose tabs chat over WebSockets.

The page and the WebSocket endpoint are served by one :func:`tube.websocket.serve` server: its
``process_request`` answers the page, and ``GET /ws`` is upgraded to a WebSocket. Every chat line
a tab sends is broadcast to every open connection.
"""
