"""The plain client code a LoadSpec stands for: what a learner copies into a service.

`LoadSpec.client_code("python")` prints a grpcio client (`grpc.insecure_channel` with the
spec's options and service config, one stub call per loop turn with the spec's deadline);
`"node"` prints the same client for @grpc/grpc-js. Both print which pods answered, so a
test can run them against real pods and compare with the spec's own run. With
`in_pod=True` the target is printed as code in a pod writes it, the same text on every
backend and every run (what a notebook's checked cell needs).

Left out on purpose: what only the load generator needs (several channels and calls in
flight, timeline buckets, the sidecar's admin URL), and its two lab-only channel options:
`grpc.use_local_subchannel_pool` (so that its channels do not share connections, which
separate client processes never do) and `grpc.enable_http_proxy=0` (so that a laptop's
$http_proxy never swallows calls to 127.0.0.x).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # it reads a spec and makes none: LoadSpec.client_code imports this module
    from grpclab.load.runner import LoadSpec

LANGUAGES = ("python", "node")
WIDTH = 88  # the longest line a service config literal gets before it is split
CALLS = 300  # the loop's length when the spec runs for a duration instead of a count
# dns://SERVER/name: a name server in the target's authority (the sandbox's DNS). In a pod
# the machine's resolver is the cluster's DNS, and the target is dns:///name.
DNS_AUTHORITY = re.compile(r"^dns://[^/]+/")
REQUESTS = {
    "SayHello": ("HelloRequest", {"name": "grpclab"}),
    "GetUser": ("GetUserRequest", {"user_id": "u-1"}),
}


def client_code(
    spec: LoadSpec, language: str = "python", *, in_pod: bool = False, target: str | None = None
) -> str:
    """The client `spec` stands for, as a program in `language` ("python" or "node").

    in_pod: print the target as a client in a pod writes it (`dns:///name`: the pod's own
    resolver is the cluster's DNS) instead of the one this machine dials.
    target: print this target instead of the spec's: for a spec that dials a proxy the
    sandbox runs in the client's place (a mesh sidecar), the Service's own target.
    """
    spec.validate()
    if target is not None or in_pod:
        printed = str(spec.target if target is None else target)
        if in_pod:
            printed = DNS_AUTHORITY.sub("dns:///", printed)
        spec = dataclasses.replace(spec, target=printed)
    if spec.streaming:
        # A stream's client is a loop that reopens it (notebook 13 shows one), not one call.
        raise ValueError(
            f"client_code: no printed client for the stream mode (method={spec.method!r}) "
            f"yet; notebook 13, section 5, shows a client that reopens its stream"
        )
    if language == "python":
        return _python(spec)
    if language == "node":
        return _node(spec)
    raise ValueError(f"client_code: language must be one of {LANGUAGES}, got {language!r}")


def _calls(spec: LoadSpec) -> int:
    return spec.rpcs if spec.rpcs is not None else CALLS


def _target_notes(spec: LoadSpec, comment: str) -> list[str]:
    target = str(spec.target)
    notes = []
    if DNS_AUTHORITY.match(target):
        in_pod = DNS_AUTHORITY.sub("dns:///", target)
        notes.append(f"{comment} In a pod, the cluster's DNS answers: {in_pod}")
    if spec.channels > 1:
        notes.append(
            f"{comment} The load generator opens {spec.channels} channels like this one, each "
            "with its own connections: as many clients."
        )
    return notes


def _is_xds(spec: LoadSpec) -> bool:
    return str(spec.target).startswith("xds:")


def _default_policy_note(spec: LoadSpec, comment: str) -> list[str]:
    """Why a client without a service config still balances however it does."""
    if _is_xds(spec):
        return [f"{comment} No service config: the control plane sends the policy."]
    return [
        f"{comment} No service config: gRPC's default policy, pick_first, sends every call",
        f"{comment} over one connection. Whatever balances them is outside this code.",
    ]


def _xds_bootstrap_check(spec: LoadSpec, language: str) -> list[str]:
    """For an xds:/// target: the environment the client needs, checked before any channel."""
    if not _is_xds(spec):
        return []
    comment = "#" if language == "python" else "//"
    lines = [
        f"{comment} xds:/// asks the control plane named in the bootstrap file that",
        f"{comment} $GRPC_XDS_BOOTSTRAP points at (or in $GRPC_XDS_BOOTSTRAP_CONFIG, the file's",
        f"{comment} text), read when the first xds:/// channel is made. In a pod with Istio's",
        f"{comment} grpc-agent (inject.istio.io/templates: grpc-agent) the agent sets both up.",
    ]
    if language == "python":
        lines += [
            'if not (os.environ.get("GRPC_XDS_BOOTSTRAP")',
            '        or os.environ.get("GRPC_XDS_BOOTSTRAP_CONFIG")):',
            '    raise SystemExit("set GRPC_XDS_BOOTSTRAP to the path of an xDS bootstrap file")',
        ]
    else:
        environ = "process.env.GRPC_XDS_BOOTSTRAP || process.env.GRPC_XDS_BOOTSTRAP_CONFIG"
        lines += [
            f"if (!({environ})) {{",
            '  console.error("set GRPC_XDS_BOOTSTRAP to the path of an xDS bootstrap file");',
            "  process.exit(1);",
            "}",
        ]
    return lines


def _literal(value: Any, language: str, indent: int = 0, column: int = 0) -> str:
    """`value` (a service config) as a literal: one line where it fits, else one item a line.

    indent: the indentation of the line the literal starts on; column: where it starts.
    """
    flat = json.dumps(value, separators=(", ", ": "))
    if language == "python":
        # JSON and Python spell everything a service config holds alike but these three.
        flat = re.sub(r"\b(true|false|null)\b", lambda m: _PY[m[1]], flat)
    if column + len(flat) <= WIDTH or not isinstance(value, dict | list) or not value:
        return flat
    inner = indent + (4 if language == "python" else 2)
    if isinstance(value, dict):
        items = [
            f"{' ' * inner}{json.dumps(key)}: "
            + _literal(item, language, inner, inner + len(json.dumps(key)) + 2)
            for key, item in value.items()
        ]
        opening, closing = "{", "}"
    else:
        items = [f"{' ' * inner}{_literal(item, language, inner, inner)}" for item in value]
        opening, closing = "[", "]"
    return opening + "\n" + ",\n".join(items) + ",\n" + " " * indent + closing


_PY = {"true": "True", "false": "False", "null": "None"}


def _python(spec: LoadSpec) -> str:
    config = spec.service_config_dict()
    request_type, fields = REQUESTS[spec.method]
    request_args = ", ".join(f"{key}={json.dumps(value)}" for key, value in fields.items())
    lines = [
        "import json",
        *(["import os"] if _is_xds(spec) else []),
        "from collections import Counter",
        "",
        "import grpc",
        "",
        "# Stubs generated from protos/demo.proto:",
        "#   python -m grpc_tools.protoc -I protos --python_out=. --grpc_python_out=. demo.proto",
        "import demo_pb2",
        "import demo_pb2_grpc",
        "",
        *_target_notes(spec, "#"),
        *_xds_bootstrap_check(spec, "python"),
        f"TARGET = {json.dumps(str(spec.target))}",
    ]
    options = [
        f"({json.dumps(key)}, {json.dumps(value)})" for key, value in spec.channel_options.items()
    ]
    if config is not None:
        lines.append(f"SERVICE_CONFIG = {_literal(config, 'python', 0, len('SERVICE_CONFIG = '))}")
        options.insert(0, '("grpc.service_config", json.dumps(SERVICE_CONFIG))')
    else:
        lines += _default_policy_note(spec, "#")
    if spec.tls_server_name:
        options += [
            f'("grpc.ssl_target_name_override", {json.dumps(spec.tls_server_name)})',
            f'("grpc.default_authority", {json.dumps(spec.tls_server_name)})',
        ]
    lines.append("")
    option_lines = "".join(f"        {option},\n" for option in options)
    arguments = "TARGET" if spec.tls_ca_file is None else "TARGET, credentials"
    if options:
        arguments = f"\n    {arguments},\n    options=[\n{option_lines}    ],\n"
    if spec.tls_ca_file is None:
        lines.append(f"channel = grpc.insecure_channel({arguments})")
    else:
        lines += [
            f"with open({json.dumps(spec.tls_ca_file)}, 'rb') as ca:",
            "    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read())",
            f"channel = grpc.secure_channel({arguments})",
        ]
    if spec.deadline_s is None:
        call = f"stub.{spec.method}(request)  # no deadline: a stuck call waits forever"
    else:
        call = f"stub.{spec.method}(request, timeout={spec.deadline_s!r})  # the deadline, s"
    lines += [
        "stub = demo_pb2_grpc.MyServiceStub(channel)",
        f"request = demo_pb2.{request_type}({request_args})",
        "",
        "served = Counter()",
        f"for _ in range({_calls(spec)}):",
        f"    reply = {call}",
        "    served[reply.served_by.pod_name] += 1",
        "print(json.dumps(served))",
        "channel.close()",
    ]
    return "\n".join(lines) + "\n"


def _node(spec: LoadSpec) -> str:
    config = spec.service_config_dict()
    target = str(spec.target)
    _, fields = REQUESTS[spec.method]
    lines = ['"use strict";']
    if DNS_AUTHORITY.match(target):
        lines += [
            "// grpc-js asks the DNS server named in a dns://SERVER/name target only with this",
            "// set before it loads; a pod's own resolver needs nothing.",
            'process.env.GRPC_NODE_USE_ALTERNATIVE_RESOLVER = "true";',
        ]
    lines += [
        'const fs = require("node:fs");',
        'const grpc = require("@grpc/grpc-js");',
        'const protoLoader = require("@grpc/proto-loader");',
    ]
    if _is_xds(spec):
        lines.append('require("@grpc/grpc-js-xds").register();')
    lines += [
        "",
        *_target_notes(spec, "//"),
        *_xds_bootstrap_check(spec, "node"),
        f"const TARGET = {json.dumps(target)};",
    ]
    options = {key: value for key, value in spec.channel_options.items()}
    if spec.tls_server_name:
        options["grpc.ssl_target_name_override"] = spec.tls_server_name
        options["grpc.default_authority"] = spec.tls_server_name
    option_lines = [f"  {json.dumps(key)}: {json.dumps(value)}," for key, value in options.items()]
    if config is None:
        lines += _default_policy_note(spec, "//")
    else:
        lines.append(
            f"const SERVICE_CONFIG = {_literal(config, 'node', 0, len('const SERVICE_CONFIG = '))};"
        )
        option_lines.insert(0, '  "grpc.service_config": JSON.stringify(SERVICE_CONFIG),')
    if spec.tls_ca_file is None:
        credentials = "grpc.credentials.createInsecure()"
    else:
        credentials = f"grpc.credentials.createSsl(fs.readFileSync({json.dumps(spec.tls_ca_file)}))"
    if spec.deadline_s is None:
        call_options = "{}"  # no deadline: a stuck call waits forever
        deadline_note = "  // no deadline: a stuck call waits forever"
    else:
        call_options = f"{{ deadline: Date.now() + {round(spec.deadline_s * 1000)} }}"
        deadline_note = ""
    lines += [
        "",
        "// The API from protos/demo.proto, loaded at run time.",
        "const options = { keepCase: true, defaults: true };",
        'const definition = protoLoader.loadSync("demo.proto", options);',
        "const { MyService } = grpc.loadPackageDefinition(definition).mypackage;",
        *(
            [f"const client = new MyService(TARGET, {credentials}, {{", *option_lines, "});"]
            if option_lines
            else [f"const client = new MyService(TARGET, {credentials});"]
        ),
        "",
        "function call() {",
        "  return new Promise((resolve, reject) => {",
        f"    client.{spec.method}({json.dumps(fields)}, {call_options}, (error, reply) =>"
        + deadline_note,
        "      error ? reject(error) : resolve(reply));",
        "  });",
        "}",
        "",
        "async function main() {",
        "  const served = {};",
        f"  for (let i = 0; i < {_calls(spec)}; i++) {{",
        "    const reply = await call();",
        "    const pod = reply.served_by.pod_name;",
        "    served[pod] = (served[pod] ?? 0) + 1;",
        "  }",
        "  console.log(JSON.stringify(served));",
        "  client.close();",
        *(
            ["  process.exit(0);  // the xDS client keeps its control-plane stream open"]
            if _is_xds(spec)
            else []
        ),
        "}",
        "",
        "main().catch((error) => {",
        "  console.error(error.message);",
        "  process.exit(1);",
        "});",
    ]
    if "fs." not in "\n".join(lines[lines.index('const fs = require("node:fs");') + 1 :]):
        lines.remove('const fs = require("node:fs");')
    return "\n".join(lines) + "\n"
