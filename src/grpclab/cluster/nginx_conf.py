"""Ingress objects and their ingress-nginx annotations, as the nginx.conf that serves them.

ingress-nginx renders nginx.conf from Ingresses and their annotations, and balances each
request over the Service's ready endpoints. This renders the same shape for the sandbox:
one `upstream` per Service port with the pods as servers (nginx's round robin is per
request), `grpc_pass` when the Ingress says `backend-protocol: GRPC`, and TLS with the
certificate from the Ingress's Secret. (ingress-nginx itself feeds endpoints to a Lua
balancer instead of upstream blocks; the requests are spread the same way.) Pure
functions: objects in, text out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpclab.xds.gateway import Backend
from grpclab.xds.translation import TranslationError, object_label

INGRESS_CLASS = "nginx"
ANNOTATION_PREFIX = "nginx.ingress.kubernetes.io/"
# ingress-nginx's own defaults for the annotations grpclab supports.
DEFAULTS = {
    "backend-protocol": "HTTP",
    "ssl-redirect": "true",
    "proxy-body-size": "1m",
    "proxy-connect-timeout": "5",
    "proxy-read-timeout": "60",
    "proxy-send-timeout": "60",
}
BACKEND_PROTOCOLS = ("HTTP", "GRPC")
# proxy-<phase>-timeout annotations, in the order nginx.conf lists them.
TIMEOUT_PHASES = ("connect", "read", "send")
# ingress-nginx keeps this many idle connections per upstream (upstream-keepalive-connections).
UPSTREAM_KEEPALIVE = 320
# ingress-nginx serves its status and config endpoints on this port; so does the sandbox.
STATUS_PORT = 10246
# nginx 1.25.1 added the `http2 on;` directive and deprecated `listen ... http2`, which it
# then warns about on every load (https://nginx.org/en/docs/http/ngx_http_v2_module.html).
# Older versions (Debian 12's 1.22) know only the listen parameter.
HTTP2_DIRECTIVE_SINCE = (1, 25, 1)
_SIZE = re.compile(r"\d+[kKmMgG]?")


class IngressConfigError(TranslationError):
    """An Ingress value the sandbox's nginx cannot serve; names the object and the field."""


# --- Ingress objects -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NginxOptions:
    """The annotations of one Ingress, with ingress-nginx's defaults filled in."""

    # "connect", "read", "send" -> seconds: the proxy-*-timeout annotations, which set
    # grpc_*_timeout or proxy_*_timeout by the backend protocol.
    timeouts_s: Mapping[str, int]
    backend_protocol: str
    ssl_redirect: bool
    body_size: str


def ingress_class(ingress: Mapping[str, Any]) -> str | None:
    spec = ingress.get("spec") or {}
    annotations = ingress["metadata"].get("annotations") or {}
    return spec.get("ingressClassName") or annotations.get("kubernetes.io/ingress.class")


def nginx_options(ingress: Mapping[str, Any]) -> NginxOptions:
    """The ingress-nginx annotations of `ingress`, checked; raises IngressConfigError."""
    label = object_label(ingress)
    annotations = ingress["metadata"].get("annotations") or {}
    values = dict(DEFAULTS)
    for key, value in annotations.items():
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        short = key[len(ANNOTATION_PREFIX) :]
        if short not in DEFAULTS:
            raise IngressConfigError(
                label,
                f"metadata.annotations[{key!r}]",
                "the sandbox's nginx does not implement this annotation; it supports "
                + ", ".join(ANNOTATION_PREFIX + k for k in DEFAULTS),
            )
        values[short] = value

    def field(short: str) -> str:
        return f"metadata.annotations[{ANNOTATION_PREFIX + short!r}]"

    protocol = values["backend-protocol"].upper()
    if protocol not in BACKEND_PROTOCOLS:
        reason = f"{values['backend-protocol']!r}: the sandbox supports HTTP and GRPC"
        if protocol == "GRPCS":
            reason += " (its pods serve plaintext, so GRPCS would never connect)"
        raise IngressConfigError(label, field("backend-protocol"), reason)
    if values["ssl-redirect"] not in ("true", "false"):
        raise IngressConfigError(label, field("ssl-redirect"), 'must be "true" or "false"')
    if not _SIZE.fullmatch(values["proxy-body-size"]):
        raise IngressConfigError(
            label,
            field("proxy-body-size"),
            f"{values['proxy-body-size']!r} is not a size like 0 (no limit), 8m or 512k",
        )
    timeouts = {}
    for phase in TIMEOUT_PHASES:
        short = f"proxy-{phase}-timeout"
        if not values[short].isdigit():
            raise IngressConfigError(
                label, field(short), f'{values[short]!r} must be whole seconds, like "60"'
            )
        timeouts[phase] = int(values[short])
    return NginxOptions(
        backend_protocol=protocol,
        ssl_redirect=values["ssl-redirect"] == "true",
        body_size=values["proxy-body-size"],
        timeouts_s=timeouts,
    )


