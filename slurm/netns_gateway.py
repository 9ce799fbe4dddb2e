"""Loopback gateway from this machine's own network namespace into the cluster's controller namespace.

``slurm/cluster.sh start --nodes N`` (N >= 2) runs slurmctld and slurmdbd inside a network namespace
of their own, where the nodes reach them over the cluster's bridge. Slurm's commands typed on this
machine (sinfo, sbatch, sacct, scontrol: users, tests, submitit) run in the machine's own namespace,
where no cluster address exists, and none is added there. This process binds its listening sockets
on 127.0.0.1 first, then moves itself into the controller's namespace (setns), so that every
connection it relays is opened there: traffic stays on loopback and the cluster's own interfaces.

    python3 slurm/netns_gateway.py /run/netns/ilafast-ctl PIDFILE 6817:10.213.77.1:6817 6819:127.0.0.1:6819

Standard library only (it runs under the system python3, before any virtual environment exists).
"""
from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy one direction until its end, then half-close the other side (Slurm reads to EOF)."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    try:
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def relay(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()   # the service is down: the client sees a closed connection, as without a gateway
        return
    upstream.settimeout(None)
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def serve(listener: socket.socket, target: tuple[str, int]) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=relay, args=(client, target), daemon=True).start()


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    netns, pidfile, *routes = argv
    listeners = []
    for route in routes:
        port, host, target_port = route.split(":")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", int(port)))   # in this machine's namespace: loopback only
        listener.listen(256)
        listeners.append((listener, (host, int(target_port))))
    # from here on, new sockets (and threads) live in the controller's namespace; the listeners stay here
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns, os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    os.close(fd)
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    threads = [threading.Thread(target=serve, args=pair, daemon=True) for pair in listeners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
