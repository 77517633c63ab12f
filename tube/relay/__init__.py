"""The Tube relay: an end-to-end-encrypted file relay (server, protocol, peers)."""
