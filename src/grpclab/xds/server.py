"""A state-of-the-world ADS server: one snapshot per node id, ACK/NACK tracked.

Envoy proxies and proxyless gRPC clients connect to the same server; each is
served the snapshot stored under its node id.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
# Sent in this order so that a proxy sees clusters and endpoints before the
# listeners and routes that refer to them (no warming stalls, no 503s).
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
# Types whose subscriptions name resources; the others are wildcards.
NAMED_TYPES = (ENDPOINT, ROUTE)


@dataclass(frozen=True)
class Nack:
    """A client rejected a version: what it said, so a notebook can show it."""

    node_id: str
    type_url: str
    version: str
    message: str


@dataclass
class _TypeState:
    version: int = 0
    resources: dict[str, Message] = field(default_factory=dict)


@dataclass
class _StreamState:
    node_id: str = ""
    subscribed: dict[str, set[str]] = field(default_factory=dict)
    sent_version: dict[str, int] = field(default_factory=dict)
    last_nonce: dict[str, str] = field(default_factory=dict)


class XdsServer:
    """ADS over gRPC on a loopback address; `set_resources` pushes live."""

    def __init__(self, host: str, port: int = 0) -> None:
        self._lock = threading.Condition()
        self._snapshots: dict[str, dict[str, _TypeState]] = {}
        self._acked: dict[tuple[str, str], int] = {}
        self._streams: dict[int, queue.Queue] = {}
        self._stream_nodes: dict[int, str] = {}
        self._nonces = itertools.count(1)
        self._stream_ids = itertools.count(1)
        self.nacks: list[Nack] = []
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="grpclab-xds"),
            options=[("grpc.so_reuseport", 0)],
        )
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
            _AdsServicer(self), self._server
        )
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        self.address = f"{host}:{self.port}"
        self._server.start()

    def stop(self) -> None:
        with self._lock:
            for q in self._streams.values():
                q.put(None)
        self._server.stop(grace=0.2).wait()

    # -- snapshot API ------------------------------------------------------

    def set_resources(
        self, node_id: str, resources: Mapping[str, Mapping[str, Message]]
    ) -> dict[str, int]:
        """Replace the node's resources of each given type; returns the versions that changed."""
        changed: dict[str, int] = {}
        with self._lock:
            snapshot = self._snapshots.setdefault(node_id, {})
            for type_url, named in resources.items():
                state = snapshot.setdefault(type_url, _TypeState())
                if _same(state.resources, named):
                    continue
                state.version += 1
                state.resources = dict(named)
                changed[type_url] = state.version
            endpoints = snapshot.get(ENDPOINT)
            if CLUSTER in changed and endpoints is not None and ENDPOINT not in changed:
                # Envoy re-warms a changed cluster and waits for its endpoints again, even
                # when they are the same (envoyproxy/envoy#13009): send them again.
                endpoints.version += 1
                changed[ENDPOINT] = endpoints.version
            if changed:
                for stream_id, node in self._stream_nodes.items():
                    if node == node_id:
                        self._streams[stream_id].put("push")
        return changed

    def resources(self, node_id: str, type_url: str) -> dict[str, Message]:
        with self._lock:
            return dict(self._snapshots.get(node_id, {}).get(type_url, _TypeState()).resources)

    def wait_acked(self, node_id: str, versions: Mapping[str, int], timeout: float = 10.0) -> bool:
        """Block until the node ACKed (or NACKed) at least these versions."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if all(
                    self._acked.get((node_id, t), 0) >= v or self._unwanted(node_id, t)
                    for t, v in versions.items()
                ):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)

    def _unwanted(self, node_id: str, type_url: str) -> bool:
        # Envoy drops its endpoint watches with its last cluster and then ignores (never
        # ACKs) an endpoint push, even an empty one: with no endpoints left to deliver,
        # there is nothing to wait for.
        if type_url not in NAMED_TYPES:
            return False
        current = self._snapshots.get(node_id, {}).get(type_url)
        return current is None or not current.resources

    def connected(self, node_id: str) -> bool:
        with self._lock:
            return node_id in self._stream_nodes.values()

    # -- stream handling ---------------------------------------------------

    def _stream(self, requests: Iterator[discovery_pb2.DiscoveryRequest], context) -> Iterator:
        stream_id = next(self._stream_ids)
        events: queue.Queue = queue.Queue()
        state = _StreamState()
        with self._lock:
            self._streams[stream_id] = events

        def read_requests() -> None:
            try:
                for request in requests:
                    events.put(request)
            except grpc.RpcError:
                pass
            events.put(None)

        threading.Thread(target=read_requests, daemon=True, name="grpclab-xds-reader").start()
        try:
            while True:
                event = events.get()
                if event is None:
                    return
                if event != "push":
                    self._on_request(state, stream_id, event)
                # Built under the lock, sent outside it: a slow client must not
                # hold up pushes to every other client.
                yield from self._responses(state)
        finally:
            with self._lock:
                self._streams.pop(stream_id, None)
                self._stream_nodes.pop(stream_id, None)

    def _on_request(self, state: _StreamState, stream_id: int, request) -> None:
        if not state.node_id:
            state.node_id = request.node.id
            with self._lock:
                self._stream_nodes[stream_id] = state.node_id
        type_url = request.type_url
        if request.response_nonce and request.response_nonce != state.last_nonce.get(type_url):
            return  # an answer to a response we have since replaced
        names = set(request.resource_names)
        with self._lock:
            if request.response_nonce:
                version = int(request.version_info or 0)
                if request.HasField("error_detail"):
                    # A NACK keeps the client on its last good version. We do not
                    # resend the rejected one: it would be rejected again, forever.
                    version = state.sent_version.get(type_url, 0)
                    self.nacks.append(
                        Nack(state.node_id, type_url, str(version), request.error_detail.message)
                    )
                key = (state.node_id, type_url)
                self._acked[key] = max(self._acked.get(key, 0), version)
                self._lock.notify_all()
            if state.subscribed.get(type_url) != names:
                state.subscribed[type_url] = names
                state.sent_version.pop(type_url, None)  # new subscription: send again
                self._lock.notify_all()

    def _responses(self, state: _StreamState) -> list[discovery_pb2.DiscoveryResponse]:
        responses = []
        with self._lock:
            snapshot = self._snapshots.get(state.node_id, {})
            ordered = sorted(state.subscribed, key=_push_rank)
            for type_url in ordered:
                current = snapshot.get(type_url)
                version = current.version if current else 0
                if state.sent_version.get(type_url) == version and type_url in state.sent_version:
                    continue
                wanted = state.subscribed[type_url]
                chosen = (current.resources if current else {}).items()
                if type_url in NAMED_TYPES and wanted:
                    chosen = [(n, r) for n, r in chosen if n in wanted]
                nonce = str(next(self._nonces))
                state.sent_version[type_url] = version
                state.last_nonce[type_url] = nonce
                response = discovery_pb2.DiscoveryResponse(
                    version_info=str(version), type_url=type_url, nonce=nonce
                )
                for _, resource in sorted(chosen, key=lambda item: item[0]):
                    packed = any_pb2.Any()
                    packed.Pack(resource)
                    response.resources.append(packed)
                responses.append(response)
        return responses


class _AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, owner: XdsServer) -> None:
        self._owner = owner

    def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802 (gRPC name)
        return self._owner._stream(request_iterator, context)


def _push_rank(type_url: str) -> int:
    return PUSH_ORDER.index(type_url) if type_url in PUSH_ORDER else len(PUSH_ORDER)


def _same(old: Mapping[str, Message], new: Mapping[str, Message]) -> bool:
    if old.keys() != new.keys():
        return False
    return all(old[name] == new[name] for name in old)
