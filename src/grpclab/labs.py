"""Graded labs: replay the learner's files from labs/NN-topic/ on a cluster, say what passed.

A lab folder holds `starter/` (the files as handed out), `solution/`, `rules.yaml` and
`work/`: the learner's copy of `starter/`, which the notebook makes and the learner edits.
`check_lab` first holds the files to the lab's rules (which objects and fields are the
learner's to change; an allow-list against the shipped starter), then applies them,
drives load with `client.yaml`, and measures what the lab teaches with grpclab.measure.checks.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from grpclab.cluster import Cluster
from grpclab.cluster.containers import (
    MINIMUM_GRACE_SECONDS,
    UnsupportedHook,
    prestop_sleep_seconds,
)
from grpclab.cluster.manifests import ManifestError, kubectl_ref, load_objects
from grpclab.load import LoadResult, LoadSpec
from grpclab.load.drills import DrillError, drill, least_restarted, sidecar_retry_on
from grpclab.measure import checks
from grpclab.notes import say
from grpclab.paths import LABS, MANIFESTS

if TYPE_CHECKING:
    from grpclab.tls import TlsBundle

LABS_DIR = LABS
CLIENT_FILE = "client.yaml"
RULES_FILE = "rules.yaml"
DEPLOYMENT = "grpc-server"
V2_DEPLOYMENT = "grpc-server-v2"
DEFAULT_DNS_COOL_DOWN_MS = 30_000  # grpc.dns_min_time_between_resolutions_ms when unset


class LabFilesError(ValueError):
    """A learner's lab file is missing or malformed; the message names the file and field."""


# --- the learner's client ------------------------------------------------------------------


@dataclass(frozen=True)
class ClientConfig:
    """How the lab's client reaches the demo server: the fields of `client.yaml`."""

    service: str
    port: int | str = "grpc"
    via: str = "dns"  # "dns", "clusterip", or a way an add-on adds ("mesh", "gateway", ...)
    lb_policy: str | None = None  # None: the channel's default, pick_first
    channels: int = 1
    channel_options: dict[str, Any] = field(default_factory=dict)
    service_config: dict[str, Any] | None = None  # a full service config; wins over lb_policy

    def load_spec(self, cluster: Cluster, **load: Any) -> LoadSpec:
        """A LoadSpec with this client's target and channel settings; `load` sets the rest."""
        load.setdefault("concurrency", 8)
        load["concurrency"] = max(load["concurrency"], self.channels)
        return LoadSpec(
            cluster.target(self.service, self.port, via=self.via),
            lb_policy=self.lb_policy,
            channels=self.channels,
            channel_options=dict(self.channel_options),
            service_config=self.service_config,
            **load,
        )


_CLIENT_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "service": (str, "a Service name, such as grpc-server"),
    "port": ((int, str), "a port number or name, such as grpc"),
    "via": (str, "dns, clusterip, or a way an add-on adds (mesh, gateway, ...)"),
    "lb_policy": ((str, type(None)), "a gRPC policy name: pick_first or round_robin"),
    "channels": (int, "a whole number of channels, 1 or more"),
    "channel_options": ((dict, type(None)), "a mapping of gRPC channel option to value"),
    "service_config": ((dict, type(None)), "a gRPC service config, as a mapping"),
}


def read_client_config(path: str | Path) -> ClientConfig:
    """Parse and check `client.yaml`; a LabFilesError names the file and the field."""
    path = Path(path)
    where = f"{path}: client config"
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise LabFilesError(f"{path}: not found (run the notebook's first cell)") from None
    except yaml.YAMLError as error:
        raise LabFilesError(f"{where}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise LabFilesError(f"{where}: must be a mapping of field: value")
    for key, value in data.items():
        if key not in _CLIENT_FIELDS:
            known = ", ".join(_CLIENT_FIELDS)
            raise LabFilesError(f"{where}: field {key!r}: unknown field (known: {known})")
        kinds, what = _CLIENT_FIELDS[key]
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise LabFilesError(f"{where}: field {key!r}: {value!r} is not {what}")
    if "service" not in data:
        raise LabFilesError(f"{where}: field 'service': missing (the Service to call)")
    if data.get("channels", 1) < 1:
        raise LabFilesError(f"{where}: field 'channels': {data['channels']} is not 1 or more")
    data["channel_options"] = data.get("channel_options") or {}
    config = ClientConfig(**data)
    try:
        LoadSpec(
            "check", lb_policy=config.lb_policy, service_config=config.service_config
        ).service_config_json()
    except ValueError as error:
        raise LabFilesError(f"{where}: field 'service_config': {error}") from None
    return config


# --- the learner's query ------------------------------------------------------------------

QUERY_SUFFIX = ".promql"
# What in a PromQL expression is not a metric name: keywords, and label lists after them.
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and"}
_PROMQL_WORDS |= {"or", "unless", "offset", "inf", "nan", "atan2", "start", "end"}
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()")


def read_query(path: str | Path) -> str:
    """The PromQL in `path`, without its comment lines; a LabFilesError names the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LabFilesError(f"{path}: not found (run the notebook's first cell)") from None
    query = "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    ).strip()
    if not query:
        raise LabFilesError(f"{path}: holds no query (lines that start with # are comments)")
    if "__name__" in query:
        raise LabFilesError(
            f"{path}: selects metrics through __name__: name each metric it reads instead"
        )
    return query


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, keywords or labels)."""
    text = _STRING.sub('""', query)
    text = _LABEL_LIST.sub(" ", text)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _PROMQL_WORDS}


# --- results ---------------------------------------------------------------------------------


@dataclass
class CheckItem:
    """One graded statement about the learner's cluster: what was measured against what."""

    name: str
    passed: bool
    measured: str
    expected: str = ""  # the value that would pass, in the terms of `measured`
    hint: str = ""  # what to look at next; printed only when the item failed


