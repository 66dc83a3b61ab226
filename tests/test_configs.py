"""Every config composes and instantiates; typos and bad values fail at start."""

from __future__ import annotations

import os
from importlib import resources

import pytest
import pytorch_lightning as pl
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from torch import nn

from lnl_lightning.config import CONFIG_MODULE, build
from lnl_lightning.data.colored_mnist import ColoredMNISTDataModule
from lnl_lightning.engine.loggers import build_loggers
from lnl_lightning.engine.module import DebiasModule
from lnl_lightning.errors import ConfigError
from lnl_lightning.train import build_model, build_networks

EXPERIMENTS = sorted(
    p.name.removesuffix(".yaml")
    for p in resources.files(CONFIG_MODULE).joinpath("experiment").iterdir()
    if p.name.endswith(".yaml")
)


def compose_train(overrides: list[str], tmp_path) -> object:
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides])


def test_experiments_are_found():
    assert set(EXPERIMENTS) == {
        "colored_mnist",
        "colored_mnist_baseline",
        "colored_mnist_blind_eye",
        "colored_mnist_gray",
        "colored_mnist_group_dro",
        "colored_mnist_lff",
        "dogs_cats",
        "dogs_cats_baseline",
        "imdb_face",
        "imdb_face_baseline",
        "imdb_face_age",
        "imdb_face_age_baseline",
        "image_csv",
    }


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment, tmp_path, experiment_overrides):
    cfg = compose_train([f"experiment={experiment}", *experiment_overrides(experiment)], tmp_path)
    datamodule = build(cfg.data)
    assert isinstance(datamodule, pl.LightningDataModule) and hasattr(datamodule, "bias_spec")
    nets = build_networks(cfg.net, datamodule.bias_spec)
    assert set(nets) == {"feature_extractor", "label_head", "bias_head"}
    assert all(isinstance(n, nn.Module) for n in nets.values())
    model = build_model(cfg, datamodule.bias_spec, datamodule.test_names)
    assert isinstance(model, DebiasModule)
    assert model.method == cfg.method == cfg.model.method
    callbacks = [build(node) for node in cfg.callbacks.values() if node is not None]
    trainer = build(cfg.trainer, callbacks=callbacks, logger=build_loggers(cfg))
    assert isinstance(trainer, pl.Trainer)
    named = experiment.removeprefix("colored_mnist").removeprefix("_")
    expected = named if named in {"blind_eye", "gray", "group_dro", "lff"} else None
    assert cfg.method == (expected or ("baseline" if experiment.endswith("baseline") else "lnl"))


def test_baseline_is_lnl_with_zero_weights(tmp_path):
    lnl = compose_train(["model=lnl"], tmp_path)
    baseline = compose_train(["model=baseline"], tmp_path)
    assert (lnl.model.lambda_, lnl.model.mu) == (0.01, 0.1)
    assert (baseline.model.lambda_, baseline.model.mu) == (0.0, 0.0)
    for key in ("optimizer", "scheduler", "_target_"):
        assert lnl.model[key] == baseline.model[key]


def test_strong_reversal_differs_from_the_official_lnl_in_mu_only(tmp_path):
    lnl = compose_train(["model=lnl"], tmp_path)
    strong = compose_train(["model=lnl_strong"], tmp_path)
    assert strong.model.mu == 1.0 and strong.method == "lnl"
    assert {k: v for k, v in strong.model.items() if k != "mu"} == {
        k: v for k, v in lnl.model.items() if k != "mu"
    }


def test_official_optimizer_defaults(tmp_path):
    cfg = compose_train(["experiment=colored_mnist"], tmp_path)
    assert cfg.model.optimizer.lr == 0.01 and cfg.model.optimizer.momentum == 0.9
    assert cfg.model.optimizer.weight_decay == 5e-4 and cfg.model.warm_start_lr == 0.001
    assert (cfg.model.scheduler.step_size, cfg.model.scheduler.gamma) == (40, 0.1)


@pytest.mark.parametrize("logger", ["csv", "tensorboard"])
def test_loggers_instantiate(logger, tmp_path):
    cfg = compose_train([f"logger={logger}"], tmp_path)
    assert len(build_loggers(cfg)) == 1


@pytest.mark.parametrize("key", ["model.lamda", "model.lamda_", "data.colour_var"])
def test_typo_in_a_key_fails_at_composition(key, tmp_path):
    with pytest.raises(ConfigCompositionException, match=f"Could not override '{key}'"):
        compose_train([f"{key}=0.1"], tmp_path)


def test_data_module_is_the_one_named(tmp_path, mnist_dir):
    cfg = compose_train(["data=colored_mnist", f"data.data_dir={mnist_dir}"], tmp_path)
    assert isinstance(build(cfg.data), ColoredMNISTDataModule)


