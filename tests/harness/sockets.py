"""Which TCP peers a process tree is connected to, read from /proc (Linux, no psutil).

A drill uses it to find the Consul server an agentless process is reading from: its
long polls hold an established connection to that server's HTTP(S) port.
"""

from __future__ import annotations

import os
import socket
import struct
from collections import Counter
from pathlib import Path

_ESTABLISHED = "01"


def process_tree(root: int) -> list[int]:
    """``root`` and every descendant PID (a gunicorn master and its workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _address(hex_address: str) -> tuple[str, int]:
    host, port = hex_address.split(":")
    ip = socket.inet_ntoa(struct.pack("<I", int(host, 16)))
    return ip, int(port, 16)


def established_peers(pids: list[int]) -> Counter[tuple[str, int]]:
    """(address, port) of every established IPv4 connection the processes hold."""
    inodes = set().union(*(_socket_inodes(pid) for pid in pids)) if pids else set()
    peers: Counter[tuple[str, int]] = Counter()
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return peers
    for line in lines:
        fields = line.split()
        if len(fields) > 9 and fields[3] == _ESTABLISHED and fields[9] in inodes:
            peers[_address(fields[2])] += 1
    return peers