@dataclass
class LabResult:
    """Every item of one check run; `passed` only if there are items and all passed."""

    lab: str
    title: str
    items: list[CheckItem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.items) and all(item.passed for item in self.items)

    @property
    def failed(self) -> list[CheckItem]:
        return [item for item in self.items if not item.passed]

    def report(self) -> str:
        """What `check_lab` prints: a line per item; measured, expected and next under a failure."""
        lines = [f"lab {self.lab} · {self.title}"]
        for item in self.items:
            if item.passed:
                lines.append(f"  ok    {item.name}: {item.measured}")
                continue
            lines.append(f"  FAIL  {item.name}")
            lines.append(f"        measured: {item.measured}")
            if item.expected:
                lines.append(f"        expected: {item.expected}")
            if item.hint:
                lines.append(f"        next: {item.hint}")
        if self.passed:
            lines.append(f"lab {self.lab}: PASSED ({len(self.items)} of {len(self.items)} checks)")
        else:
            lines.append(
                f"lab {self.lab}: not passed yet ({len(self.failed)} of {len(self.items)} "
                "checks failed)"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        state = "passed" if self.passed else f"{len(self.failed)} of {len(self.items)} failed"
        return f"LabResult(lab={self.lab!r}, {state})"


class _Stop(Exception):
    """A prerequisite failed (rules, files, rollout): the items after it cannot be measured."""


# --- the rules: what the learner may change -------------------------------------------------
#
# A path names one place in an object: `spec.template.spec.containers[grpc-server].env`.
# A list whose items are mappings with distinct names is indexed by name (`env[POD_IP]`), any
# other list of mappings by position (`rules[0]`); `[*]` in a rule matches any item or key.
# A mapping key with a dot in it is written in brackets: `channel_options[grpc.x_y]`.

Path_ = tuple[tuple[str, bool], ...]  # (key, is a list item) from the top of the object
_MISSING = object()
_SEGMENT = re.compile(r"\[([^\]]*)\]|([^.\[\]]+)")


def _pattern(text: str) -> tuple[str, ...]:
    return tuple(bracketed or plain for bracketed, plain in _SEGMENT.findall(text))


def show_path(path: Path_) -> str:
    """A path as the rules write it: `spec.template.spec.containers[grpc-server].env`."""
    text = ""
    for key, item in path:
        if item or "." in key:
            text += f"[{key}]"
        else:
            text += f".{key}" if text else key
    return text


def leaves(value: Any, path: Path_ = ()) -> dict[Path_, Any]:
    """Every scalar (or list of scalars) in `value` by its path; empty and null ones left out."""
    if isinstance(value, Mapping):
        found: dict[Path_, Any] = {}
        for key, item in value.items():
            found.update(leaves(item, (*path, (str(key), False))))
        return found
    if isinstance(value, list) and value and all(isinstance(i, Mapping) for i in value):
        names = [item.get("name") for item in value]
        named = all(isinstance(n, str) for n in names) and len(set(names)) == len(names)
        keys = names if named else [str(index) for index in range(len(value))]
        found = {}
        for key, item in zip(keys, value, strict=True):
            found.update(leaves(item, (*path, (str(key), True))))
        return found
    if value is None or value == [] or value == {}:
        return {}
    return {path: value}


def _matches(pattern: tuple[str, ...], path: Path_, prefix: bool) -> bool:
    if len(pattern) > len(path) or (not prefix and len(pattern) != len(path)):
        return False
    return all(want in ("*", key) for want, (key, _) in zip(pattern, path, strict=False))


def allows(allowed: Iterable[str], path: Path_) -> bool:
    """Whether a rule's allow-list (paths, with [*]) covers `path` or a place above it."""
    return any(_matches(_pattern(text), path, prefix=True) for text in allowed)


def _show_value(value: Any) -> str:
    if value is _MISSING:
        return "absent"
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def changed_fields(
    shipped: Any, yours: Any, may_change: Iterable[str], values: Mapping[str, Iterable[Any]]
) -> list[str]:
    """What `yours` changes of `shipped` outside the `may_change` paths, and values not allowed."""
    before, after = leaves(shipped), leaves(yours)
    problems = []
    for path in [*before, *(p for p in after if p not in before)]:
        old, new = before.get(path, _MISSING), after.get(path, _MISSING)
        if old == new or allows(may_change, path):
            continue
        if old is _MISSING:
            problems.append(f"{show_path(path)} is added ({_show_value(new)})")
        elif new is _MISSING:
            problems.append(f"{show_path(path)} is removed (shipped: {_show_value(old)})")
        else:
            problems.append(
                f"{show_path(path)} changed (shipped: {_show_value(old)}; "
                f"yours: {_show_value(new)})"
            )
    for text, options in values.items():
        options = list(options)
        for path, value in after.items():
            if _matches(_pattern(text), path, prefix=False) and value not in options:
                listed = ", ".join(str(option) for option in options)
                problems.append(f"{show_path(path)} is {value}; it must be one of {listed}")
    return problems


def _words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _one_of(values: Iterable[Any]) -> str:
    shown = [f"`{value}`" for value in values]
    return f"only {shown[0]}" if len(shown) == 1 else f"one of {_words(shown)}"


@functools.cache
def _shipped_objects(path: Path) -> dict[str, dict[str, Any]]:
    """A starter file's objects by "Kind/name"; the repository's files do not change."""
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in load_objects(path)}


@dataclass(frozen=True)
class FileRule:
    """One file the learner edits: the objects it may hold and what of them may change."""

    name: str
    why: str
    may_change: tuple[str, ...] = ()  # client.yaml: its fields
    objects: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # "Kind/name" ->
    metrics: tuple[str, ...] = ()  # a .promql file: the metric names its query may read

    @property
    def is_client(self) -> bool:
        return self.name == CLIENT_FILE

    @property
    def is_query(self) -> bool:
        return self.name.endswith(QUERY_SUFFIX)

    def allowed(self) -> str:
        """What the learner may change here, as the README says it."""
        if self.is_client:
            return "only " + _words([f"`{text}`" for text in self.may_change])
        if self.is_query:
            names = _words([f"`{name}`" for name in self.metrics])
            return f"one PromQL expression that reads no metric but {names}"
        parts = []
        for ref, rule in self.objects.items():
            kind, name = ref.split("/", 1)
            values = rule.get("values", {})
            fields = [
                f"`{text}`" + (f" ({_one_of(values[text])})" if text in values else "")
                for text in rule["may_change"]
            ]
            fields += [
                f"`{text}` ({_one_of(values[text])})"
                for text in values
                if text not in rule["may_change"]
            ]
            parts.append(f"in the {kind} `{name}`, only {_words(fields)}")
        return "; ".join(parts)

    def problems(self, folder: Path, shipped: Path) -> list[str]:
        """Everything in `folder/name` that breaks this rule; `shipped`: the starter file."""
        path = folder / self.name
        if not path.exists():
            return [f"{self.name}: not found (run the notebook's first cell, which makes work/)"]
        if self.is_client:
            try:
                yours = asdict(read_client_config(path))
            except LabFilesError as error:
                return [str(error)]
            found = changed_fields(asdict(read_client_config(shipped)), yours, self.may_change, {})
            return [f"{self.name}: {problem}" for problem in found]
        if self.is_query:
            try:
                read = metric_names(read_query(path))
            except LabFilesError as error:
                return [str(error)]
            others = sorted(name for name in read if name not in self.metrics)
            return [f"{self.name}: it reads {name}" for name in others]
        try:
            objects = {f"{o['kind']}/{o['metadata']['name']}": o for o in load_objects(path)}
        except ValueError as error:
            return [str(error)]
        starter = _shipped_objects(shipped)
        held = _words([f"{ref.split('/')[0]} {ref.split('/', 1)[1]}" for ref in self.objects])
        problems = []
        extra = [ref for ref in objects if ref not in self.objects]
        if extra:
            problems.append(
                f"{self.name} may only hold the {held}; it also holds {', '.join(extra)}"
            )
        for ref, rule in self.objects.items():
            if ref not in objects:
                problems.append(f"{self.name} must hold the {held}; it has no {ref}")
                continue
            found = changed_fields(
                starter[ref], objects[ref], rule["may_change"], rule.get("values", {})
            )
            problems += [f"{ref}: {problem}" for problem in found]
        return problems


