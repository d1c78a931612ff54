"""Unit tests of the shared config loader (no Ray)."""

from __future__ import annotations

import pytest

from mixfleet.errors import ConfigError, unknown_name
from mixfleet.platform.config import StrictModel, load_model


class Pool(StrictModel):
    gpu: str
    replicas: int = 1


class Fleet(StrictModel):
    name: str
    pools: list[Pool]
    max_workers: int = 4


def test_loads_a_valid_file(tmp_path):
    p = tmp_path / "fleet.yaml"
    p.write_text("name: f\npools:\n  - {gpu: T4, replicas: 2}\n")
    fleet = load_model(p, Fleet)
    assert fleet.pools[0].replicas == 2 and fleet.max_workers == 4


def test_unknown_top_level_key_suggests_the_right_one(tmp_path):
    p = tmp_path / "fleet.yaml"
    p.write_text("name: f\npools: []\nmax_worker: 3\n")
    with pytest.raises(ConfigError) as err:
        load_model(p, Fleet)
    msg = str(err.value)
    assert "max_worker" in msg and "did you mean 'max_workers'" in msg and str(p) in msg


def test_unknown_nested_key_names_its_path(tmp_path):
    p = tmp_path / "fleet.yaml"
    p.write_text("name: f\npools:\n  - {gpu: T4, replica: 2}\n")
    with pytest.raises(ConfigError, match=r"pools\.0\.replica.*did you mean 'replicas'"):
        load_model(p, Fleet)


def test_malformed_yaml_names_the_line(tmp_path):
    p = tmp_path / "fleet.yaml"
    p.write_text("name: f\npools: [\n  oops: : :\n")
    with pytest.raises(ConfigError, match=r"malformed YAML .* line \d+"):
        load_model(p, Fleet)


def test_missing_file_and_bad_value(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_model(tmp_path / "nope.yaml", Fleet)
    p = tmp_path / "fleet.yaml"
    p.write_text("name: f\npools:\n  - {gpu: T4, replicas: many}\n")
    with pytest.raises(ConfigError, match=r"'many' for 'pools\.0\.replicas'"):
        load_model(p, Fleet)


def test_yaml_cannot_construct_python_objects(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\npools: []\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_model(p, Fleet)


def test_registry_miss_lists_valid_names():
    err = unknown_name("policy", "pow3", ["pow2", "round_robin"])
    assert "did you mean 'pow2'" in str(err) and "round_robin" in str(err)


class Cloud(StrictModel):
    speed: float = 1.0


class Clouds(StrictModel):
    clouds: dict[str, Cloud]


def test_unknown_key_inside_a_dict_of_models_suggests_the_right_one(tmp_path):
    p = tmp_path / "clouds.yaml"
    p.write_text("clouds:\n  aws: {spead: 2}\n")
    with pytest.raises(ConfigError, match=r"clouds\.aws\.spead.*did you mean 'speed'"):
        load_model(p, Clouds)
