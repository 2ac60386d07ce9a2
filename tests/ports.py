"""Free TCP ports for servers a test starts (never from the kernel's ephemeral range)."""

from __future__ import annotations

import random
import socket

#: Ray's worker processes listen on 10002-19999 by default
_LOW = 20_000


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on all interfaces, between Ray's worker ports and the
    kernel's ephemeral range. A port from the ephemeral range (what binding port 0 gives) can
    become the local port of an outgoing connection (Ray's, the engine's channels') before the
    server binds it, and the bind then fails for as long as that connection lives."""
    high = min(_ephemeral_start(), 32_768)
    rng = random.Random()
    ports: list[int] = []
    for _ in range(10_000):
        if len(ports) == n:
            return ports
        port = rng.randrange(_LOW, high)
        if port in ports:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (as servers bind)
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        ports.append(port)
    raise AssertionError(f"no {n} free ports in {_LOW}..{high}")


def free_port() -> int:
    """One port as :func:`free_ports` picks them."""
    return free_ports(1)[0]
