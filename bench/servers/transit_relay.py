"""magic-wormhole's transit relay (``magic-wormhole-transit-relay``), as its twistd plugin runs it.

``twistd transitrelay --port=tcp:PORT:interface=127.0.0.1`` builds its service with
``wormhole_transit_relay.server_tap.makeService``; this wrapper calls that very function with
the same endpoint string (port 0: the kernel picks a free one), so the relay is configured
exactly as the plugin configures it (no usage database, no WebSocket listener, its stats timer
included), then prints ``listening on HOST:PORT`` once the port is bound and runs the reactor
(epoll on Linux, twistd's default). Bound to 127.0.0.1 only.
"""

import argparse
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    from twisted.internet import reactor
    from wormhole_transit_relay import server_tap

    config = server_tap.Options()
    config.parseOptions([f"--port=tcp:{args.port}:interface={args.host}"])
    service = server_tap.makeService(config, reactor=reactor)
    service.startService()
    listener = service.services[0]  # the TCP StreamServerEndpointService

    def bound(port):
        print(f"listening on {args.host}:{port.getHost().port}", flush=True)

    def failed(failure):
        print(f"transit relay failed to listen: {failure.getErrorMessage()}", file=sys.stderr)
        reactor.stop()

    listener._waitingForPort.addCallbacks(bound, failed)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
