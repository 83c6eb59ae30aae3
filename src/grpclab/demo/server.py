"""The demo gRPC server every pod runs: MyService, health, reflection, fault knobs, /metrics.

Run it with `python -m grpclab.demo.server --help`; each flag falls back to an environment
variable because Kubernetes passes configuration as env. It listens on every interface of
its pod by default; POD_IP only says who served a call.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import socket
import sys
import zlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from grpclab.demo._generated import admin_pb2, admin_pb2_grpc, demo_pb2, demo_pb2_grpc
from grpclab.demo.metrics import MetricsInterceptor, ServerMetrics

MY_SERVICE = demo_pb2.DESCRIPTOR.services_by_name["MyService"].full_name
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name
# "" is the server as a whole; kubelet's grpc probe and most LB health checks ask for it.
HEALTH_SERVICES = ("", MY_SERVICE)
PEER_METADATA_KEY = "grpclab-peer"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")
CRASH_EXIT_CODE = 137  # what a container killed by SIGKILL reports (128 + 9)
# Set by the sandbox only: the loopback address that stands in for the pod's own network
# namespace. "Every interface" of a pod means this address there, as 0.0.0.0 does in a
# container, so two pods can both listen on 50051.
POD_NETWORK_ENV = "GRPCLAB_POD_NETWORK_ADDRESS"


def _default_pod_name(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get("POD_NAME") or environ.get("HOSTNAME") or socket.gethostname()


@dataclass
class ServerConfig:
    """Everything `serve` needs; `main` builds it from flags and environment."""

    host: str = "0.0.0.0"  # every interface of the pod
    pod_ip: str = ""  # reported in every reply; "" means the address of this host's name
    port: int = 50051  # 0 picks a free port (reported in the ready line)
    metrics_port: int = 9090  # 0 disables /metrics and its interceptor
    pod_name: str = field(default_factory=_default_pod_name)
    max_connection_age_ms: int | None = None
    max_connection_age_grace_ms: int | None = None
    # Ping enforcement (gRPC core doc/keepalive.md): None leaves gRPC's default, 5 minutes
    # between pings while no data is sent, and no pings at all without calls.
    min_recv_ping_interval_ms: int | None = None
    permit_keepalive_without_calls: bool | None = None
    drain: bool = True
    drain_delay_s: float = 1.0
    drain_grace_s: float = 5.0


class BindError(OSError):
    """A listener could not bind; the message names host:port."""


@dataclass(frozen=True)
class _ActiveFault:
    """The fault knobs as plain values, so the MyService hot path never touches protobuf."""

    latency_s: float = 0.0
    error_rate: float = 0.0
    error_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE


_STATUS_BY_VALUE = {
    code.value[0]: code for code in grpc.StatusCode if code is not grpc.StatusCode.OK
}


def fault_problem(fault: admin_pb2.Fault) -> str | None:
    """Why `fault` is invalid, naming the field, or None when it is fine."""
    if math.isnan(fault.error_rate) or not 0.0 <= fault.error_rate <= 1.0:
        return f"Fault.error_rate={fault.error_rate!r} is outside [0, 1]"
    if fault.error_code and fault.error_code not in _STATUS_BY_VALUE:
        return (
            f"Fault.error_code={fault.error_code} is not a gRPC status code "
            "(1-16; 0 means UNAVAILABLE)"
        )
    return None


class PodState:
    """What one pod knows about itself: identity, fault knobs and health."""

    def __init__(self, pod_name: str, pod_ip: str) -> None:
        self.served_by = demo_pb2.ServedBy(pod_name=pod_name, pod_ip=pod_ip)
        self.fault = admin_pb2.Fault()
        self.active = _ActiveFault()
        self.health = health_aio.HealthServicer()

    async def set_fault(self, fault: admin_pb2.Fault) -> None:
        was_not_serving = self.fault.not_serving
        self.fault = admin_pb2.Fault()
        self.fault.CopyFrom(fault)
        self.active = _ActiveFault(
            latency_s=fault.added_latency_ms / 1000.0,
            error_rate=fault.error_rate,
            error_code=_STATUS_BY_VALUE.get(fault.error_code, grpc.StatusCode.UNAVAILABLE),
        )
        if fault.not_serving != was_not_serving:
            status = _NOT_SERVING if fault.not_serving else _SERVING
            for service in HEALTH_SERVICES:
                # Ignored by the servicer once a drain has begun, which is what we want.
                await self.health.set(service, status)


class MyService(demo_pb2_grpc.MyServiceServicer):
    """The demo API; every reply says which pod served it."""

    def __init__(self, pod: PodState) -> None:
        self._pod = pod

    async def _before_reply(self, context: grpc.aio.ServicerContext) -> None:
        """Report the peer in trailing metadata, then apply the fault knobs."""
        # The peer lets a client see that its connection was replaced (max connection
        # age, proxies) without an extra RPC.
        context.set_trailing_metadata(((PEER_METADATA_KEY, context.peer()),))
        await self._apply_fault(context)

    async def _apply_fault(self, context: grpc.aio.ServicerContext) -> None:
        fault = self._pod.active
        if fault.latency_s:
            await asyncio.sleep(fault.latency_s)
        if fault.error_rate and random.random() < fault.error_rate:
            await context.abort(
                fault.error_code,
                f"fault injected by {self._pod.served_by.pod_name}: "
                f"error_rate={fault.error_rate:g}",
            )

    async def SayHello(
        self, request: demo_pb2.HelloRequest, context: grpc.aio.ServicerContext
    ) -> demo_pb2.HelloReply:
        await self._before_reply(context)
        served_by = self._pod.served_by
        return demo_pb2.HelloReply(
            message=f"Hello, {request.name or 'world'}, from {served_by.pod_name}",
            served_by=served_by,
        )

    async def SayHelloStream(
        self,
        requests: AsyncIterator[demo_pb2.HelloRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[demo_pb2.HelloReply]:
        # The fault knobs act per message; an injected error ends the whole stream, as any
        # error status does in gRPC.
        context.set_trailing_metadata(((PEER_METADATA_KEY, context.peer()),))
        served_by = self._pod.served_by
        async for request in requests:
            await self._apply_fault(context)
            yield demo_pb2.HelloReply(
                message=f"Hello, {request.name or 'world'}, from {served_by.pod_name}",
                served_by=served_by,
            )

    async def GetUser(
        self, request: demo_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> demo_pb2.User:
        await self._before_reply(context)
        return demo_pb2.User(
            user_id=request.user_id,
            display_name=made_up_display_name(request.user_id),
            served_by=self._pod.served_by,
        )


_FIRST_NAMES = ("Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Ken", "Radia")
_LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Liskov", "Dijkstra", "Allen", "Thompson")


def made_up_display_name(user_id: str) -> str:
    """A name derived from `user_id` alone, so every pod answers the same (crc32, not hash())."""
    digest = zlib.crc32(user_id.encode())
    first = _FIRST_NAMES[digest % len(_FIRST_NAMES)]
    last = _LAST_NAMES[(digest // len(_FIRST_NAMES)) % len(_LAST_NAMES)]
    return f"{first} {last}"


class AdminService(admin_pb2_grpc.AdminServicer):
    """Fault knobs; never subject to the faults themselves."""

    def __init__(self, pod: PodState) -> None:
        self._pod = pod

    async def SetFault(
        self, request: admin_pb2.Fault, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Fault:
        problem = fault_problem(request)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        await self._pod.set_fault(request)
        return self._pod.fault

    async def GetFault(
        self, request: admin_pb2.GetFaultRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Fault:
        return self._pod.fault

    async def Crash(
        self, request: admin_pb2.CrashRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CrashReply:
        code = request.exit_code or CRASH_EXIT_CODE
        print(f"grpclab.demo.server: crash requested, exiting {code} without a drain", flush=True)
        # Late enough for this reply to leave; os._exit skips every handler and finally
        # block, so open connections are cut by the kernel, as a SIGKILL would cut them.
        asyncio.get_running_loop().call_later(0.05, os._exit, code)
        return admin_pb2.CrashReply()


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _advertised_ip(host: str) -> str:
    """The IP to put in ServedBy: the bound host, or this machine's address for a wildcard."""
    if host not in _WILDCARD_HOSTS:
        return host.strip("[]")
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return host