def check_ingress(ingress: Mapping[str, Any]) -> None:
    """Raise IngressConfigError for the first value the sandbox's controller cannot serve."""
    label = object_label(ingress)
    chosen = ingress_class(ingress)
    if chosen != INGRESS_CLASS:
        raise IngressConfigError(
            label,
            "spec.ingressClassName",
            f"the sandbox runs one Ingress controller, ingress-nginx: set ingressClassName: "
            f"{INGRESS_CLASS} (got {chosen!r})",
        )
    nginx_options(ingress)
    spec = ingress.get("spec") or {}
    if spec.get("defaultBackend"):
        raise IngressConfigError(
            label, "spec.defaultBackend", "not supported by the sandbox; give rules instead"
        )
    for r_index, rule in enumerate(spec.get("rules") or []):
        for p_index, path in enumerate((rule.get("http") or {}).get("paths") or []):
            if "service" not in (path.get("backend") or {}):
                raise IngressConfigError(
                    label,
                    f"spec.rules[{r_index}].http.paths[{p_index}].backend",
                    "the sandbox sends traffic to Services only (backend.service)",
                )
    for t_index, tls in enumerate(spec.get("tls") or []):
        if not tls.get("secretName"):
            raise IngressConfigError(
                label,
                f"spec.tls[{t_index}].secretName",
                "required: the sandbox has no default certificate for named hosts",
            )


@dataclass(frozen=True)
class Location:
    path: str
    exact: bool
    options: NginxOptions
    upstream: str  # the upstream block's name
    backend: Backend | None  # None: no such Service or port (nginx answers 503)


@dataclass(frozen=True)
class VirtualServer:
    """One host of one or more Ingresses: its TLS Secret and its paths."""

    host: str  # "" for rules without a host
    tls_secret: tuple[str, str] | None  # (namespace, name)
    locations: tuple[Location, ...]
    services: tuple[tuple[str, str], ...]  # (namespace, name) of every backend


def virtual_servers(
    ingresses: Sequence[Mapping[str, Any]],
    resolve: Callable[[str, str, int | str], Backend | None],
) -> list[VirtualServer]:
    """What ingress-nginx would serve for these Ingresses (class nginx only), by host."""
    hosts: dict[str, dict[str, Any]] = {}
    for ingress in sorted(
        ingresses, key=lambda i: (i["metadata"].get("namespace", ""), i["metadata"]["name"])
    ):
        if ingress_class(ingress) != INGRESS_CLASS:
            continue
        namespace = ingress["metadata"].get("namespace") or "default"
        options = nginx_options(ingress)
        spec = ingress.get("spec") or {}
        for tls in spec.get("tls") or []:
            for host in tls.get("hosts") or [""]:
                entry = hosts.setdefault(host, {"tls": None, "locations": {}, "services": []})
                entry["tls"] = entry["tls"] or (namespace, tls["secretName"])
        for rule in spec.get("rules") or []:
            host = rule.get("host") or ""
            entry = hosts.setdefault(host, {"tls": None, "locations": {}, "services": []})
            for path in (rule.get("http") or {}).get("paths") or []:
                service = path["backend"]["service"]
                port = service["port"].get("number") or service["port"].get("name")
                backend = resolve(namespace, service["name"], port)
                exact = path.get("pathType") == "Exact"
                upstream = f"{namespace}-{service['name']}-{port}"
                # The first Ingress (by namespace/name) to claim a path keeps it, as in
                # ingress-nginx.
                entry["locations"].setdefault(
                    (path.get("path") or "/", exact),
                    Location(path.get("path") or "/", exact, options, upstream, backend),
                )
                entry["services"].append((namespace, service["name"]))
    return [
        VirtualServer(
            host,
            entry["tls"],
            tuple(entry["locations"][key] for key in sorted(entry["locations"])),
            tuple(dict.fromkeys(entry["services"])),
        )
        for host, entry in sorted(hosts.items())
        if entry["locations"]
    ]


# --- nginx.conf --------------------------------------------------------------------------------


