"""Rendezvous address and gloo interface from a job's node list (slurm/network.py), without a cluster.

Name resolution is replaced per test; the interfaces and routes are this machine's own (a UDP
connect sends nothing). The multi-node cluster tests run the same code across real namespaces.
"""
import ipaddress
import socket

import pytest
from ila_fast.slurm import network

from ila_fast.errors import UserError


@pytest.fixture(autouse=True)
def _no_preset_interface(monkeypatch):
    # set first, so that teardown restores the original, whatever the code under test exports
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "unset")
    monkeypatch.delenv("GLOO_SOCKET_IFNAME")


def resolves(monkeypatch, table: dict[str, list[str]], here: str):
    def getaddrinfo(host, port, family=0, type=0, *args):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in table[host]]

    monkeypatch.setattr(network.socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(network.socket, "gethostname", lambda: here)


def outside_interface() -> tuple[str, str]:
    outside = {n: a for n, a in network.interface_addresses().items() if not ipaddress.ip_address(a).is_loopback}
    if not outside:
        pytest.skip("this machine has no non-loopback IPv4 interface")
    return next(iter(sorted(outside.items())))


def test_one_node_meets_on_loopback():
    route = network.rendezvous_route(["n1", "n1"])
    assert (route.address, route.interface) == ("127.0.0.1", "lo")
    assert network.os.environ["GLOO_SOCKET_IFNAME"] == "lo"


def test_master_address_and_the_interface_that_routes_to_it(monkeypatch):
    name, address = outside_interface()
    resolves(monkeypatch, {"n1": ["127.0.1.1", address]}, here="n2")   # loopback entries are passed over
    route = network.rendezvous_route(["n1", "n2"])
    assert (route.address, route.interface) == (address, name)
    assert network.os.environ["GLOO_SOCKET_IFNAME"] == name
    assert route.describe().startswith(f"master n1 = {address}, interface {name}")


def test_a_master_name_that_is_loopback_elsewhere_is_refused(monkeypatch):
    resolves(monkeypatch, {"n1": ["127.0.1.1"]}, here="n2")
    with pytest.raises(UserError, match="'n1' resolves to 127.0.1.1 here, a loopback address other nodes cannot use"):
        network.rendezvous_route(["n1", "n2"])


def test_on_the_master_its_own_loopback_name_falls_back_to_its_only_interface(monkeypatch):
    name, address = outside_interface()
    monkeypatch.setattr(network, "interface_addresses", lambda: {"lo": "127.0.0.1", name: address})
    resolves(monkeypatch, {"n1": ["127.0.1.1"]}, here="n1")
    route = network.rendezvous_route(["n1", "n2"])
    assert (route.address, route.interface) == (address, name)
    monkeypatch.setattr(network, "interface_addresses", lambda: {"lo": "127.0.0.1", "a0": "10.0.0.1", "b0": "10.1.0.1"})
    with pytest.raises(UserError, match=r"2 other interfaces \(a0, b0\).*GLOO_SOCKET_IFNAME"):
        network.rendezvous_route(["n1", "n2"])


def test_an_interface_set_by_the_job_is_kept(monkeypatch):
    name, address = outside_interface()
    resolves(monkeypatch, {"n1": [address]}, here="n2")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "ib0")
    route = network.rendezvous_route(["n1", "n2"])
    assert (route.address, route.interface, route.how) == (address, "ib0", "GLOO_SOCKET_IFNAME set by the job")


def test_an_unresolvable_master_is_named(monkeypatch):
    resolves(monkeypatch, {}, here="n2")
    with pytest.raises(UserError, match="first node 'n1' does not resolve here"):
        network.rendezvous_route(["n1", "n2"])
