"""Free loopback ports for the servers and Ray nodes that tests start themselves."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable


def free_ports(n: int, avoid: Iterable[int] = ()) -> list[int]:
    """``n`` distinct ports free right now, none of them in ``avoid`` (ports picked earlier
    and not yet bound by their server). All sockets are held until every port is picked:
    picking them one by one lets the OS hand the same port out twice, and Ray refuses a
    node whose components share a port.

    >>> a, b, c = free_ports(3)
    >>> len({a, b, c})
    3
    >>> a in free_ports(50, avoid=[a])
    False
    """
    avoid = set(avoid)
    picked: list[int] = []
    with contextlib.ExitStack() as stack:
        while len(picked) < n:
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port not in avoid:  # else keep it bound, so the OS hands out another
                picked.append(port)
    return picked


def free_port() -> int:
    """One free port, for a single server."""
    return free_ports(1)[0]
