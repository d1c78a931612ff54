"""``cluster.yaml``: Ray's cluster-launcher config, checked and read.

Validation runs Ray's own schema check (the one ``ray up`` runs) and then
mixfleet's: every GPU node type names a known accelerator type, so that
GPU-typed placement (``accelerator_type=...``) can find it. Schema errors
are turned into one line with the key's path and a did-you-mean.

A *rehearsal* file (``provider: {type: fake_multinode}``, see
``examples/cluster/local.yaml``) is checked further: it must be complete
(Ray ships no defaults for that provider), its ``metadata.mixfleet.rehearses``
file must declare the same node types and resources (CPUs may be scaled
down), and each entry of ``metadata.mixfleet.deployments`` must name a node
type whose resources can hold it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixfleet.errors import ConfigError, did_you_mean
from mixfleet.platform.accelerators import ACCELERATORS, RESOURCE_PREFIX, accelerator_of
from mixfleet.platform.config import read_config_file

DEFAULT_CLUSTER_FILE = "cluster.yaml"
REHEARSAL_PROVIDER = "fake_multinode"
# Keys `ray up` fills from a provider's defaults file; the rehearsal provider has none,
# and Ray's autoscaler reads them all.
COMPLETE_KEYS = ("max_workers", "upscaling_speed", "idle_timeout_minutes", "auth", "file_mounts",
                 "cluster_synced_files", "file_mounts_sync_continuously", "rsync_exclude", "rsync_filter",
                 "initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                 "head_start_ray_commands", "worker_start_ray_commands")


@dataclass(frozen=True)
class NodeType:
    """One entry of ``available_node_types``."""

    name: str
    resources: dict[str, float] = field(default_factory=dict)
    min_workers: int = 0
    max_workers: int = 0
    is_head: bool = False

    @property
    def accelerator_type(self) -> str | None:
        return accelerator_of(self.resources)

    @property
    def cpus(self) -> float:
        return float(self.resources.get("CPU", 0))

    @property
    def gpus(self) -> float:
        return float(self.resources.get("GPU", 0))


@dataclass(frozen=True)
class ClusterSpec:
    """The parts of a validated cluster.yaml that mixfleet uses."""

    path: str
    cluster_name: str
    head_node_type: str
    node_types: dict[str, NodeType]
    raw: dict[str, Any]

    @property
    def provider(self) -> str:
        return str(self.raw.get("provider", {}).get("type"))

    @property
    def is_rehearsal(self) -> bool:
        """Launched on this machine by Ray's fake multi-node provider (GPUs emulated)."""
        return self.provider == REHEARSAL_PROVIDER

    @property
    def head(self) -> NodeType:
        return self.node_types[self.head_node_type]

    def worker_types(self) -> list[NodeType]:
        return [t for t in self.node_types.values() if not t.is_head]


def _schema_error(exc: Any, source: str) -> ConfigError:
    """Turn a jsonschema ValidationError from Ray's schema into one line."""
    path = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
    if exc.validator == "additionalProperties":
        allowed = sorted((exc.schema or {}).get("properties", {}))
        extra = [k for k in (exc.instance or {}) if k not in allowed]
        key = extra[0] if extra else "?"
        where = f"{path}.{key}" if path != "(top level)" else key
        return ConfigError(
            f"unknown key '{where}' in {source}{did_you_mean(key, allowed)}",
            f"valid keys here: {', '.join(allowed)}" if allowed else "remove it",
        )
    if exc.validator == "required":
        return ConfigError(f"missing key in {source} at '{path}': {exc.message}", "add it")
    return ConfigError(f"invalid value at '{path}' in {source}: {exc.message}", "fix that value")


def _ray_validate(config: dict, source: str) -> None:
    import copy

    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    rehearsal = (config.get("provider") or {}).get("type") == REHEARSAL_PROVIDER
    try:
        # As `ray up` does: the raw file against Ray's schema first (so a typo
        # is reported as the user wrote it), then with the provider's defaults.
        validate_config({"cluster_synced_files": [], **copy.deepcopy(config)})
        if not rehearsal:
            validate_config(prepare_config(copy.deepcopy(config)))
    except jsonschema.ValidationError as exc:
        raise _schema_error(exc, source) from None
    except (ValueError, KeyError, RuntimeError) as exc:  # Ray's semantic checks
        raise ConfigError(f"{source}: {str(exc).splitlines()[0]}", "fix the node types") from None


def validate_cluster_config(config: Any, source: str = DEFAULT_CLUSTER_FILE) -> ClusterSpec:
    """Validate a parsed cluster config and return its :class:`ClusterSpec`."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source} must be a mapping of cluster settings", "see cluster.yaml in the repo")
    _ray_validate(config, source)
    if (config.get("provider") or {}).get("type") == REHEARSAL_PROVIDER:
        _check_complete(config, source)
    types_raw = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    if not types_raw or head not in types_raw:
        raise ConfigError(
            f"{source}: head_node_type '{head}' is not one of available_node_types"
            f"{did_you_mean(str(head), types_raw)}",
            f"node types: {', '.join(types_raw) or '(none)'}",
        )
    node_types: dict[str, NodeType] = {}
    for name, body in types_raw.items():
        resources = dict(body.get("resources") or {})
        nt = NodeType(
            name=name,
            resources=resources,
            min_workers=int(body.get("min_workers", 0)),
            max_workers=int(body.get("max_workers", 0)),
            is_head=name == head,
        )
        accel = nt.accelerator_type
        if accel is not None and accel not in ACCELERATORS:
            raise ConfigError(
                f"unknown accelerator type '{accel}' in node type '{name}' of {source}"
                f"{did_you_mean(accel, ACCELERATORS)}",
                f"known types: {', '.join(ACCELERATORS)}",
            )
        if nt.gpus > 0 and accel is None:
            raise ConfigError(
                f"node type '{name}' in {source} declares {nt.gpus:g} GPU(s) but no accelerator type",
                f"add '{RESOURCE_PREFIX}<TYPE>: 1' to its resources (known: {', '.join(ACCELERATORS)})",
            )
        if nt.min_workers > nt.max_workers and not nt.is_head:
            raise ConfigError(
                f"node type '{name}' in {source}: min_workers {nt.min_workers} > max_workers {nt.max_workers}",
                "raise max_workers or lower min_workers",
            )
        node_types[name] = nt
    return ClusterSpec(
        path=source,
        cluster_name=str(config.get("cluster_name", "mixfleet")),
        head_node_type=head,
        node_types=node_types,
        raw=config,
    )


def _check_complete(config: dict, source: str) -> None:
    for key in COMPLETE_KEYS:
        if key not in config:
            raise ConfigError(f"missing key '{key}' in {source}: Ray ships no defaults for the "
                              f"{REHEARSAL_PROVIDER} provider", f"add '{key}' (see examples/cluster/local.yaml)")
    for name, body in config["available_node_types"].items():
        for key in ("min_workers", "max_workers"):
            if key not in body:
                raise ConfigError(f"missing key 'available_node_types.{name}.{key}' in {source}",
                                  f"add '{key}: 0' or more (no defaults for {REHEARSAL_PROVIDER})")


def load_cluster_config(path: str | Path = DEFAULT_CLUSTER_FILE) -> ClusterSpec:
    """Read and validate a cluster.yaml file (and, for a rehearsal file, what it rehearses)."""
    from mixfleet.platform.rehearsal import check_deployments, check_rehearses

    config = read_config_file(path, what="cluster config")
    spec = validate_cluster_config(config, source=f"'{path}'")
    check_deployments(spec)
    if spec.is_rehearsal:
        check_rehearses(spec, Path(path))
    return spec
