"""Checks that keep a rehearsal cluster file faithful, and what it may host.

A cluster file may carry mixfleet's own section under Ray's free-form
``metadata`` key (Ray does not interpret it)::

    metadata:
      mixfleet:
        rehearses: ../../cluster.yaml      # rehearsal files only, relative to this file
        deployments:                       # what runs on the cluster, and where
          routing-t4: {node_type: gpu_t4, ray_actor_options: {num_gpus: 1, accelerator_type: T4}}

``rehearses`` names the real cluster file: both must declare the same node
types (same names, same head, same resource keys, the same GPU counts and
accelerator types; the rehearsal may scale CPUs down). Each deployment must
name a node type that exists and whose resources can hold one replica of
it. Every failure names the key path and what to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixfleet.errors import ConfigError, did_you_mean
from mixfleet.platform.accelerators import RESOURCE_PREFIX
from mixfleet.platform.cluster_config import ClusterSpec, NodeType

SECTION = "metadata.mixfleet"
# Sizing keys a rehearsal may add for one machine (Ray's defaults take 30% of RAM per node).
LOCAL_SIZING = ("object_store_memory", "memory")
ACTOR_OPTIONS = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}


def mixfleet_section(spec: ClusterSpec) -> dict[str, Any]:
    section = (spec.raw.get("metadata") or {}).get("mixfleet") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"'{SECTION}' in {spec.path} must be a mapping", "see examples/cluster/local.yaml")
    unknown = [k for k in section if k not in ("rehearses", "deployments")]
    if unknown:
        raise ConfigError(f"unknown key '{SECTION}.{unknown[0]}' in {spec.path}"
                          f"{did_you_mean(unknown[0], ['rehearses', 'deployments'])}",
                          "valid keys here: deployments, rehearses")
    return section


def _types_holding(spec: ClusterSpec, demand: dict[str, float]) -> list[str]:
    return [n for n, t in spec.node_types.items()
            if all(t.resources.get(k, 0) >= v for k, v in demand.items())]


def _demand(where: str, options: Any, spec: ClusterSpec) -> dict[str, float]:
    """The resources one replica asks Ray for, from ``ray_actor_options``."""
    if not isinstance(options, dict):
        raise ConfigError(f"'{where}' in {spec.path} must be a mapping", "e.g. {num_gpus: 1, accelerator_type: T4}")
    demand: dict[str, float] = {}
    for key, value in options.items():
        if key == "accelerator_type":
            demand[RESOURCE_PREFIX + str(value)] = 0.001
        elif key == "resources" and isinstance(value, dict):
            demand.update({str(k): v for k, v in value.items()})
        elif key in ACTOR_OPTIONS:
            demand[ACTOR_OPTIONS[key]] = value
        else:
            valid = [*ACTOR_OPTIONS, "accelerator_type", "resources"]
            raise ConfigError(f"unknown key '{where}.{key}' in {spec.path}{did_you_mean(key, valid)}",
                              f"valid keys here: {', '.join(valid)}")
    for key, value in demand.items():
        if not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"invalid value {value!r} for '{where}' resource '{key}' in {spec.path}",
                              "use a number >= 0")
    return demand


def check_deployments(spec: ClusterSpec) -> None:
    """Every ``metadata.mixfleet.deployments`` entry fits the node type it names."""
    deployments = mixfleet_section(spec).get("deployments") or {}
    if not isinstance(deployments, dict):
        raise ConfigError(f"'{SECTION}.deployments' in {spec.path} must map names to "
                          "{node_type, ray_actor_options}", "see examples/cluster/local.yaml")
    for name, body in deployments.items():
        where = f"{SECTION}.deployments.{name}"
        body = body if isinstance(body, dict) else {}
        node_type = body.get("node_type")
        if node_type not in spec.node_types:
            raise ConfigError(f"unknown node type '{node_type}' at '{where}.node_type' in {spec.path}"
                              f"{did_you_mean(str(node_type), spec.node_types)}",
                              f"node types: {', '.join(spec.node_types)}")
        demand = _demand(f"{where}.ray_actor_options", body.get("ray_actor_options") or {}, spec)
        nt = spec.node_types[node_type]
        for key, value in demand.items():
            have = nt.resources.get(key, 0)
            if have < value:
                fits = _types_holding(spec, demand)
                option = next((k for k, r in ACTOR_OPTIONS.items() if r == key), None)
                path = (f"{where}.ray_actor_options.accelerator_type" if key.startswith(RESOURCE_PREFIX)
                        else f"{where}.ray_actor_options.{option or 'resources.' + key}")
                asked = key[len(RESOURCE_PREFIX):] if key.startswith(RESOURCE_PREFIX) else f"{value:g} {key}"
                offers = (f"accelerator_type '{nt.accelerator_type}'" if key.startswith(RESOURCE_PREFIX)
                          else f"{have:g} {key}")
                raise ConfigError(
                    f"'{path}' in {spec.path} asks for {asked} but node type '{node_type}' offers {offers}",
                    f"use node type {' or '.join(repr(f) for f in fits)}" if fits
                    else "no node type can hold it: lower the request or add a larger node type")


def _compare_type(name: str, real: NodeType, rehearsal: NodeType, spec: ClusterSpec, real_path: str) -> None:
    where = f"available_node_types.{name}"
    mine_keys = {k for k in rehearsal.resources if k not in LOCAL_SIZING or k in real.resources}
    if set(real.resources) != mine_keys:
        missing = sorted(set(real.resources) - mine_keys)
        extra = sorted(mine_keys - set(real.resources))
        what = f"lacks {', '.join(missing)}" if missing else f"adds {', '.join(extra)}"
        raise ConfigError(f"'{where}.resources' in {spec.path} {what} compared with {real_path}",
                          f"declare the same resources as {real_path}: {real.resources}")
    for key, value in real.resources.items():
        mine = rehearsal.resources[key]
        if key == "CPU" and 0 < mine <= value:
            continue  # CPUs are scaled down to fit one machine
        if mine != value:
            raise ConfigError(f"'{where}.resources.{key}' is {mine:g} in {spec.path} but {value:g} in {real_path}",
                              f"set it to {value:g}" + (" (or fewer CPUs, at least 1)" if key == "CPU" else ""))
    if not real.is_head and real.max_workers > 0 and rehearsal.max_workers < 1:
        raise ConfigError(f"'{where}.max_workers' is 0 in {spec.path}, so the autoscaler could never launch it",
                          "set max_workers: 1 or more")


def check_rehearses(spec: ClusterSpec, path: Path) -> ClusterSpec | None:
    """The real cluster file named by ``metadata.mixfleet.rehearses`` has the same node types."""
    from mixfleet.platform.cluster_config import load_cluster_config

    target = mixfleet_section(spec).get("rehearses")
    if target is None:
        return None
    real_file = (path.parent / str(target))
    if not real_file.is_file():
        raise ConfigError(f"'{SECTION}.rehearses' in {spec.path} names '{target}', which does not exist "
                          f"(resolved to '{real_file}')", "give the real cluster file, relative to this file")
    real = load_cluster_config(real_file)
    if real.is_rehearsal:
        raise ConfigError(f"'{SECTION}.rehearses' in {spec.path} names another rehearsal file '{target}'",
                          "name the real (cloud) cluster file")
    real_path = f"'{target}'"
    for name in real.node_types:
        if name not in spec.node_types:
            raise ConfigError(f"node type '{name}' of {real_path} is missing from 'available_node_types' "
                              f"in {spec.path}", f"add it with the same resources: {real.node_types[name].resources}")
    for name in spec.node_types:
        if name not in real.node_types:
            raise ConfigError(f"node type 'available_node_types.{name}' in {spec.path} is not in {real_path}"
                              f"{did_you_mean(name, real.node_types)}",
                              f"node types there: {', '.join(real.node_types)}")
    if spec.head_node_type != real.head_node_type:
        raise ConfigError(f"'head_node_type' is '{spec.head_node_type}' in {spec.path} but "
                          f"'{real.head_node_type}' in {real_path}", f"set it to '{real.head_node_type}'")
    for name, real_type in real.node_types.items():
        _compare_type(name, real_type, spec.node_types[name], spec, real_path)
    return real
