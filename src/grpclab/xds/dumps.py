"""Read an Envoy /config_dump (as JSON) the same way whichever control plane filled it.

A sidecar's dump is the proof of what its control plane sent: grpclab's in the sandbox,
istiod on a real cluster. The two name things differently: istiod calls the route config of
port 50051 "50051" and lists the Service's host names and cluster IP as its virtual host's
domains, while the sandbox gives each Service port a listener and a route config of its own,
whose one virtual host matches any host ("*"). So routes are found the way Envoy itself
picks a virtual host for a call, by the host the call is for, never by a route config name.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

CLUSTERS = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
ROUTES = "type.googleapis.com/envoy.admin.v3.RoutesConfigDump"
SHOWN_IN_ERRORS = 12  # a mesh's dump can hold hundreds of clusters: name a few


class NotInDumpError(LookupError):
    """What was looked for is not in the config dump; the message says what is."""


def dumped_cluster(dump: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The cluster called `name`, from the dump's dynamic active or static clusters.

    Envoy's JSON leaves out fields at their default value; lb_policy's default is
    ROUND_ROBIN, and the copy returned says so rather than have the one field a reader
    looks for be the one missing.
    """
    section = _section(dump, CLUSTERS)
    for kind in ("dynamic_active_clusters", "static_clusters"):
        for entry in section.get(kind, []):
            if entry["cluster"]["name"] == name:
                cluster = copy.deepcopy(entry["cluster"])
                cluster.setdefault("lb_policy", "ROUND_ROBIN")
                return cluster
    have = []
    for kind in ("dynamic_active_clusters", "dynamic_warming_clusters", "static_clusters"):
        names = [entry["cluster"]["name"] for entry in section.get(kind, [])]
        have.append(f"{kind}: {_some(names)}")
    warming = any(
        entry["cluster"]["name"] == name for entry in section.get("dynamic_warming_clusters", [])
    )
    note = " (it is still warming: its endpoints have not arrived)" if warming else ""
    raise NotInDumpError(
        f"cluster {name!r} is not active in this config dump{note}; it has {'; '.join(have)}"
    )


def dumped_virtual_host(dump: Mapping[str, Any], domain: str) -> dict[str, Any]:
    """The virtual host that serves calls for `domain` (a host, or host:port).

    Every dynamic route config is searched. Within one, Envoy's own order decides: a domain
    listed exactly, then the longest `*suffix`, then the longest `prefix*`, then `*`; the
    port is ignored where the route config says ignore_port_in_host_matching (istiod does,
    since Istio 1.16). The best match over all route configs wins; two route configs that
    match equally well are reported, not guessed between.
    """
    configs = [
        entry["route_config"] for entry in _section(dump, ROUTES).get("dynamic_route_configs", [])
    ]
    if not configs:
        raise NotInDumpError(
            f"no virtual host for {domain!r}: this config dump has no dynamic route configs"
        )
    matches = []
    for config in configs:
        best = min(_matches(config, domain), default=None, key=lambda m: m[:2])
        if best is not None:
            matches.append((best, config["name"]))
    if not matches:
        hosts = [
            f"{vhost['name']!r} in {config['name']!r} for {', '.join(vhost.get('domains', []))}"
            for config in configs
            for vhost in config.get("virtual_hosts", [])
        ]
        raise NotInDumpError(
            f"no virtual host in this config dump serves {domain!r}; it has {_some(hosts, '; ')}"
        )
    rank = min(match[:2] for match, _ in matches)
    winners = [(match, name) for match, name in matches if match[:2] == rank]
    if len(winners) > 1:
        raise NotInDumpError(
            f"{domain!r} matches virtual hosts in {len(winners)} route configs equally well ("
            + ", ".join(f"{match[2]['name']!r} in {name!r}" for match, name in winners)
            + "): ask for a more specific host"
        )
    return copy.deepcopy(winners[0][0][2])


def _matches(
    config: Mapping[str, Any], domain: str
) -> Iterator[tuple[int, int, Mapping[str, Any]]]:
    """(rank, -length, virtual host) for each virtual host of `config` that takes `domain`."""
    host = domain.lower()
    if config.get("ignore_port_in_host_matching"):
        host = _without_port(host)
    for vhost in config.get("virtual_hosts", []):
        for listed in (d.lower() for d in vhost.get("domains", [])):
            if listed == host:
                yield 0, -len(listed), vhost
            elif listed == "*":
                yield 3, 0, vhost
            elif (
                listed.startswith("*") and len(host) > len(listed) - 1 and host.endswith(listed[1:])
            ):
                yield 1, -len(listed), vhost
            elif (
                listed.endswith("*")
                and len(host) > len(listed) - 1
                and host.startswith(listed[:-1])
            ):
                yield 2, -len(listed), vhost


def _without_port(host: str) -> str:
    if host.startswith("["):  # [IPv6]:port
        return host[: host.index("]") + 1]
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


def _section(dump: Mapping[str, Any], type_url: str) -> Mapping[str, Any]:
    configs = dump.get("configs")
    if not isinstance(configs, list):
        raise NotInDumpError(
            "this is not an Envoy config dump: it has no 'configs' list "
            f"(its keys: {', '.join(dump) or 'none'})"
        )
    for section in configs:
        if section.get("@type") == type_url:
            return section
    present = ", ".join(section.get("@type", "?").rsplit(".", 1)[-1] for section in configs)
    raise NotInDumpError(
        f"the config dump has no {type_url.rsplit('.', 1)[-1]} (it has {present or 'nothing'})"
    )


def _some(items: list[str], sep: str = ", ") -> str:
    if not items:
        return "none"
    shown = sep.join(items[:SHOWN_IN_ERRORS])
    more = len(items) - SHOWN_IN_ERRORS
    return f"{shown}{sep}and {more} more" if more > 0 else shown