@dataclass(frozen=True)
class LabRules:
    """A lab's rules table (labs/NN-x/rules.yaml): files, limits and what passing means."""

    files: tuple[FileRule, ...]
    limits: Mapping[str, float]
    passes_when: Mapping[str, str]  # check key -> the check's name, with limits filled in

    @classmethod
    def read(cls, path: Path) -> LabRules:
        data = yaml.safe_load(path.read_text())
        files = tuple(
            FileRule(
                name,
                " ".join(str(rule["why"]).split()),
                tuple(rule.get("may_change", ())),
                rule.get("objects", {}),
                tuple(rule.get("metrics", ())),
            )
            for name, rule in data["files"].items()
        )
        limits = data["limits"]
        passes = {key: text.format(**limits) for key, text in data["passes_when"].items()}
        return cls(files, limits, passes)

    @property
    def manifests(self) -> tuple[str, ...]:
        return tuple(rule.name for rule in self.files if not (rule.is_client or rule.is_query))

    def item(self, key: str, passed: bool, measured: str, expected: str, hint: str) -> CheckItem:
        return CheckItem(self.passes_when[key], passed, measured, expected, hint)

    def you_edit(self) -> str:
        """The README's "You edit" line."""
        files = "; ".join(f"`work/{rule.name}`: {rule.allowed()}" for rule in self.files)
        return (
            f"- **You edit:** {files}. Everything else stays as shipped in `starter/`: the "
            "check refuses a file that changes more, before it sends a call."
        )

    def passes_when_text(self) -> str:
        """The README's "Passes when" list."""
        return "\n".join(
            ["- **Passes when:** your files keep to the rules above, and"]
            + [f"  - {text}" for text in self.passes_when.values()]
        )


def rules_item_name(rule: FileRule) -> str:
    return f"{rule.name} changes only what the lab lets you change"


def check_rules(lab: str | int, folder: str | Path) -> list[CheckItem]:
    """One item per file the learner edits: does `folder`'s copy keep to the lab's rules?

    Offline: nothing here touches a cluster. The shipped starter/ in the repository (not
    the learner's copy of it) is what each file is compared with.
    """
    info = lab_info(lab)
    starter = LABS_DIR / info.folder / "starter"
    items = []
    for rule in info.rules.files:
        problems = rule.problems(Path(folder), starter / rule.name)
        measured = "; ".join(problems[:4]) + (
            f"; and {len(problems) - 4} more" if len(problems) > 4 else ""
        )
        allowed = rule.allowed().replace("`", "")  # printed as plain text
        items.append(
            CheckItem(
                rules_item_name(rule),
                not problems,
                measured or "as the rules allow",
                f"{rule.name}: {allowed}; the rest as in starter/{rule.name}",
                f"{rule.why}. Compare your file with starter/{rule.name} and put back the rest",
            )
        )
    return items


# --- applying the learner's files ---------------------------------------------------------------


def _headless(service: Mapping[str, Any]) -> bool:
    spec = service.get("spec") or {}
    return spec.get("clusterIP") == "None" or (spec.get("clusterIPs") or [None])[0] == "None"


