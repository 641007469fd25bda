"""Loaded by every Python process the README test starts (this folder is first on PYTHONPATH):
no connection leaves the machine, so the README's network commands end with their documented
error on any machine, and none downloads or uploads anything. Loopback and Unix sockets (W&B's
local service, DDP's gloo rendezvous) still work."""

import errno
import socket

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo
REASON = "the README test allows no network"


def _local(host: object) -> bool:
    name = host.decode() if isinstance(host, bytes) else str(host)
    return name in ("", "None", "localhost", "::1", "0.0.0.0") or name.startswith("127.")


def _getaddrinfo_local(host, *args, **kwargs):
    if host is not None and not _local(host):
        raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known ({REASON})")
    return _getaddrinfo(host, *args, **kwargs)


def _remote(sock: socket.socket, address: object) -> bool:
    families = (socket.AF_INET, socket.AF_INET6)
    return sock.family in families and isinstance(address, tuple) and not _local(address[0])


def _connect_local(self, address):
    if _remote(self, address):
        raise OSError(errno.ENETUNREACH, f"Network is unreachable ({REASON})")
    return _connect(self, address)


def _connect_ex_local(self, address):
    return errno.ENETUNREACH if _remote(self, address) else _connect_ex(self, address)


socket.getaddrinfo = _getaddrinfo_local
socket.socket.connect = _connect_local
socket.socket.connect_ex = _connect_ex_local
