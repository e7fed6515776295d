"""`python -m benchmarks.slow_http PORT DELAY`: a local HTTP server that answers every GET after DELAY seconds."""

from gevent import monkey

monkey.patch_all()

import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402


class NoDelayServer(WSGIServer):
    """TCP_NODELAY on every connection: the headers and the body go out in two writes, and with Nagle's
    algorithm the body would wait for the client's delayed ACK (40 ms), which no job processor can help."""

    def do_handle(self, sock, address):  # type: ignore[no-untyped-def]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().do_handle(sock, address)


def main() -> None:
    port, delay = int(sys.argv[1]), float(sys.argv[2])

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        gevent.sleep(delay)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"ok\n"]

    NoDelayServer(("127.0.0.1", port), app, log=None, backlog=2048).serve_forever()


if __name__ == "__main__":
    main()
