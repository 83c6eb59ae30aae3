"""Server-side gRPC metrics with go-grpc-prometheus names and labels, for the demo server.

Counting happens in plain Python ints on the event loop; prometheus_client only formats
them at scrape time, which keeps the per-call cost to a few attribute updates. Streams
count every message they receive and send (grpc_server_msg_received/sent), so a pod's
stream traffic shows in Prometheus like its unary calls do.
"""

from __future__ import annotations

import asyncio
import inspect
from bisect import bisect_left
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from time import perf_counter
from typing import Any

import grpc
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

# go-grpc-prometheus uses prometheus.DefBuckets for grpc_server_handling_seconds.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CODE_NAMES = {code: code.name for code in grpc.StatusCode}
_BASE_LABELS = ("grpc_type", "grpc_service", "grpc_method")


class _MethodStats:
    """Counters of one method; mutated only from the event loop thread."""

    __slots__ = (
        "labels",
        "started",
        "msg_received",
        "msg_sent",
        "handled",
        "bucket_counts",
        "seconds_sum",
        "buckets",
    )

    def __init__(self, labels: tuple[str, str, str], buckets: tuple[float, ...]) -> None:
        self.labels = labels
        self.buckets = buckets
        self.started = 0
        self.msg_received = 0
        self.msg_sent = 0
        self.handled: dict[str, int] = {}
        # One slot per bucket plus +Inf, not cumulative; collect() accumulates.
        self.bucket_counts = [0] * (len(buckets) + 1)
        self.seconds_sum = 0.0

    def start(self, request: Any) -> Any:
        """Count a call that starts; returns its request, a stream counting each message."""
        self.started += 1
        if self.labels[0] in ("unary", "server_stream"):
            self.msg_received += 1
            return request
        return _counted(request, self)

    def finish(self, code: str, seconds: float) -> None:
        self.handled[code] = self.handled.get(code, 0) + 1
        self.bucket_counts[bisect_left(self.buckets, seconds)] += 1
        self.seconds_sum += seconds


def _code_of(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    return "OK" if code is None else CODE_NAMES.get(code, "UNKNOWN")


def _split_method(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class ServerMetrics(Collector):
    """The grpc_server_* families for every method it instruments; register it in a registry."""

    def __init__(self, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self._buckets = tuple(sorted(buckets))
        self._stats: dict[str, _MethodStats] = {}

    def instrument(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """Return `handler` with its behaviour wrapped to count calls of `/pkg.Service/Method`."""
        service, method = _split_method(full_method)
        if handler.request_streaming and handler.response_streaming:
            grpc_type, attribute = "bidi_stream", "stream_stream"
        elif handler.request_streaming:
            grpc_type, attribute = "client_stream", "stream_unary"
        elif handler.response_streaming:
            grpc_type, attribute = "server_stream", "unary_stream"
        else:
            grpc_type, attribute = "unary", "unary_unary"
        stats = self._stats.get(full_method)
        if stats is None:
            stats = self._stats[full_method] = _MethodStats(
                (grpc_type, service, method), self._buckets
            )
        behavior = getattr(handler, attribute)
        if inspect.isasyncgenfunction(behavior):
            wrapped: Callable[..., Any] = _wrap_async_generator(behavior, stats)
        elif inspect.iscoroutinefunction(behavior):
            wrapped = _wrap_coroutine(behavior, stats)
        else:
            return handler  # sync handlers would run in a thread pool; the demo has none
        return handler._replace(**{attribute: wrapped})

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families appear once a method is instrumented

    def collect(self) -> Iterator[Metric]:
        started = CounterMetricFamily(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            labels=_BASE_LABELS,
        )
        handled = CounterMetricFamily(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            labels=(*_BASE_LABELS, "grpc_code"),
        )
        received = CounterMetricFamily(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            labels=_BASE_LABELS,
        )
        sent = CounterMetricFamily(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            labels=_BASE_LABELS,
        )
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            labels=_BASE_LABELS,
        )
        # The scrape runs on prometheus_client's thread: copy before iterating, and
        # accept that one family may be a call ahead of another.
        for stats in list(self._stats.values()):
            labels = list(stats.labels)
            started.add_metric(labels, stats.started)
            received.add_metric(labels, stats.msg_received)
            sent.add_metric(labels, stats.msg_sent)
            for code, count in sorted(dict(stats.handled).items()):
                handled.add_metric([*labels, code], count)
            cumulative, running = [], 0
            for bound, count in zip(
                (*stats.buckets, float("inf")), list(stats.bucket_counts), strict=True
            ):
                running += count
                cumulative.append((_bucket_label(bound), running))
            seconds.add_metric(labels, cumulative, stats.seconds_sum)
        yield from (started, handled, received, sent, seconds)


def _bucket_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


async def _counted(requests: AsyncIterator[Any], stats: _MethodStats) -> AsyncIterator[Any]:
    """The client's stream of requests, counting each message as the handler reads it."""
    async for request in requests:
        stats.msg_received += 1
        yield request


def _wrap_coroutine(
    behavior: Callable[..., Awaitable[Any]], stats: _MethodStats
) -> Callable[..., Awaitable[Any]]:
    async def instrumented(request: Any, context: grpc.aio.ServicerContext) -> Any:
        request = stats.start(request)
        start = perf_counter()
        code = "UNKNOWN"  # any exception other than the ones below becomes UNKNOWN
        try:
            response = await behavior(request, context)
            code = _code_of(context)
            if response is not None and code == "OK":
                stats.msg_sent += 1
            return response
        except grpc.aio.AbortError:
            code = _code_of(context)
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            stats.finish(code, perf_counter() - start)

    return instrumented


def _wrap_async_generator(behavior: Callable[..., Any], stats: _MethodStats) -> Callable[..., Any]:
    async def instrumented(request: Any, context: grpc.aio.ServicerContext) -> Any:
        request = stats.start(request)
        start = perf_counter()
        code = "UNKNOWN"
        try:
            async for response in behavior(request, context):
                stats.msg_sent += 1
                yield response
            code = _code_of(context)
        except grpc.aio.AbortError:
            code = _code_of(context)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        finally:
            stats.finish(code, perf_counter() - start)

    return instrumented


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Instruments every method once, on its first call, and reuses the wrapped handler."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            found = await continuation(handler_call_details)
            if found is None:
                return found  # unknown method: gRPC answers UNIMPLEMENTED, nothing to count
            handler = self._handlers[method] = self._metrics.instrument(method, found)
        return handler
