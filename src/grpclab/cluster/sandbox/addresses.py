"""Loopback address blocks: each running sandbox owns one, so two never collide.

Sandbox k owns 127.42.k.0/24 for its node and pods and 127.43.k.0/24 for
Service cluster IPs. Ownership is an flock on a file, which the kernel drops
when the owner dies, however it dies.
"""

from __future__ import annotations

import errno
import fcntl
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from grpclab.paths import state_root

POD_OCTET = 42
SERVICE_OCTET = 43
FIRST_HOST = 10
LAST_HOST = 250


def blocks_dir() -> Path:
    """The lock files, one per block: `<index>.lock`, flocked by the sandbox that owns it."""
    return state_root() / "blocks"


def work_dir_of(index: int) -> Path:
    """Where the sandbox holding block `index` keeps its configs, logs and `pids.json`."""
    return state_root() / f"sandbox-{index}"


def block_of(work_dir: Path) -> int:
    """The block whose sandbox uses `work_dir` (the inverse of `work_dir_of`)."""
    return int(work_dir.name.removeprefix("sandbox-"))


def count_free_blocks() -> int:
    """How many of the 254 blocks no running sandbox holds (for preflight)."""
    free = 0
    for index in range(1, 255):
        if not (blocks_dir() / f"{index}.lock").exists():
            free += 1
            continue
        # Taken and given back at once: a sandbox starting meanwhile moves on to the
        # next block, as it does whenever two start together.
        with holding_if_unowned(index) as unowned:
            free += unowned
    return free


@contextmanager
def holding_if_unowned(index: int) -> Iterator[bool]:
    """Hold block `index` for the `with` body if no running sandbox owns it; yield whether it did.

    For cleaning up after a dead sandbox: while it is held, no new sandbox can take the
    block and start over in the same work directory.
    """
    root = blocks_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{index}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class AddressBlock:
    """One sandbox's share of 127.0.0.0/8, held until `release()`."""

    def __init__(self) -> None:
        root = blocks_dir()
        root.mkdir(parents=True, exist_ok=True)
        for index in range(1, 255):
            handle = open(root / f"{index}.lock", "a+")  # noqa: SIM115 (held while owned)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                handle.close()
                if error.errno in (errno.EAGAIN, errno.EACCES):
                    continue
                raise
            self.index = index
            self._handle = handle
            self.node_ip = f"127.{POD_OCTET}.{index}.1"
            self._free_pod_hosts = list(range(FIRST_HOST, LAST_HOST + 1))
            self._free_service_hosts = list(range(FIRST_HOST, LAST_HOST + 1))
            _check_bindable(self.node_ip)
            return
        raise RuntimeError(f"all 254 sandbox address blocks under {root} are in use")

    def take_pod_ip(self) -> str:
        if not self._free_pod_hosts:
            raise RuntimeError("this sandbox has no free pod IPs left")
        return f"127.{POD_OCTET}.{self.index}.{self._free_pod_hosts.pop(0)}"

    def take_service_ip(self) -> str:
        if not self._free_service_hosts:
            raise RuntimeError("this sandbox has no free cluster IPs left")
        return f"127.{SERVICE_OCTET}.{self.index}.{self._free_service_hosts.pop(0)}"

    def give_back_pod_ip(self, ip: str) -> None:
        # Reused last, as Kubernetes IPAM tends to: a fresh pod rarely inherits
        # the IP of one that just died, so stale connections do not reach it.
        self._free_pod_hosts.append(int(ip.rsplit(".", 1)[1]))

    def give_back_service_ip(self, ip: str) -> None:
        self._free_service_hosts.append(int(ip.rsplit(".", 1)[1]))

    def put_back_service_ips(self, ips: list[str]) -> None:
        """Undo `take_service_ip` calls (oldest first): the pool is as it was before them."""
        self._free_service_hosts[:0] = [int(ip.rsplit(".", 1)[1]) for ip in ips]

    def free(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The free pod and Service host numbers, in the order they will be handed out."""
        return tuple(self._free_pod_hosts), tuple(self._free_service_hosts)

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _check_bindable(ip: str) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind((ip, 0))
    except OSError as error:
        raise RuntimeError(
            f"cannot bind {ip}: the sandbox needs all of 127.0.0.0/8 on loopback (Linux has it; "
            "macOS does not: use the devcontainer or the kind backend)"
        ) from error
    finally:
        probe.close()
