"""Envoy proxies of the sandbox, each driven by grpclab's ADS server."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from grpclab.cluster.sandbox.processes import ProcessLauncher, envoy_binary
from grpclab.xds.server import XdsServer


@dataclass
class EnvoyProxy:
    name: str
    node_id: str
    process: Popen
    admin_address: str

    def admin_url(self, path: str) -> str:
        return f"http://{self.admin_address}{path}"


def bootstrap(node_id: str, xds_address: str, admin_ip: str) -> dict:
    """A bootstrap with nothing static but the route to the control plane."""
    xds_host, xds_port = xds_address.rsplit(":", 1)
    http2_only = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    return {
        "node": {"id": node_id, "cluster": "grpclab"},
        "admin": {"address": {"socket_address": {"address": admin_ip, "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "grpclab-xds"}}],
            },
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "grpclab-xds",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": http2_only,
                    "load_assignment": {
                        "cluster_name": "grpclab-xds",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": xds_host,
                                                    "port_value": int(xds_port),
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }


def start_envoy(
    launcher: ProcessLauncher,
    xds: XdsServer,
    name: str,
    node_id: str,
    admin_ip: str,
    work_dir: Path,
    timeout: float = 15.0,
) -> EnvoyProxy:
    """Start an Envoy and wait until its ADS stream is up."""
    config_path = work_dir / f"{name}.bootstrap.json"
    admin_path = work_dir / f"{name}.admin"
    admin_path.unlink(missing_ok=True)
    config_path.write_text(json.dumps(bootstrap(node_id, xds.address, admin_ip), indent=1))
    argv = [
        envoy_binary(),
        "-c",
        str(config_path),
        # Two sandboxes (or a sandbox and a sidecar) must not share Envoy's
        # hot-restart shared memory, or the second one refuses to start.
        "--use-dynamic-base-id",
        "--concurrency",
        "1",  # one worker: 2-core laptops run several Envoys
        "--admin-address-path",
        str(admin_path),
        "--log-level",
        "warning",
    ]
    process = launcher.start(name, argv)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (launcher.log_dir / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Envoy {name} exited with code {process.returncode}:\n{log}")
        if admin_path.exists() and admin_path.read_text().strip() and xds.connected(node_id):
            return EnvoyProxy(name, node_id, process, admin_path.read_text().strip())
        time.sleep(0.02)
    launcher.stop(process)
    raise RuntimeError(f"Envoy {name} did not connect to the xDS server within {timeout:.0f} s")


def push_config(
    xds: XdsServer, node_id: str, resources: dict, wait: bool, what: str, timeout: float
) -> dict[str, int]:
    """Set one Envoy's resources; with `wait`, return once it ACKed them, or raise if it
    refused them or said nothing in time. Returns the versions pushed, per type."""
    nacks_before = len(xds.nacks)
    versions = xds.set_resources(node_id, resources)
    if not (wait and versions):
        return versions
    if not xds.wait_acked(node_id, versions, timeout=timeout):
        raise RuntimeError(f"{what} (Envoy) did not confirm its new config within {timeout:.0f} s")
    refused = [n for n in xds.nacks[nacks_before:] if n.node_id == node_id]
    if refused:
        raise RuntimeError(f"{what} (Envoy) refused its config: {refused[-1].message}")
    return versions
