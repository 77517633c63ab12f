"""Interop tests against real peers: websockets, Node ws, headless Chromium."""
