"""The threaded transport: :class:`Connection`, who reads its socket, the incoming channel, timers.

The public names are re-exported by :mod:`tube.websocket`; import them from there.
"""