def render_config(
    servers: Sequence[VirtualServer],
    certificates: Mapping[tuple[str, str], tuple[Path, Path]],
    fake_certificate: tuple[Path, Path],
    ip: str,
    https_port: int,
    http_port: int,
    prefix: Path,
    generation: int,
    nginx_version: tuple[int, ...] = HTTP2_DIRECTIVE_SINCE,
) -> str:
    """The whole nginx.conf for `servers`; `certificates` maps a Secret to its PEM files.

    `nginx_version` picks the HTTP/2 syntax that version takes without a warning.
    """
    directive = tuple(nginx_version) >= HTTP2_DIRECTIVE_SINCE

    def listen(port: int, tls: bool, default: bool = False) -> str:
        """The listen line of an HTTP/2 server, and `http2 on;` where the version has it."""
        params = " ssl" if tls else ""
        params += "" if directive else " http2"
        params += " default_server" if default else ""
        return f"listen {ip}:{port}{params};" + (" http2 on;" if directive else "")

    upstreams: dict[str, Backend] = {}
    for server in servers:
        for location in server.locations:
            if location.backend is not None and location.backend.endpoints:
                upstreams[location.upstream] = location.backend
    lines = [
        "# Generated by grpclab from Ingress objects; rewritten on every change.",
        "worker_processes 1;  # one worker: its round robin is the whole story",
        f"pid {prefix / 'nginx.pid'};",
        "error_log stderr warn;",
        # An old worker keeps serving its open HTTP/2 connections after a reload; it goes
        # within this time at the latest.
        "worker_shutdown_timeout 10s;",
        "events { worker_connections 1024; }",
        "http {",
        "  access_log off;",
        # ingress-nginx's ssl-protocols default. nginx 1.22's own default lacks TLS 1.3, and
        # the protocols come from the default server, before SNI picks a host.
        "  ssl_protocols TLSv1.2 TLSv1.3;",
    ]
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        lines.append(f"  {kind}_temp_path {prefix / 'tmp' / kind};")
    lines += [
        "  # grpclab reads which config a worker serves, to know when a reload is done.",
        f"  server {{ listen {ip}:{STATUS_PORT};"
        f' location = /generation {{ return 200 "{generation}\\n"; }}'
        " location / { return 404; } }",
    ]
    for name, backend in sorted(upstreams.items()):
        lines.append(f"  upstream {name} {{  # Service {backend.name}")
        lines += [f"    server {pod_ip}:{port};" for pod_ip, port in backend.endpoints]
        lines += [f"    keepalive {UPSTREAM_KEEPALIVE};", "  }"]
    tls_hosts = [s for s in servers if s.tls_secret is not None]
    fake_cert, fake_key = fake_certificate
    # Default servers: a name nobody configured gets 404, and over TLS the controller's own
    # self-signed certificate, so a client checking names refuses the connection.
    lines += [
        f"  server {{ {listen(https_port, tls=True, default=True)}",
        f"    ssl_certificate {fake_cert}; ssl_certificate_key {fake_key};",
        "    return 404; }",
        f"  server {{ {listen(http_port, tls=False, default=True)} return 404; }}",
    ]
    for server in servers:
        name = server.host or "_"
        cert = certificates.get(server.tls_secret) if server.tls_secret else None
        if server.tls_secret is not None:
            cert_file, key_file = cert or fake_certificate
            lines += [
                f"  server {{  # {name} over TLS",
                f"    {listen(https_port, tls=True)}",
                f"    server_name {name};",
                f"    ssl_certificate {cert_file};",
                f"    ssl_certificate_key {key_file};",
                *_locations(server.locations),
                "  }",
            ]
        redirect = server in tls_hosts and all(loc.options.ssl_redirect for loc in server.locations)
        lines += [f"  server {{  # {name} without TLS", f"    {listen(http_port, tls=False)}"]
        lines.append(f"    server_name {name};")
        if redirect:
            # ssl-redirect: a host with TLS is not served in clear text.
            lines.append("    return 308 https://$host$request_uri;")
        else:
            lines += _locations(server.locations)
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _locations(locations: Sequence[Location]) -> list[str]:
    lines = []
    for location in locations:
        options = location.options
        head = f"= {location.path}" if location.exact else location.path
        lines.append(f"    location {head} {{")
        lines.append(f"      client_max_body_size {options.body_size};")
        if location.backend is None or not location.backend.endpoints:
            lines.append("      return 503;  # no ready endpoints (gRPC: UNAVAILABLE)")
        elif options.backend_protocol == "GRPC":
            lines.append(f"      grpc_pass grpc://{location.upstream};")
            lines += _timeouts("grpc", options)
        else:
            # backend-protocol HTTP: HTTP/1.1 to the pod, which a gRPC server refuses.
            lines += [
                f"      proxy_pass http://{location.upstream};",
                "      proxy_http_version 1.1;",
                '      proxy_set_header Connection "";',
            ]
            lines += _timeouts("proxy", options)
        lines.append("    }")
    return lines


def _timeouts(module: str, options: NginxOptions) -> list[str]:
    """`grpc_connect_timeout` and the rest, or `proxy_*`: the module that passes the calls."""
    return [
        f"      {module}_{phase}_timeout {options.timeouts_s[phase]}s;" for phase in TIMEOUT_PHASES
    ]
