"""The threaded transport: :class:`Connection`, its reader thread, the incoming channel, timers.

The public names are re-exported by :mod:`tube.websocket`; import them from there.
"""
