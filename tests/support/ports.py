"""A free loopback port, for a server the test starts as a separate process."""

import socket


def free_port() -> int:
    """A port nothing listens on now. Another process could take it before the server binds it; servers
    started in this process bind their socket first instead (servers.serve_app)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