def test_the_first_data_are_one_choice_after_any_experiment(tmp_path, mnist_dir):
    """``data=colored_mnist_rebias_colors`` wins over the experiment's data and sets the three
    keys of the repository's first Colored MNIST, the defaults being the paper-like data."""
    default = compose_train(["experiment=colored_mnist"], tmp_path)
    first = compose_train(
        ["experiment=colored_mnist", "data=colored_mnist_rebias_colors"], tmp_path
    )
    assert (default.data.palette, default.data.stroke, default.data.color_noise) == (
        "supplement",
        "binary",
        "resample",
    )
    assert (first.data.palette, first.data.stroke, first.data.color_noise) == (
        "rebias",
        "intensity",
        "clip",
    )
    assert first.model.method == "lnl" and first.data.source == "generate"
    dm = build(first.data, data_dir=str(mnist_dir))
    assert (dm.stroke, dm.color_noise) == ("intensity", "clip")


@pytest.mark.parametrize(
    ("experiment", "data_cls", "head"),
    [
        ("dogs_cats", "DogsCatsDataModule", "PixelColorHead"),
        ("imdb_face", "IMDBFaceDataModule", "CategoricalBiasHead"),
        ("image_csv", "ImageCSVDataModule", "CategoricalBiasHead"),
    ],
)
def test_real_image_experiments_use_resnet18_split(
    experiment, data_cls, head, tmp_path, experiment_overrides
):
    cfg = compose_train([f"experiment={experiment}", *experiment_overrides(experiment)], tmp_path)
    datamodule = build(cfg.data)
    assert type(datamodule).__name__ == data_cls
    nets = build_networks(cfg.net, datamodule.bias_spec)
    assert type(nets["bias_head"]).__name__ == head
    import torch

    features = nets["feature_extractor"](torch.zeros(2, 3, 64, 64))
    assert features.shape == (2, 128, 8, 8)
    assert nets["label_head"](features).shape == (2, datamodule.bias_spec.num_classes)