def _server_options(config: ServerConfig) -> list[tuple[str, Any]]:
    # so_reuseport=0: a second server on the same host:port must fail, not share the port.
    options: list[tuple[str, Any]] = [("grpc.so_reuseport", 0)]
    if config.max_connection_age_ms is not None:
        options.append(("grpc.max_connection_age_ms", config.max_connection_age_ms))
    if config.max_connection_age_grace_ms is not None:
        options.append(("grpc.max_connection_age_grace_ms", config.max_connection_age_grace_ms))
    if config.min_recv_ping_interval_ms is not None:
        options.append(
            ("grpc.http2.min_ping_interval_without_data_ms", config.min_recv_ping_interval_ms)
        )
    if config.permit_keepalive_without_calls is not None:
        options.append(
            ("grpc.keepalive_permit_without_calls", int(config.permit_keepalive_without_calls))
        )
    return options


def _say(line: str) -> None:
    print(line, flush=True)


def _start_metrics_http(config: ServerConfig, metrics: ServerMetrics) -> tuple[Any, Any]:
    """Serve /metrics on its own thread; returns (httpd, thread) for `_stop_metrics_http`."""
    registry = CollectorRegistry()
    registry.register(metrics)
    ProcessCollector(registry=registry)  # CPU and memory per pod, for the monitoring notebook
    try:
        return start_http_server(config.metrics_port, addr=config.host, registry=registry)
    except OSError as error:
        address = _address(config.host, config.metrics_port)
        raise BindError(f"cannot bind metrics port {address}: {error.strerror or error}") from None


