"""The sans-I/O core of Tube: handshake, frames and the connection state machine.

Nothing here touches a socket, a thread or a clock; the transports in
:mod:`tube.websocket.threads` drive it.
"""
