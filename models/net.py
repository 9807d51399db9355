"""Listening sockets for tha's servers and receivers (`tha serve`, `tha serve-web`, the
iFacialMocap receiver): one way to pick the address family, to write the address, and to say
why binding failed."""
from __future__ import annotations

import errno
import socket

from tha.models.errors import ThaError


def host_port(host: str, port: int) -> str:
    """``host:port`` as a URL writes it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def address_family(host: str, port: int, kind: socket.SocketKind) -> socket.AddressFamily:
    """The family to listen on ``host`` with (IPv6 for ``::1``); raises gaierror for a name that
    does not resolve. IPv4 where the name has both, so `localhost` is 127.0.0.1 as clients
    expect; "" is every interface, as bind takes it."""
    families = [info[0] for info in socket.getaddrinfo(host or None, port, type=kind, flags=socket.AI_PASSIVE)]
    return socket.AF_INET if socket.AF_INET in families else families[0]


def bound_socket(host: str, port: int, kind: socket.SocketKind) -> socket.socket:
    """A socket of ``kind`` bound to (host, port); OSError when it cannot be, the socket closed.
    A stream socket reuses the address, as uvicorn's and socketserver's do, so a restart does
    not wait out the last run's closed connections."""
    sock = socket.socket(address_family(host, port, kind), kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def foreign_address(err: OSError) -> bool:
    """Whether binding failed on the address (a name that does not resolve, an address this
    machine lacks) rather than on the port: the advice differs."""
    return isinstance(err, socket.gaierror) or err.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)


def listen_error(err: OSError, host: str, port: int, *, option: str = "--host",
                 example: str = "127.0.0.1", what: str = "") -> ThaError:
    """One line that names the cause: a busy port, or an address (given by ``option``) this
    machine cannot listen on, with ``example`` as one it can; ``what`` names the listener where
    the command runs more than one."""
    listener = f"cannot listen for {what}" if what else "cannot listen"
    where = f"{listener} on {host_port(host, port)} ({err.strerror or err})"
    if foreign_address(err):
        return ThaError(f"{where}; {option} {host} is not an address of this machine: give one such as {example}")
    return ThaError(f"{where}; pass another --port or stop the program using it")