def test_pretrained_weights_unavailable_says_how_to_proceed(monkeypatch):
    from torchvision.models import ResNet18_Weights

    from lnl_lightning.errors import DataNotFoundError
    from lnl_lightning.nets.builders import resnet18_feature_extractor

    def offline(self, *args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(DataNotFoundError, match="net.pretrained=false"):
        resnet18_feature_extractor(pretrained=True)


def test_wandb_goes_offline_when_its_server_is_unreachable(tmp_path, monkeypatch):
    from lnl_lightning.engine import loggers

    monkeypatch.setenv("WANDB_MODE", "")  # records the original value, restored afterwards
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    assert not loggers.wandb_reachable(timeout=1.0)
    cfg = compose_train(["logger=wandb"], tmp_path)
    (logger,) = loggers.build_loggers(cfg)
    assert os.environ["WANDB_MODE"] == "offline"
    # the real W&B logger then writes an offline run into the run folder, without a server
    run = logger.experiment
    run.log({"probe": 1.0})
    run.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.parametrize(
    ("experiment", "net", "advice"),
    [
        ("image_csv", "colored_mnist", "use net=resnet18"),  # colour map head, per-image bias
        ("colored_mnist", "resnet18", "use net=colored_mnist"),  # linear head, colour-map bias
    ],
)
def test_a_bias_head_that_does_not_fit_the_data_is_refused_naming_nets_that_do(
    experiment, net, advice, tmp_path, experiment_overrides
):
    data = [o for o in experiment_overrides(experiment) if not o.startswith("net.")]
    nets = [f"net={net}", *(["net.pretrained=false"] if net.startswith("resnet") else [])]
    cfg = compose_train([f"experiment={experiment}", *data, *nets], tmp_path)
    datamodule = build(cfg.data)
    with pytest.raises(ConfigError, match=advice) as err:
        build_networks(cfg.net, datamodule.bias_spec)
    assert "net.bias_head" in str(err.value)


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("trainer.max_epochs=abc", "trainer.max_epochs", "Integer"),
        ("data.color_var=red", "data.color_var", "Float"),
        ("data.batch_size=1.5", "data.batch_size", "Integer"),
        ("seed=zero", "seed", "Integer"),
        ("print_config=maybe", "print_config", "not a valid bool"),
        ("perf.cuda_graph=maybe", "perf.cuda_graph", "not a valid bool"),
        ("model.warm_start_lr=abc", "model.warm_start_lr", "Float"),
        ("model.step=fast", "model.step", "expected one of [official, fused]"),
        ("test_ckpt=first", "test_ckpt", "expected one of [last, best]"),
        ("data.protocol=rho", "data.protocol", "expected one of [variance, rebias]"),
        ("net.feature_extractor.init=he", "net.feature_extractor.init", "expected one of"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_while_composing_with_its_key(
    override, key, expected, tmp_path
):
    with pytest.raises(ConfigCompositionException) as err:
        compose_train([override], tmp_path)
    text = f"{err.value} {err.value.__cause__}"
    assert f"full_key: {key}" in text and expected in text


def test_keys_beyond_the_schema_can_still_be_added(tmp_path):
    cfg = compose_train(["+trainer.detect_anomaly=true", "trainer.max_epochs=3"], tmp_path)
    assert cfg.trainer.detect_anomaly is True and cfg.trainer.max_epochs == 3


@pytest.mark.parametrize("model", ["lnl", "baseline", "blind_eye", "group_dro", "lff"])
def test_each_model_yaml_names_its_method(model, tmp_path):
    cfg = compose_train([f"model={model}"], tmp_path)
    assert cfg.method == cfg.model.method == model
    # every method trains with the same recipe
    assert cfg.model.optimizer == compose_train(["model=lnl"], tmp_path).model.optimizer


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["perf=fast", "trainer.precision=16-mixed"], "perf.cuda_graph=true cannot train under"),
        (["model.scheduler.step_size=0"], "model.scheduler.step_size must be a whole number"),
        (["model.scheduler.gamma=nan"], r"model.scheduler.gamma must be a finite number > 0"),
        (["model.optimizer.lr=0"], r"model.optimizer.lr must be a positive number, got 0"),
        (["model.optimizer.lr=-1"], r"model.optimizer.lr must be a positive number, got -1"),
        (["model.optimizer.lr=fast"], r"model.optimizer.lr must be a positive number, got 'fast'"),
        (["model.optimizer.momentum=2"], r"model.optimizer.momentum must be in \[0, 1\), got 2"),
        (["model.optimizer.momentum=-0.1"], r"model.optimizer.momentum must be in \[0, 1\)"),
        (["model.optimizer.weight_decay=-1"], "model.optimizer.weight_decay must be a number >= 0"),
        (["model.warm_start_lr=-1"], "model.warm_start_lr must be a positive number, got -1"),
        (["model=lff", "model.optimizer.lr=0"], "model.optimizer.lr must be a positive number"),
        (["seed=-1"], r"seed must be an integer from 0 to 4294967295, got -1"),
        (["+trainer.gradient_clip_val=1"], "trainer.gradient_clip_val cannot apply: the methods"),
        (["+trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches cannot apply"),
        (["data.seed=-1"], r"data.seed must be an integer from 0 to 4294967295, got -1"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_any_work(overrides, message, tmp_path):
    from lnl_lightning.train import check_config

    cfg = compose_train(overrides, tmp_path)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.target_size=0", "data.target_size must divide 28"),
        ("data.target_size=-1", "data.target_size must divide 28"),
        ("data.target_size=5", "data.target_size must divide 28"),
        ("data.grayscale=2", "data.grayscale must be true or false, got 2"),
    ],
)
def test_data_settings_that_cannot_work_are_refused_when_the_data_is_built(
    override, message, tmp_path
):
    from lnl_lightning.config import build

    cfg = compose_train([override, f"data.data_dir={tmp_path}"], tmp_path)
    with pytest.raises(ConfigError, match=message):
        build(cfg.data)


def test_a_key_the_model_does_not_take_is_named(tmp_path):
    from lnl_lightning.data.contract import BiasSpec
    from lnl_lightning.train import build_model

    spec = BiasSpec(10, 10, 8, tuple((c, c) for c in range(10)), target_kind="pixel")
    cfg = compose_train(["+model.foo=1"], tmp_path)
    with pytest.raises(ConfigError, match=r"model.foo is not a setting of .*LNLModule"):
        build_model(cfg, spec, ("test",))
    assert build_model(compose_train([], tmp_path), spec, ("test",)).method == "lnl"


def test_a_mandatory_key_left_out_is_named(tmp_path):
    from lnl_lightning.config import build

    cfg = compose_train(["experiment=image_csv"], tmp_path)
    with pytest.raises(ConfigError, match=r"data.csv_path must be given .*data.csv_path=<value>"):
        build(cfg.data)


def test_help_offers_no_internal_schema_as_a_choice(tmp_path):
    import subprocess
    import sys

    groups = subprocess.run(
        [sys.executable, "-m", "lnl_lightning", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    ).stdout.split("== Config ==")[0]
    assert "data: colored_mnist," in groups and "trainer: ddp" in groups
    assert "schema" not in groups
