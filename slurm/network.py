"""Where the ranks of a job meet: the master's address and this node's interface, from Slurm's node list.

Two classic multi-node failures come from leaving this to chance: a master *name* that each node
resolves differently (Debian's ``127.0.1.1 <hostname>`` line makes the master itself see a loopback
address), and gloo advertising a rank on an interface the other nodes cannot reach (it binds to
whatever the local hostname resolves to). So every rank resolves the first node of the job to one
IPv4 address, and uses as gloo's interface the one that carries its own traffic to that address
(``GLOO_SOCKET_IFNAME``, unless the cluster's ``[slurm] env`` already names one). On one node,
loopback. NCCL picks its own interfaces; set ``NCCL_SOCKET_IFNAME`` / ``NCCL_IB_HCA`` per cluster
(docs/scaling.md).
"""
from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from ila_fast.errors import UserError

SIOCGIFADDR = 0x8915


@dataclass
class Route:
    master_host: str
    address: str           # what every rank connects to (MASTER_ADDR)
    interface: str | None  # gloo's interface on this node (GLOO_SOCKET_IFNAME); None: gloo's own choice
    how: str               # how the interface was chosen, for the log

    def describe(self) -> str:
        where = f"interface {self.interface}" if self.interface else "gloo's default interface"
        return f"master {self.master_host} = {self.address}, {where} ({self.how})"


def interface_addresses() -> dict[str, str]:
    """IPv4 address of every interface that has one (name -> address)."""
    found = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue   # no IPv4 address
            found[name] = socket.inet_ntoa(raw[20:24])
    return found


def resolve_ipv4(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"{socket.gethostname()}: the job's first node {host!r} does not resolve here ({e}); "
                        "every node must resolve every node name (DNS or /etc/hosts)") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def source_address(address: str) -> str | None:
    """The local address this node's traffic to ``address`` leaves from (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((address, 9))
        except OSError:
            return None   # no route from here
        return s.getsockname()[0]


def rendezvous_route(hosts: list[str]) -> Route:
    """The master's address and this node's gloo interface for a job on ``hosts`` (Slurm's node list,
    rank 0's node first). Sets GLOO_SOCKET_IFNAME when it chose an interface and none was set."""
    master = hosts[0]
    if len(set(hosts)) == 1:
        address, interface, how = "127.0.0.1", "lo", "all ranks on one node: loopback"
    else:
        addresses = resolve_ipv4(master)
        routable = [a for a in addresses if not ipaddress.ip_address(a).is_loopback]
        local = interface_addresses()
        if routable:
            address = routable[0]
            source = source_address(address)
            interface = next((name for name, a in local.items() if a == source), None)
            how = (f"this node's route to the master leaves from {source}" if interface else
                   f"no route from {socket.gethostname()} to {address}: gloo's default")
        else:
            # only the master itself should see its own name as loopback (127.0.1.1); the others
            # would connect to themselves
            here, seen = socket.gethostname(), ", ".join(addresses)
            if here.split(".")[0] != master.split(".")[0]:
                raise UserError(f"{here}: the job's first node {master!r} resolves to {seen} here, a loopback "
                                "address other nodes cannot use; fix DNS or /etc/hosts on this node")
            outside = {name: a for name, a in local.items() if not ipaddress.ip_address(a).is_loopback}
            if len(outside) != 1:
                names = ", ".join(sorted(outside)) or "none"
                raise UserError(f"{here}: this node's name resolves to {seen} (loopback) and it has {len(outside)} "
                                f"other interfaces ({names}): name the one the other nodes reach, e.g. "
                                "[slurm] env = [\"GLOO_SOCKET_IFNAME=eth0\"]")
            interface, address = next(iter(outside.items()))
            how = f"{master} resolves to loopback here; its only other interface"
    if os.environ.get("GLOO_SOCKET_IFNAME"):
        return Route(master, address, os.environ["GLOO_SOCKET_IFNAME"], "GLOO_SOCKET_IFNAME set by the job")
    if interface:
        os.environ["GLOO_SOCKET_IFNAME"] = interface
    return Route(master, address, interface, how)
