"""Typed config schemas derived from the components' signatures (lnl_lightning/schemas.py)."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
from typing import Literal

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from lnl_lightning.config import CONFIG_DIR, CONFIG_MODULE, build
from lnl_lightning.errors import ConfigError
from lnl_lightning.schemas import (
    BUILT_BY_THE_RUN,
    GROUPS,
    check_choice,
    locate,
    parameters,
    schema_of,
    targets_in,
)

LNL = "lnl_lightning.methods.lnl.LNLModule"
TARGET = "lnl_lightning.data.colored_mnist.ColoredMNISTDataModule"
OPTIONS = [
    f"{group}={path.relative_to(CONFIG_DIR / group).with_suffix('').as_posix()}"
    for group in GROUPS
    for path in sorted((CONFIG_DIR / group).glob("*.yaml"))
]


def compose_with(override: str) -> DictConfig:
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/nowhere", override])


def project_nodes(node: DictConfig, key: str):
    """Every node of ``node`` that builds one of the project's components, with its key."""
    target = node.get("_target_")
    if isinstance(target, str) and target.startswith("lnl_lightning."):
        yield key, node
    for name in node:
        child = node._get_node(name)
        if isinstance(child, DictConfig):
            yield from project_nodes(child, f"{key}.{name}")


@pytest.mark.parametrize("option", OPTIONS)
def test_every_component_a_group_builds_is_typed_by_its_own_schema(option):
    group = option.split("=")[0]
    nodes = list(project_nodes(compose_with(option)[group], group))
    assert nodes, f"{option} builds none of the project's components"
    for key, node in nodes:
        assert OmegaConf.get_type(node).__name__ == f"{locate(node._target_).__name__}Schema", key


@pytest.mark.parametrize("target", sorted(targets_in(CONFIG_DIR)))
def test_each_default_is_the_constructor_default(target):
    schema = OmegaConf.structured(schema_of(target))
    for name, (parameter, _) in parameters(locate(target)).items():
        if name in BUILT_BY_THE_RUN or parameter.default is parameter.empty:
            continue
        default = parameter.default
        assert schema[name] == (list(default) if isinstance(default, tuple) else default), name


def test_colored_mnist_tests_each_epoch_by_default_however_it_is_built():
    composed = compose_with("data=colored_mnist").data.test_each_epoch
    default = inspect.signature(locate(TARGET)).parameters["test_each_epoch"].default
    assert composed is default is True


def test_a_literal_becomes_an_enum_that_reads_and_prints_as_its_string():
    schema = OmegaConf.structured(schema_of(LNL))
    assert schema.step == "official" and f"{schema.step}" == "official"
    schema.step = "fused"
    assert schema.step == "fused" and OmegaConf.to_yaml(schema).count("step: fused") == 1
    with pytest.raises(Exception, match=r"expected one of \[official, fused\]"):
        schema.step = "fast"


def test_what_the_run_passes_in_is_never_a_setting():
    for target in (
        "lnl_lightning.methods.lnl.LNLModule",
        "lnl_lightning.methods.lff.LfFModule",
    ):
        keys = set(OmegaConf.structured(schema_of(target)))
        assert not keys & BUILT_BY_THE_RUN
        assert {"optimizer", "scheduler", "init_from", "warm_start_lr", "method"} <= keys


def test_check_choice_names_the_key_and_the_choices():
    assert check_choice("model.step", "fused", Literal["official", "fused"]) == "fused"
    with pytest.raises(ConfigError, match=r"model.step must be one of \('official', 'fused'\)"):
        check_choice("model.step", "fast", Literal["official", "fused"])


@pytest.mark.parametrize("key", ["grayscale", "download", "cache"])
def test_a_boolean_setting_given_a_number_is_refused_by_name(key, tmp_path):
    cfg = compose_with(f"data.{key}=2")
    cfg.data.data_dir = str(tmp_path)
    with pytest.raises(ConfigError, match=rf"data.{key} must be true or false, got 2"):
        build(cfg.data)


EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def test_a_composed_config_unpickles_in_a_fresh_process_with_its_types(tmp_path):
    """DDP spawn and submitit pickle the config: its derived schemas and enums must travel."""
    configs = {name: compose_with(f"experiment={name}") for name in EXPERIMENTS}
    path = tmp_path / "configs.pkl"
    path.write_bytes(pickle.dumps(configs))
    read_back = (
        "import pickle, sys\n"
        "from omegaconf import OmegaConf\n"
        "configs = pickle.load(open(sys.argv[1], 'rb'))\n"
        "for name, cfg in configs.items():\n"
        "    print(name, OmegaConf.get_type(cfg.model).__name__, "
        "type(cfg._get_node('test_ckpt').enum_type).__name__)\n"
        "    try:\n"
        "        cfg.test_ckpt = 'first'\n"
        "    except Exception as err:\n"
        "        print(name, 'refused', type(err).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", read_back, str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for name, cfg in configs.items():
        schema = OmegaConf.get_type(cfg.model).__name__
        assert f"{name} {schema} ChoiceType" in lines, done.stdout
        assert f"{name} refused ValidationError" in lines, done.stdout
    assert pickle.loads(path.read_bytes()) == configs