def _stop_metrics_http(http: tuple[Any, Any]) -> None:
    httpd, thread = http
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _build_server(config: ServerConfig, pod: PodState, metrics: ServerMetrics | None) -> Any:
    server = grpc.aio.server(
        interceptors=[MetricsInterceptor(metrics)] if metrics else None,
        options=_server_options(config),
    )
    demo_pb2_grpc.add_MyServiceServicer_to_server(MyService(pod), server)
    admin_pb2_grpc.add_AdminServicer_to_server(AdminService(pod), server)
    health_pb2_grpc.add_HealthServicer_to_server(pod.health, server)
    health_service = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection(
        (MY_SERVICE, ADMIN_SERVICE, health_service, reflection.SERVICE_NAME), server
    )
    return server


async def serve(
    config: ServerConfig,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[int, int], None] | None = None,
) -> None:
    """Serve until `stop` is set (then drain as configured) or the task is cancelled.

    `on_ready(grpc_port, metrics_port)` is called once the server accepts calls.
    """
    pod = PodState(config.pod_name, config.pod_ip or _advertised_ip(config.host))
    metrics = ServerMetrics() if config.metrics_port else None
    # Metrics first: a gRPC port that bound but never started cannot be released again,
    # while the metrics listener can always be shut down if the gRPC bind fails.
    http = _start_metrics_http(config, metrics) if metrics else None
    try:
        server = _build_server(config, pod, metrics)
        address = _address(config.host, config.port)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError:
            port = 0  # grpc logs the OS error itself, just above our line
        if not port:
            raise BindError(f"cannot bind gRPC port {address}: address in use or not available")
        for service in HEALTH_SERVICES:
            await pod.health.set(service, _SERVING)
        await server.start()
        try:
            _say(
                f"grpclab.demo.server ready pod={config.pod_name} ip={pod.served_by.pod_ip} "
                f"port={port} metrics={config.metrics_port} bind={config.host}"
            )
            if on_ready:
                on_ready(port, config.metrics_port)
            await (stop or asyncio.Event()).wait()
            if config.drain:
                await pod.health.enter_graceful_shutdown()
                _say(
                    f"grpclab.demo.server draining pod={config.pod_name}: health NOT_SERVING, "
                    f"stopping in {config.drain_delay_s:g}s with {config.drain_grace_s:g}s grace"
                )
                await asyncio.sleep(config.drain_delay_s)
                await server.stop(config.drain_grace_s)
            _say(f"grpclab.demo.server stopped pod={config.pod_name}")
        finally:
            # Immediate stop: --no-drain, cancellation, or a no-op after the drain above.
            await server.stop(None)
    finally:
        if http:
            _stop_metrics_http(http)


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535)")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _zero_or_one(text: str) -> int:
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"{text!r} is not 0 or 1")
    return int(text)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"{value} is not >= 0")
    return value


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """Build a ServerConfig from command-line flags, falling back to environment variables.

    `environ` defaults to this process's environment; grpclab.cluster.containers passes a
    container's, to learn where its server will listen.
    """
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m grpclab.demo.server", description=__doc__)

    def add(flag: str, env: str, convert: Callable[[str], Any], default: Any, what: str) -> None:
        raw = environ.get(env, "")
        if raw:
            try:
                default = convert(raw)
            except argparse.ArgumentTypeError as error:
                parser.error(f"environment {env}={raw!r} (fallback for {flag}): {error}")
        parser.add_argument(
            flag, type=convert, default=default, help=f"{what} (env {env}; default %(default)s)"
        )

    parser.add_argument(
        "--host", default="0.0.0.0", help="address to bind (default %(default)s: every interface)"
    )
    add("--pod-ip", "POD_IP", str, "", "IP reported in every reply (default: this host's address)")
    add("--port", "GRPC_PORT", _port, 50051, "gRPC port; 0 picks a free one")
    add("--metrics-port", "METRICS_PORT", _port, 9090, "Prometheus /metrics port; 0 disables")
    parser.add_argument(
        "--pod-name",
        default=None,
        help="name in every reply (env POD_NAME, then HOSTNAME, then the host name)",
    )
    add(
        "--max-connection-age-ms",
        "GRPC_MAX_CONNECTION_AGE_MS",
        _non_negative_int,
        None,
        "send GOAWAY after a connection is this old; unset means no limit",
    )
    add(
        "--max-connection-age-grace-ms",
        "GRPC_MAX_CONNECTION_AGE_GRACE_MS",
        _non_negative_int,
        None,
        "time in-flight calls get after that GOAWAY",
    )
    add(
        "--min-recv-ping-interval-ms",
        "GRPC_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS",
        _non_negative_int,
        None,
        "a ping sooner than this after the last, while the server sends nothing, is a strike; "
        "the third strike gets GOAWAY too_many_pings (unset: gRPC's 300000)",
    )
    add(
        "--keepalive-permit-without-calls",
        "GRPC_KEEPALIVE_PERMIT_WITHOUT_CALLS",
        _zero_or_one,
        None,
        "1 accepts pings on a connection with no calls (unset: gRPC's 0, they are strikes)",
    )
    add(
        "--drain-delay-s",
        "GRPCLAB_DRAIN_DELAY_S",
        _non_negative_float,
        1.0,
        "on SIGTERM, seconds between health NOT_SERVING and stopping the server",
    )
    add(
        "--drain-grace-s",
        "GRPCLAB_DRAIN_GRACE_S",
        _non_negative_float,
        5.0,
        "grace that in-flight calls get when the server stops",
    )
    no_drain_env = environ.get("GRPCLAB_NO_DRAIN", "").strip().lower()
    parser.add_argument(
        "--no-drain",
        action="store_true",
        default=no_drain_env in ("1", "true", "yes", "on"),
        help="exit at once on SIGTERM, without NOT_SERVING or grace (env GRPCLAB_NO_DRAIN=1)",
    )
    args = parser.parse_args(argv)
    host, pod_network = args.host, environ.get(POD_NETWORK_ENV, "")
    if pod_network and host in _WILDCARD_HOSTS:
        host = pod_network  # the sandbox's pod: its "every interface" is its own address
    return ServerConfig(
        host=host,
        pod_ip=args.pod_ip or pod_network,
        port=args.port,
        metrics_port=args.metrics_port,
        pod_name=args.pod_name or _default_pod_name(environ),
        max_connection_age_ms=args.max_connection_age_ms,
        max_connection_age_grace_ms=args.max_connection_age_grace_ms,
        min_recv_ping_interval_ms=args.min_recv_ping_interval_ms,
        permit_keepalive_without_calls=(
            None
            if args.keepalive_permit_without_calls is None
            else bool(args.keepalive_permit_without_calls)
        ),
        drain=not args.no_drain,
        drain_delay_s=args.drain_delay_s,
        drain_grace_s=args.drain_grace_s,
    )


async def _serve_until_signalled(config: ServerConfig) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, stop))

    def on_signal() -> None:
        if stop.is_set():
            task.cancel()  # a second signal skips whatever is left of the drain
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    try:
        await task
    except asyncio.CancelledError:
        if not stop.is_set():
            raise


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m grpclab.demo.server`; returns the process exit code."""
    config = parse_config(argv)
    try:
        asyncio.run(_serve_until_signalled(config))
    except BindError as error:
        print(f"grpclab.demo.server: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