def service_needs_replacing(live: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether `desired` must replace the `live` Service: it turns it headless, or back.

    Neither way works in place. Going headless, the API server refuses:
    `spec.clusterIPs[0]: Invalid value: ["None"]: may not change once set`. Going back, it
    keeps "None" where the update leaves clusterIP empty (patchAllocatedValues in
    kubernetes' pkg/registry/core/service/storage/alloc.go), so the Service stays headless.
    """
    if live is None or desired.get("kind") != "Service":
        return False
    return _headless(live) != _headless(desired)


def live_service(cluster: Cluster, desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """The live Service named as `desired`, as far as the Cluster interface shows it.

    Its spec.clusterIP is "None" when `target(via="clusterip")` says it is headless, and
    otherwise the address that target gives (on kind, the name that resolves to it). None
    when there is no such Service, or it lacks the desired first port.
    """
    ports = (desired.get("spec") or {}).get("ports") or [{"port": "grpc"}]
    name = desired["metadata"]["name"]
    try:
        address = cluster.target(name, ports[0]["port"], via="clusterip")
    except KeyError:
        return None
    except ValueError:  # both backends: "service ... is headless: it has no cluster IP"
        cluster_ip = "None"
    else:
        cluster_ip = str(address).rsplit(":", 1)[0]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"clusterIP": cluster_ip},
    }


def apply_files(cluster: Cluster, paths: Iterable[Path]) -> list[str]:
    """Apply each file in order, replacing a Service that turns headless or back.

    Like `kubectl replace --force`, such a Service is deleted and applied again; which
    ones is decided from the live and desired objects (service_needs_replacing).
    """
    lines: list[str] = []
    for path in paths:
        replace = [
            obj
            for obj in load_objects(path)
            if obj["kind"] == "Service" and service_needs_replacing(live_service(cluster, obj), obj)
        ]
        if replace:
            cluster.delete(replace)
        refs = {kubectl_ref(obj) for obj in replace}
        for line in cluster.apply(path):
            ref = line.split(" ", 1)[0]
            lines.append(line.replace(" created", " replaced") if ref in refs else line)
    return lines


@dataclass(frozen=True)
class Lab:
    """What a lab is made of: given manifests from cluster/, and files the learner edits."""

    number: str
    folder: str
    title: str
    given: tuple[Path, ...]  # applied first, never edited by the learner
    run: Callable[[Cluster, Path, LabRules, list[CheckItem]], None]
    deployments: tuple[str, ...] = (DEPLOYMENT,)
    controllers: tuple[str, ...] = ()  # add-ons the lab's objects need (install_addon names)

    @property
    def rules(self) -> LabRules:
        return _rules(self.folder)

    @property
    def manifests(self) -> tuple[str, ...]:
        """The learner's manifests, by file name, in the order they are applied."""
        return self.rules.manifests


@functools.cache
def _rules(folder: str) -> LabRules:
    return LabRules.read(LABS_DIR / folder / RULES_FILE)


def _objects(path: Path) -> list[Mapping[str, Any]]:
    try:
        return load_objects(path)
    except ManifestError:  # the rules check reports a file that does not load
        return []


def _deployment_env(path: Path) -> dict[str, str]:
    """The first container's plain env values of the Deployment in `path` (for hints)."""
    for obj in _objects(path):
        if obj["kind"] == "Deployment":
            container = obj["spec"]["template"]["spec"]["containers"][0]
            return {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
    return {}


@dataclass(frozen=True)
class _Stopping:
    """What the learner's files make of a pod deletion, for lab 03's hints."""

    grace_s: float  # terminationGracePeriodSeconds
    hook_s: float  # the preStop sleep (0: none, or a hook whose length is unknown)
    drain_s: float  # how long the app serves after SIGTERM (GRPCLAB_DRAIN_DELAY_S)
    watches_health: bool  # the client's service config has a healthCheckConfig

    @property
    def term_s(self) -> float:
        """Seconds from SIGTERM to SIGKILL, as the kubelet counts them."""
        return max(self.grace_s - min(self.hook_s, self.grace_s), MINIMUM_GRACE_SECONDS)

    @property
    def killed_in_drain(self) -> bool:
        return self.term_s < self.drain_s + 0.5


def _how_it_stops(path: Path, client: ClientConfig) -> _Stopping:
    grace, hook = 30.0, 0.0
    for obj in _objects(path):
        if obj["kind"] == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            grace = float(pod.get("terminationGracePeriodSeconds", 30))
            try:
                hook = prestop_sleep_seconds(pod["containers"][0]) or 0.0
            except UnsupportedHook:  # a hook only a real cluster runs: its length is unknown
                hook = 0.0
    drain = float(_deployment_env(path).get("GRPCLAB_DRAIN_DELAY_S", 1))
    watches = "healthCheckConfig" in (client.service_config or {})
    return _Stopping(grace, hook, drain, watches)


def _ready(
    cluster: Cluster, rules: LabRules, key: str, wanted: Mapping[str, int], items: list[CheckItem]
) -> dict[str, list[str]]:
    """The ready pods of each Deployment in `wanted`; an item says if the counts are as shipped."""
    pods = {name: [pod.name for pod in cluster.wait_ready(name)] for name in wanted}
    passed = all(len(pods[name]) == count for name, count in wanted.items())
    items.append(
        rules.item(
            key,
            passed,
            ", ".join(f"{len(pods[name])} pods of {name} ready" for name in wanted),
            ", ".join(f"{count} pods of {name}" for name, count in wanted.items()),
            "the lab's Deployments are given as shipped: print(lab.pods()) lists what runs, "
            "and pods that do not belong there come from something you applied by hand "
            "(lab.delete it, or restart the kernel and run the notebook from the top)",
        )
    )
    if not passed:
        raise _Stop
    return pods


def _shipped_pods(cluster: Cluster, rules: LabRules, items: list[CheckItem]) -> list[str]:
    """The ready pods of the lab's Deployment; an item says if there are as many as shipped."""
    return _ready(cluster, rules, "pods", {DEPLOYMENT: rules.limits["pods"]}, items)[DEPLOYMENT]


def _no_failure(rules: LabRules, hint: str, *results: LoadResult) -> CheckItem:
    """The item that every call of `results` succeeded."""
    failed = any(result.failed for result in results)
    return rules.item("no_failure", not failed, _failed_calls(*results), "0 failed calls", hint)


def _failed_calls(*results: LoadResult) -> str:
    errors: dict[str, int] = {}
    for result in results:
        for code, count in result.errors.items():
            errors[code] = errors.get(code, 0) + count
    failed, total = sum(errors.values()), sum(result.total for result in results)
    codes = ", ".join(f"{code} x{count}" for code, count in errors.items())
    return f"{failed} of {total} calls failed" + (f" ({codes})" if codes else "")


_FIX_FILE_HINT = "the message names the file, the object and the field to fix"
_NOT_READY_HINT = (
    "a pod never became Ready: print(lab.pods()) lists the pods with their phase and "
    "restarts, and print(lab.logs(pod)) shows what that pod's server said"
)


# --- lab 01: fix the imbalance -------------------------------------------------------------------


def _run_lab01(cluster: Cluster, files: Path, rules: LabRules, items: list[CheckItem]) -> None:
    limits = rules.limits
    config = read_client_config(files / CLIENT_FILE)  # the rules have read it already
    pods = _shipped_pods(cluster, rules, items)
    service = live_service(cluster, {"metadata": {"name": config.service}, "spec": {}})
    headless = service is not None and _headless(service)
    items.append(
        rules.item(
            "headless",
            headless,
            "no cluster IP: DNS answers with each ready pod's address"
            if headless
            else "it has a cluster IP: DNS answers with that one virtual address",
            f"no cluster IP: DNS answers with each of the {len(pods)} pods' addresses",
            "a ClusterIP Service has one virtual IP, and kube-proxy picks a pod once per "
            "connection, not per call. Which kind of Service makes DNS answer with every "
            "ready pod instead? (the README's hint 2)",
        )
    )
    # Paced: where calls go does not depend on their rate, and an unpaced client would
    # measure the machine's CPU (1,000 calls/s or more on two cores).
    spec = config.load_spec(cluster, rpcs=None, duration_s=limits["run_s"], rate=limits["rate"])
    # Each run on new connections: spreading connections at random can look even once by
    # luck; spreading calls is even every time.
    runs = [cluster.run_load(spec) for _ in range(int(limits["runs"]))]
    served = [sum(1 for pod in pods if run.per_pod.get(pod, 0) > 0) for run in runs]
    others = sorted({pod for run in runs for pod in run.per_pod if pod not in pods})
    if not headless:
        spread_hint = (
            "your client resolves one address, the Service's cluster IP, and kube-proxy "
            "picks a pod once per connection, not per call. Fix the Service first (the check "
            "about DNS above)"
        )
    elif config.service_config is None and config.lb_policy in (None, "pick_first"):
        spread_hint = (
            "the client now gets every pod's address, but pick_first (the default) sends "
            "every call to the first one that works. Set a policy in client.yaml that "
            "spreads calls over all addresses."
        )
    else:
        spread_hint = "compare your files with the README's steps 2 and 3"
    items.append(
        rules.item(
            "every_pod",
            all(count == len(pods) for count in served) and not others,
            " and ".join(f"{count} of {len(pods)} pods" for count in served)
            + (f"; also pods not of {DEPLOYMENT}: {', '.join(others)}" if others else ""),
            f"{len(pods)} of {len(pods)} pods in each run, and no other",
            spread_hint,
        )
    )
    ratios = [checks.max_min_ratio(run.between(limits["connect_s"]), pods) for run in runs]
    items.append(
        rules.item(
            "even",
            all(ratio <= limits["max_ratio"] for ratio in ratios),
            "max/min "
            + " and ".join("inf (a pod got none)" if math.isinf(r) else f"{r:.2f}" for r in ratios),
            f"max/min at most {limits['max_ratio']} in each run",
            spread_hint,
        )
    )
    items.append(
        _no_failure(
            rules,
            "the status codes say why; notebook 02's table shows them per pod, and "
            "print(lab.pods()) shows a pod that is not ready",
            *runs,
        )
    )


# --- lab 02: new pods get traffic --------------------------------------------------------------


def _run_lab02(cluster: Cluster, files: Path, rules: LabRules, items: list[CheckItem]) -> None:
    limits = rules.limits
    config = read_client_config(files / CLIENT_FILE)  # the rules have read it already
    before = _shipped_pods(cluster, rules, items)
    spec = config.load_spec(
        cluster, rpcs=None, duration_s=limits["run_s"], concurrency=4, rate=limits["rate"]
    )
    from grpclab.widgets import run_with_scale  # plotly and ipywidgets: only when needed

    added = int(limits["scale_to"] - limits["pods"])
    try:
        scale = run_with_scale(
            cluster, spec, int(limits["scale_to"]), at_s=limits["scale_at_s"], deployment=DEPLOYMENT
        )
    except TimeoutError as error:
        items.append(
            rules.item(
                "scale",
                False,
                str(error),
                f"{added} new pods Ready",
                _NOT_READY_HINT,
            )
        )
        raise _Stop from None
    finally:
        cluster.scale(DEPLOYMENT, len(before))  # back to the file's replicas
    new = [pod for pod in scale.new_pods if pod not in before]
    left_s = scale.result.elapsed_s - scale.ready_at_s
    items.append(
        rules.item(
            "scale",
            len(new) == added
            and scale.ready_at_s >= scale.scaled_at_s
            and left_s >= limits["pickup_within_s"],
            f"{len(new)} new pods, Ready {scale.ready_at_s:.1f} s into the run "
            f"({left_s:.1f} s of it left)",
            f"{added} new pods, Ready with at least {limits['pickup_within_s']:g} s left",
            "the pods took long to start: is the machine very busy? Run the check again.",
        )
    )
    if not new:
        raise _Stop
    pickups = {
        pod: checks.pickup_time(scale.result, [pod], since_s=scale.ready_at_s) for pod in new
    }
    env = _deployment_env(files / "deployment.yaml")
    cool_down = config.channel_options.get(
        "grpc.dns_min_time_between_resolutions_ms", DEFAULT_DNS_COOL_DOWN_MS
    )
    within = limits["pickup_within_s"]
    if "GRPC_MAX_CONNECTION_AGE_MS" not in env:
        hint = (
            "round_robin balances over the addresses it resolved, and the client resolves "
            "again only when a connection closes. Nothing closes them here: which server "
            "setting makes connections end after a while? (the demo server reads it from an "
            "environment variable; see the README)"
        )
    elif int(cool_down) > within * 1000:
        hint = (
            f"connections now close, but the client waits {int(cool_down) / 1000:g} s "
            "between two DNS lookups (grpc.dns_min_time_between_resolutions_ms, 30 s by "
            "default). Lower it in client.yaml's channel_options."
        )
    else:
        hint = (
            "a connection lives up to the server's maximum age before the client looks "
            f"again: choose an age that leaves room within {within:g} s."
        )
    late = {pod: t for pod, t in pickups.items() if t is None or t > within}
    items.append(
        rules.item(
            "pickup",
            not late,
            ", ".join(
                f"{pod} never served" if t is None else f"{pod} served {t:.1f} s after Ready"
                for pod, t in pickups.items()
            ),
            f"each new pod's first call within {within:g} s of Ready",
            hint,
        )
    )
    items.append(
        _no_failure(
            rules,
            "calls fail when a connection closes under them: give calls in flight time to "
            "finish after the server's GOAWAY (GRPC_MAX_CONNECTION_AGE_GRACE_MS)",
            scale.result,
        )
    )


# --- lab 03: survive a pod kill --------------------------------------------------------------


def _run_lab03(cluster: Cluster, files: Path, rules: LabRules, items: list[CheckItem]) -> None:
    limits = rules.limits
    config = read_client_config(files / CLIENT_FILE)  # the rules have read it already
    pods = _shipped_pods(cluster, rules, items)
    victim = pods[0]
    # Calls fail at the SIGKILL only if the pod holds some then, and it holds only those
    # sent in the last latency_ms. Paced, the client sends it one every few ms whatever the
    # replies do, so it meets the SIGKILL empty only after a stall of the client as long as
    # a call; unpaced, replies that wait out a stall restart every call at once, in waves
    # with empty gaps between them. With 50 ms unpaced calls, a client starved of CPU (no
    # reply read for 230 ms, measured beside two notebooks' tests) let the starter pass.
    # `concurrency` is twice the rate x latency calls in flight: room to catch up.
    spec = config.load_spec(
        cluster,
        rpcs=None,
        duration_s=limits["run_s"],
        concurrency=int(limits["concurrency"]),
        rate=limits["rate"],
    )
    kill_at_s = limits["kill_at_s"]
    # Real handlers take time, so calls are in flight on the pod when it goes. (The demo's
    # calls take well under a millisecond, so a kill could miss them all by luck.)
    for pod in pods:
        cluster.set_fault(pod, added_latency_ms=limits["latency_ms"])
    try:
        run = drill(cluster, spec, kill_at_s, lambda: cluster.delete_pod(victim))
    except DrillError as error:
        items.append(
            rules.item(
                "kill",
                False,
                str(error),
                f"a deletion {kill_at_s:g} s into the run",
                "no call completed, or the run ended first: look at print(lab.pods())",
            )
        )
        raise _Stop from None
    finally:
        for pod in cluster.pods({"app": DEPLOYMENT}):
            if pod.name != victim and pod.ready:
                cluster.set_fault(pod.name, added_latency_ms=0)
    result, killed_at = run.result, run.action_started_s
    width = result.interval_s()
    before = result.between(killed_at - 1, killed_at - width / 2).per_pod.get(victim, 0)
    items.append(
        rules.item(
            "kill",
            kill_at_s - width <= killed_at <= kill_at_s + 1 and before > 0,
            f"{victim} deleted {killed_at:.1f} s in, after serving {before} calls in the "
            "second before",
            f"a deletion about {kill_at_s:g} s in, of a pod that was serving",
            "the deleted pod carried no calls just before: a client that sends every call "
            "to one pod (pick_first) never meets the kill. Keep a policy that uses every pod"
            if before == 0
            else "the deletion came late, which is not about your files: run the check again",
        )
    )
    stop = _how_it_stops(files / "deployment.yaml", config)
    if stop.killed_in_drain:
        hint = (
            f"SIGKILL came during the app's drain. The kubelet gives the pod "
            f"terminationGracePeriodSeconds ({stop.grace_s:g} s) in all, the preStop hook "
            f"included: after your {stop.hook_s:g} s sleep the app had {stop.term_s:g} s of "
            f"the {stop.drain_s:g} s it serves after SIGTERM (then it stops, and calls in "
            "flight get up to 5 s more). Make the grace period cover the sleep and the drain."
        )
    elif not stop.watches_health:
        hint = (
            "the client keeps sending calls to the draining pod until its GOAWAY, "
            f"{stop.drain_s:g} s after SIGTERM. A service_config with healthCheckConfig lets "
            "round_robin see the pod's NOT_SERVING at once (see the README)."
        )
    else:
        hint = (
            "look at the failed calls' status codes, and at what the README says happens "
            "between the deletion, SIGTERM and SIGKILL"
        )
    items.append(_no_failure(rules, hint, result))
    drained = checks.drain_time(result, victim, since_s=killed_at)
    within = limits["stop_within_s"]
    if stop.hook_s >= within:
        hint = (
            f"your preStop sleep holds SIGTERM back {stop.hook_s:g} s, and until SIGTERM the "
            "app does not know that it is going: it serves every call sent to it. A preStop "
            "sleep is for what follows the endpoints (kube-proxy, an ingress, a mesh); keep "
            "it short"
        )
    elif not stop.watches_health:
        hint = (
            "your client learns that the pod is going only from the GOAWAY that ends the "
            f"app's {stop.drain_s:g} s drain. healthCheckConfig makes it watch the pod's "
            "health, which turns NOT_SERVING the moment SIGTERM arrives"
        )
    else:
        hint = "look at when SIGTERM reaches the app: the README's timeline of a pod deletion"
    items.append(
        rules.item(
            "left",
            drained is not None and drained <= within,
            "it still served at the end of the run"
            if drained is None
            else f"its last call {drained:.1f} s after the deletion",
            f"its last call within {within:g} s of the deletion",
            hint,
        )
    )
    after = result.between(killed_at)
    served_after = after.ok - after.per_pod.get(victim, 0)
    items.append(
        rules.item(
            "after",
            served_after >= limits["min_calls_after"],
            f"{served_after} calls served by the other pods from {killed_at:.1f} s on",
            f"at least {limits['min_calls_after']:g} calls",
            "few calls were served after the deletion: look at the failed calls' status "
            "codes, and at print(lab.pods())",
        )
    )
    cluster.wait_ready(DEPLOYMENT)  # the replacement pod, so a second check starts from 3


# --- lab 04: a GRPCRoute to v2 ----------------------------------------------------------------

GATEWAY_HOST = "grpc.example.com"  # the Gateway's listener hostname (ingress/gateway.yaml)


def gateway_tls(cluster: Cluster) -> TlsBundle:
    """A fresh certificate for the Gateway's host, applied as the Secret grpc-tls it reads.

    Secrets hold private keys, so none is in the repository: like notebook 06, the lab
    makes one, as `kubectl create secret tls grpc-tls --cert=... --key=...` would.
    """
    from grpclab.tls import issue_certificate

    tls = issue_certificate([GATEWAY_HOST])
    cluster.apply(tls.secret("grpc-tls"))
    return tls


def gateway_spec(cluster: Cluster, tls: TlsBundle, method: str, **load: Any) -> LoadSpec:
    """Calls of `method` through the Gateway, over TLS, to the host its route serves."""
    try:
        target = cluster.target(DEPLOYMENT, via="gateway")
    except ValueError:  # a route that names only v2 still reaches the same Gateway
        target = cluster.target(V2_DEPLOYMENT, via="gateway")
    return LoadSpec(
        target,
        method=method,
        tls_ca_file=str(tls.ca_file),
        tls_server_name=GATEWAY_HOST,
        **load,
    )


def _run_lab04(cluster: Cluster, files: Path, rules: LabRules, items: list[CheckItem]) -> None:
    limits = rules.limits
    wanted = {DEPLOYMENT: limits["v1_pods"], V2_DEPLOYMENT: limits["v2_pods"]}
    ready = _ready(cluster, rules, "pods", wanted, items)
    tls = gateway_tls(cluster)
    runs: dict[str, LoadResult] = {}
    try:
        for method in ("SayHello", "GetUser"):
            spec = gateway_spec(cluster, tls, method, rpcs=int(limits["calls"]))
            runs[method] = cluster.run_load(spec)
    except ValueError as error:
        items.append(
            rules.item(
                "attach",
                False,
                str(error),
                "the route on the Gateway grpc-gateway, for the host grpc.example.com",
                "parentRefs and hostnames stay as shipped; every backendRef names "
                "grpc-server or grpc-server-v2 on port 50051",
            )
        )
        raise _Stop from None
    items.append(rules.item("attach", True, "calls reach the Gateway's route", "", ""))
    versions = {
        "SayHello": ("say_hello", "v1", DEPLOYMENT),
        "GetUser": ("get_user", "v2", V2_DEPLOYMENT),
    }
    for method, (key, version, mine) in versions.items():
        result = runs[method]
        pods = set(ready[mine])
        elsewhere = sum(count for pod, count in result.per_pod.items() if pod not in pods)
        if result.failed:
            hint = (
                f"{method} calls failed ({', '.join(result.errors)}): a call that no rule "
                "matches gets UNIMPLEMENTED; does every method still have a rule with a "
                "backendRef to an existing Service and port?"
            )
        elif method == "GetUser":
            hint = (
                "GetUser still reaches version 1. Add a rule whose match names the service "
                "and the method, with a backendRef to the v2 Service."
            )
        else:
            hint = (
                "SayHello reaches version 2: a rule that matches the whole service sends every "
                "method there. Match GetUser by its method name alone."
            )
        items.append(
            rules.item(
                key,
                result.failed == 0 and elsewhere == 0 and result.ok == limits["calls"],
                f"{result.ok - elsewhere} of {result.total} calls on {version} ({mine}), "
                f"{elsewhere} elsewhere, {result.failed} failed",
                f"{limits['calls']:g} of {limits['calls']:g} calls on {version}, none failed",
                hint,
            )
        )


# --- lab 05: mesh retries and outlier detection ---------------------------------------------

MESH_HOST = "grpc-server.production.svc.cluster.local:50051"
ISTIO_MANIFESTS = MANIFESTS / "istio"


def _mesh_rules(files: Path) -> tuple[str, Mapping[str, Any]]:
    """The learner's retryOn and outlierDetection, for lab 05's hints."""
    retry_on, outlier = "", {}
    for obj in _objects(files / "virtualservice.yaml"):
        for route in (obj.get("spec") or {}).get("http") or []:
            retry_on = str((route.get("retries") or {}).get("retryOn", retry_on))
    for obj in _objects(files / "destinationrule.yaml"):
        outlier = ((obj.get("spec") or {}).get("trafficPolicy") or {}).get("outlierDetection", {})
    return retry_on, outlier or {}


def _fresh_outlier_state(cluster: Cluster, files: Path) -> None:
    """Delete and re-apply the learner's DestinationRule, as drills.use_mesh_rules does: the
    sidecar rebuilds its cluster, so no ejection from a drill before carries into the next
    (an ejected pod counts against maxEjectionPercent)."""
    cluster.delete(files / "destinationrule.yaml")
    cluster.apply(files / "destinationrule.yaml")


def _run_lab05(cluster: Cluster, files: Path, rules: LabRules, items: list[CheckItem]) -> None:
    limits = rules.limits
    pods = _shipped_pods(cluster, rules, items)
    retry_on, outlier = _mesh_rules(files)
    spec = LoadSpec(
        cluster.target(DEPLOYMENT, via="mesh"),
        rpcs=None,
        duration_s=limits["run_s"],
        concurrency=int(limits["concurrency"]),
        interval_s=0.1,
    )
    # Drill 1: a crash. Calls in flight on the pod end with a reset, and new connections to
    # it are refused until it leaves the endpoints.
    for pod in pods:
        cluster.set_fault(pod, added_latency_ms=limits["latency_ms"])
    victim = least_restarted(cluster, pods)
    _fresh_outlier_state(cluster, files)
    try:
        crash = drill(cluster, spec, limits["crash_at_s"], lambda: cluster.crash_pod(victim))
    finally:
        for pod in cluster.wait_ready(DEPLOYMENT, timeout=90):
            cluster.set_fault(pod.name, added_latency_ms=0)
    in_force = sidecar_retry_on(cluster, MESH_HOST)
    missing = [c for c in ("connect-failure", "reset") if c not in in_force.split(",")]
    if missing:
        hint = (
            f"the sidecar retries on {in_force}, which leaves out {_words(missing)}: what a "
            "crashed pod leaves behind (calls in flight reset, new connections refused). "
            "A VirtualService's retryOn replaces Istio's default conditions, it does not "
            "add to them"
        )
    else:
        hint = (
            f"the sidecar retries on {in_force}; look at the status codes of the calls that "
            "failed, and at attempts and perTryTimeout"
        )
    items.append(
        rules.item(
            "crash",
            crash.result.failed == 0,
            f"{victim} crashed {crash.action_started_s:.1f} s in; {_failed_calls(crash.result)}"
            f"; the sidecar retried {crash.result.proxy_counters.get('retries', 0)} calls",
            "0 failed calls",
            hint,
        )
    )
    # Drill 2: a pod that is Ready but answers every call with UNAVAILABLE. Its calls take no
    # time, so the run is paced: unpaced, 16 workers would spend both cores on the sidecar.
    pods = [pod.name for pod in cluster.wait_ready(DEPLOYMENT, timeout=90)]
    _fresh_outlier_state(cluster, files)
    broken = pods[0]
    cluster.set_fault(broken, error_rate=1.0, error_code=14)  # 14: UNAVAILABLE
    try:
        result = cluster.run_load(dataclasses.replace(spec, rate=limits["broken_rate"]))
    finally:
        cluster.set_fault(broken)
    counters = result.proxy_counters
    retries, ejections = counters.get("retries", 0), counters.get("ejections", 0)
    items.append(
        rules.item(
            "broken",
            result.failed == 0,
            f"{broken} answered UNAVAILABLE; {_failed_calls(result)}",
            "0 failed calls",
            "the pod answers, with UNAVAILABLE: which of the sidecar's retry conditions "
            f"matches that? It retries on {in_force}",
        )
    )
    if not outlier.get("consecutiveGatewayErrors") and not outlier.get("consecutive5xxErrors"):
        hint = "the DestinationRule has no outlier detection that counts failed calls"
    elif ejections == 0:
        hint = (
            "outlier detection never ejected the pod in this run: how many failures in a "
            "row does it wait for, and how often does it look (interval)? Envoy counts a "
            "gRPC UNAVAILABLE as a gateway error (consecutiveGatewayErrors)"
        )
    else:
        hint = (
            "the pod was ejected, yet many calls were retried: an ejection lasts "
            "baseEjectionTime, and interval is how soon after the failures it happens"
        )
    items.append(
        rules.item(
            "ejected",
            ejections >= 1 and retries <= limits["max_retries"],
            f"{ejections} ejections and {retries} retries by the client's sidecar",
            f"1 ejection or more, and at most {limits['max_retries']:g} retries",
            hint,
        )
    )


# --- lab 06: the evenness query --------------------------------------------------------------

QUERY_FILE = "evenness.promql"
HEADLESS_SERVICE = "grpc-server-headless"


def _fresh_pods(cluster: Cluster, rules: LabRules, items: list[CheckItem]) -> dict[str, list[str]]:
    """New pods, as after a rollout: a pod that has served no call has no series yet.

    grpc-server-v2's pods run beside them in the namespace, as another app's pods would at
    work: Prometheus scrapes them too, so a query must pick grpc-server's pods by their label.
    """
    old = {pod.name for pod in cluster.pods({"app": DEPLOYMENT})}
    for name in old:
        cluster.delete_pod(name)
    wanted = {DEPLOYMENT: rules.limits["pods"], V2_DEPLOYMENT: rules.limits["neighbour_pods"]}
    pods = _ready(cluster, rules, "pods", wanted, items)
    if old & set(pods[DEPLOYMENT]):
        raise RuntimeError(
            f"pods {sorted(old & set(pods[DEPLOYMENT]))} were deleted but are still ready"
        )
    return pods


def _run_lab06(cluster: Cluster, files: Path, rules: LabRules, items: list[CheckItem]) -> None:
    from grpclab.measure import monitoring

    limits = rules.limits
    query = read_query(files / QUERY_FILE)  # the rules have read it already
    cluster.prometheus_url()  # starts the sandbox's Prometheus before the pods it scrapes
    ready = _fresh_pods(cluster, rules, items)
    pods, scraped = ready[DEPLOYMENT], [pod for group in ready.values() for pod in group]
    monitoring.wait_for_scrape(cluster, scraped)
    # Paced: Prometheus's rates and the client's counts agree at any rate.
    load = {"rpcs": None, "duration_s": limits["run_s"], "concurrency": 4, "rate": limits["rate"]}
    runs = {
        # pick_first through the ClusterIP: one connection, so one pod gets every call.
        "uneven": LoadSpec(cluster.target(DEPLOYMENT, via="clusterip"), **load),
        "even": LoadSpec(cluster.target(HEADLESS_SERVICE), lb_policy="round_robin", **load),
    }
    tolerance = limits["tolerance"]
    for key, spec in runs.items():
        result = cluster.run_load(spec)
        end = time.time()
        monitoring.wait_for_scrape(cluster, scraped, after=end)
        truth = checks.evenness(result, pods)
        counts = ", ".join(str(result.per_pod.get(pod, 0)) for pod in pods)
        try:
            samples = cluster.prometheus_query(query, at=end)
        except monitoring.PrometheusError as error:
            items.append(
                rules.item(
                    key,
                    False,
                    str(error),
                    f"one number within {tolerance:g} of {truth:.2f}",
                    "Prometheus says what it could not parse or evaluate; try the query in "
                    "lab.prometheus_query(...) first",
                )
            )
            continue
        value = samples[0].value if len(samples) == 1 else math.nan
        shown = (
            f"{value:.2f}"
            if len(samples) == 1
            else f"{len(samples)} numbers ({', '.join(f'{s.value:.2f}' for s in samples[:4])})"
        )
        if len(samples) != 1:
            hint = (
                "the query gives one number per group: aggregate the per-pod rates into one "
                "number (stddev(...) / avg(...) of a vector with one sample per pod)"
            )
        elif key == "uneven" and abs(value) < tolerance:
            hint = (
                "your query calls this run even, but one pod served every call: a pod that "
                "has never served a call has no grpc_server_handled_total series, so stddev "
                "and avg never see it. Give every scraped pod a 0 (the `up` series has one "
                "per pod) and combine the two with `or on (pod)`"
            )
        else:
            hint = (
                "the answer is the stddev over the mean of the per-pod call rates of "
                "mypackage.MyService, every pod of grpc-server counted once and no other "
                'pod (app="grpc-server"; grpc-server-v2 runs in the same namespace): sum the '
                "series of each pod (sum by (pod)), and leave out the health checks the "
                "kubelet sends"
            )
        items.append(
            rules.item(
                key,
                len(samples) == 1 and abs(value - truth) <= tolerance,
                f"your query gives {shown}; the client counted {counts} calls per pod, "
                f"evenness {truth:.2f}",
                f"one number within {tolerance:g} of {truth:.2f}",
                hint,
            )
        )


# --- the registry ----------------------------------------------------------------------------

_BASE = MANIFESTS / "base"
LABS: dict[str, Lab] = {
    lab.number: lab
    for lab in (
        Lab(
            "01",
            "01-fix-the-imbalance",
            "fix the imbalance",
            (
                _BASE / "00-namespace.yaml",
                _BASE / "deployment.yaml",
                _BASE / "service-clusterip.yaml",
            ),
            _run_lab01,
        ),
        Lab(
            "02",
            "02-new-pods-get-traffic",
            "new pods get traffic",
            (_BASE / "00-namespace.yaml", MANIFESTS / "headless" / "service-headless.yaml"),
            _run_lab02,
        ),
        Lab(
            "03",
            "03-survive-a-pod-kill",
            "survive a pod kill",
            (_BASE / "00-namespace.yaml", MANIFESTS / "headless" / "service-headless.yaml"),
            _run_lab03,
        ),
        Lab(
            "04",
            "04-grpcroute-v2",
            "route GetUser to v2 with a GRPCRoute",
            (
                _BASE / "00-namespace.yaml",
                _BASE / "deployment.yaml",
                _BASE / "service-clusterip.yaml",
                MANIFESTS / "ingress" / "deployment-v2.yaml",
                MANIFESTS / "ingress" / "service-v2.yaml",
                MANIFESTS / "ingress" / "gateway.yaml",
            ),
            _run_lab04,
            deployments=(DEPLOYMENT, V2_DEPLOYMENT),
            controllers=("envoy-gateway",),
        ),
        Lab(
            "05",
            "05-mesh-retries",
            "survive a crash and a broken pod through the mesh",
            (
                ISTIO_MANIFESTS / "namespace.yaml",
                _BASE / "deployment.yaml",
                _BASE / "service-clusterip.yaml",
            ),
            _run_lab05,
            controllers=("istio",),
        ),
        Lab(
            "06",
            "06-promql",
            "write the evenness query",
            (
                _BASE / "00-namespace.yaml",
                _BASE / "deployment.yaml",
                _BASE / "service-clusterip.yaml",
                MANIFESTS / "headless" / "service-headless.yaml",
                MANIFESTS / "ingress" / "deployment-v2.yaml",
            ),
            _run_lab06,
            deployments=(DEPLOYMENT, V2_DEPLOYMENT),
        ),
    )
}


def lab_info(lab: str | int) -> Lab:
    """The lab numbered `lab` ("01", "1", 1 or its folder name)."""
    key = str(lab).split("-")[0].zfill(2)
    if key not in LABS:
        raise KeyError(f"no lab {lab!r}; the labs are {', '.join(LABS)}")
    return LABS[key]


def start_lab(lab: str | int, lab_dir: str | Path, cluster: Cluster) -> list[str]:
    """Copy starter/ to work/ (unless work/ exists), apply the lab's files, wait for its pods."""
    info = lab_info(lab)
    lab_dir = Path(lab_dir)
    work = lab_dir / "work"
    lines = []
    if work.exists():
        lines.append(f"{work}: kept (your edits; delete the folder to start over)")
    else:
        shutil.copytree(lab_dir / "starter", work)
        lines.append(f"{work}: copied from starter/ (edit these files)")
    lines += apply_lab_files(info.number, lab_dir, cluster)
    for deployment in info.deployments:
        ready = cluster.wait_ready(deployment)
        lines.append(f"deployment/{deployment}: {len(ready)} pods ready")
    return lines


def apply_lab_files(
    lab: str | int, lab_dir: str | Path, cluster: Cluster, files: str = "work"
) -> list[str]:
    """Apply the lab's given manifests, then the learner's from `lab_dir/files`."""
    from grpclab.cluster.controllers import install_addon

    info = lab_info(lab)
    folder = Path(lab_dir) / files
    lines = [install_addon(cluster, name) for name in info.controllers]
    return lines + apply_files(cluster, [*info.given, *(folder / name for name in info.manifests)])


def _grade(info: Lab, cluster: Cluster, lab_dir: Path, files: str, items: list[CheckItem]) -> None:
    items += check_rules(info.number, lab_dir / files)
    if not all(item.passed for item in items):
        raise _Stop  # a file that breaks the rules never reaches the cluster
    try:
        lines = apply_lab_files(info.number, lab_dir, cluster, files)
    except Exception as error:  # any backend's refusal (ManifestError, KubeError...) is a check
        items.append(
            CheckItem("your files apply", False, str(error), "every object applies", _FIX_FILE_HINT)
        )
        raise _Stop from None
    changed = [line for line in lines if line.endswith((" created", " configured", " replaced"))]
    items.append(CheckItem("your files apply", True, "; ".join(changed) or "nothing changed"))
    try:
        for deployment in info.deployments:
            cluster.wait_ready(deployment, timeout=90)
    except TimeoutError as error:
        items.append(
            CheckItem(
                "the rollout completes",
                False,
                str(error).splitlines()[0],
                "every pod Ready within 90 s",
                _NOT_READY_HINT,
            )
        )
        raise _Stop from None
    info.run(cluster, lab_dir / files, info.rules, items)


def check_lab(
    lab: str | int, lab_dir: str | Path, cluster: Cluster, files: str = "work", quiet: bool = False
) -> LabResult:
    """Replay `lab_dir/files` (the learner's work/ by default) on `cluster` and grade it.

    The lab's rules come first: a file that changes more than they allow fails here, and
    nothing is applied. Says one line per check (a grpclab.notes note), with what to do
    under each failure, unless `quiet`.
    """
    info = lab_info(lab)
    folder = Path(lab_dir) / files
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} does not exist: run the lab notebook's first cell, which makes work/"
        )
    result = LabResult(info.number, info.title)
    try:
        _grade(info, cluster, Path(lab_dir), files, result.items)
    except _Stop:
        pass
    except Exception as error:  # the cluster's or the check's trouble, not the learner's files
        result.items.append(
            CheckItem(
                "the check ran to the end",
                False,
                f"{type(error).__name__}: {error}",
                "the check to run to its end",
                "this is not about your files: run the check again; if it happens again, "
                "restart the kernel and run the notebook from the top",
            )
        )
    if not quiet:
        say(result.report())
    return result
