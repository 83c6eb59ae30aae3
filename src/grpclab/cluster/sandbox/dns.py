"""The sandbox's CoreDNS: answers `<svc>.<ns>.svc.cluster.local` and nothing else.

Names outside cluster.local get REFUSED rather than being forwarded, so a
cluster name can never leak to the machine's resolver and a typo shows up
as an error instead of a slow timeout.
"""

from __future__ import annotations

from collections.abc import Mapping

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

CLUSTER_DOMAIN = "svc.cluster.local"
# Short, like CoreDNS's default of 5 s for Services, so clients that do
# re-resolve see scale events quickly.
TTL_SECONDS = 5


class _RecordResolver(BaseResolver):
    def __init__(self) -> None:
        self.records: Mapping[str, tuple[str, ...]] = {}

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        records = self.records  # one read: the map is replaced, never mutated
        if not name.endswith("." + CLUSTER_DOMAIN):
            reply.header.rcode = RCODE.REFUSED
            return reply
        if name not in records:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if request.q.qtype in (QTYPE.A, QTYPE.ANY):
            for ip in records[name]:
                reply.add_answer(RR(name + ".", QTYPE.A, rdata=A(ip), ttl=TTL_SECONDS))
        # AAAA and other types of a known name: NOERROR with no answers, which
        # is what tells c-ares "this name exists, it just has no IPv6".
        return reply


class ClusterDns:
    """A UDP and TCP DNS server on a loopback IP; `publish` swaps the record set."""

    def __init__(self, host: str) -> None:
        self._resolver = _RecordResolver()
        quiet = DNSLogger(log="-request,-reply,-truncated,-error", prefix=False)
        self._udp = DNSServer(self._resolver, address=host, port=0, logger=quiet)
        self.port = self._udp.server.server_address[1]
        self._tcp = DNSServer(self._resolver, address=host, port=self.port, tcp=True, logger=quiet)
        self.address = f"{host}:{self.port}"
        self._udp.start_thread()
        self._tcp.start_thread()

    def publish(self, records: Mapping[str, tuple[str, ...]]) -> None:
        """Serve exactly these names (fully qualified, no trailing dot) from now on."""
        self._resolver.records = dict(records)

    def stop(self) -> None:
        for server in (self._udp, self._tcp):
            server.server.shutdown()
            server.server.server_close()
