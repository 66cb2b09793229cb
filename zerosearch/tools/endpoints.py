"""Server addresses: ``"h1,h2:6003,http://h3:7000"`` -> base URLs, and a seeded per-request seed."""

from __future__ import annotations

import hashlib
from typing import Sequence


def parse_endpoints(hosts: str | Sequence[str], port: int, key: str = "host") -> list[str]:
    """Base URLs (``http://host:port``) for a comma-separated host list or a list of hosts.

    An entry may be ``host`` (uses ``port``), ``host:port``, or a full ``http(s)://`` URL. ``key``
    names the config key in error messages.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port for {key} must be an int in 1..65535, got {port!r}")
    entries = hosts.split(",") if isinstance(hosts, str) else list(hosts)
    urls = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"{key}: every host must be a string, got {entry!r}")
        entry = entry.strip()
        if not entry:
            continue
        if entry.startswith(("http://", "https://")):
            urls.append(entry.rstrip("/"))
        elif entry.count(":") == 1:
            host, _, entry_port = entry.partition(":")
            if not entry_port.isdigit() or not 0 < int(entry_port) < 65536:
                raise ValueError(f"{key}: bad port in {entry!r}")
            urls.append(f"http://{host}:{int(entry_port)}")
        elif ":" in entry:  # a bare IPv6 address
            urls.append(f"http://[{entry.strip('[]')}]:{port}")
        else:
            urls.append(f"http://{entry}:{port}")
    if not urls:
        raise ValueError(f"{key} must name at least one server, got {hosts!r}")
    return urls


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from ``parts`` (same parts -> same seed, across runs and machines)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
