"""Config composition: every experiment and group option composes; mistakes fail naming the key."""

from __future__ import annotations

import enum
import re

import pytest
from conftest import CONF_DIR, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError, ValidationError

from bloodseg.config import check_config
from bloodseg.errors import BloodsegError


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


GROUP_OPTIONS = [
    (g, o)
    for g in ("data", "model", "loss", "optimizer", "scheduler", "trainer", "logger", "callbacks")
    for o in options(g)
]
EXTRA = {
    "data/folder": ["data.root=/tmp/x"],
    "data/allidb1": ["data.root=/tmp/x"],
    "data/allidb1_masks": ["data.root=/tmp/x", "data.mask_root=/tmp/y"],
    "trainer/slurm_ddp": ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4", "hydra.launcher.nodes=2"],
}


def resolved(overrides: list[str]) -> dict:
    """The task config as a run would resolve it (${hydra:...} interpolations included)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def plain_values(option_file, prefix=()) -> dict[tuple, object]:
    """Every leaf value an option file sets itself (no interpolation), by its key path."""
    text = OmegaConf.load(option_file)
    leaves = {}

    def walk(node, path):
        for key in node:
            if key == "defaults" or OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key):
                continue
            if OmegaConf.is_dict(node[key]):
                walk(node[key], (*path, key))
            else:
                leaves[(*path, key)] = OmegaConf.to_container(node, resolve=False)[key]

    walk(text, prefix)
    return leaves


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_group_option_composes_and_resolves(group, option):
    """The option composes, resolves, and what it sets is what the run gets (unless EXTRA overrides it)."""
    extra = EXTRA.get(f"{group}/{option}", [])
    container = resolved([f"{group}={option}", *extra])
    given = {tuple(arg.split("=", 1)[0].split(".")) for arg in extra}
    leaves = plain_values(CONF_DIR / group / f"{option}.yaml", (group,))
    assert leaves or option == "none", f"{group}/{option} sets nothing"
    for path, value in leaves.items():
        if path in given or path[0].startswith("hydra"):
            continue
        got = container
        for key in path:
            got = got[key]
        assert matches(got, value), (path, got, value)


def matches(got, value) -> bool:
    """Whether the composed ``got`` holds what the option file wrote (``value``): the same leaves, enums
    by their value, and the keys the file gives of each mapping (a schema may add its defaults)."""
    if isinstance(got, enum.Enum):
        got = got.value
    if isinstance(value, dict):
        return isinstance(got, dict) and all(k in got and matches(got[k], v) for k, v in value.items())
    if isinstance(value, list):
        return isinstance(got, list) and len(got) == len(value) and all(map(matches, got, value))
    return got == value


def test_slurm_ddp_devices_follow_the_launcher():
    container = resolved(["trainer=slurm_ddp", *EXTRA["trainer/slurm_ddp"]])
    assert (container["trainer"]["devices"], container["trainer"]["num_nodes"]) == (4, 2)
    assert container["trainer"]["strategy"] == "ddp"


@pytest.mark.parametrize(
    "overrides",
    [
        ["+sweep=class_weighting_lr"],
        ["+sweep=optuna_lr"],
        ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
        ["hydra/launcher=joblib_local", "launcher_gpus=[0,1]"],
        ["trainer=ddp"],
    ],
)
def test_sweep_and_launcher_presets_compose(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=["experiment=segnet_vgg16", *overrides], return_hydra_config=True
        )
    if overrides[0].startswith("+sweep="):  # selection on a validation split, never on test
        assert cfg.data.val_fraction == 0.2 and cfg.optimized_metric == "val/mean_iou"
    if overrides[0] == "+sweep=class_weighting_lr":
        params = cfg.hydra.sweeper.params
        assert params["loss.class_weighting"] == "none,inverse_frequency,median_frequency,enet_log"
        assert params["optimizer.lr"] == "1e-2,1e-3,1e-4"
    if overrides[0] == "+sweep=optuna_lr":
        assert (
            cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction == "maximize"
        )
    if overrides[0] == "hydra/launcher=slurm":
        assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.partition == "gpu"
        assert cfg.hydra.launcher.tasks_per_node == cfg.hydra.launcher.gpus_per_node
    if overrides[0] == "trainer=ddp":
        assert cfg.trainer.strategy == "ddp_spawn" and cfg.trainer.sync_batchnorm


@pytest.mark.parametrize("experiment", options("experiment"))
@pytest.mark.parametrize("debug", [None, *options("debug")])
def test_every_experiment_composes(experiment, debug):
    overrides = [f"experiment={experiment}"] + ([f"debug={debug}"] if debug else [])
    cfg = compose_train(overrides)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert cfg.name == experiment


def test_segnet_experiment_is_the_paper_protocol():
    cfg = compose_train(["experiment=segnet_vgg16"])
    assert list(cfg.data.image_size) == [360, 480]
    assert cfg.data.test_fraction == 0.3 and cfg.data.val_fraction == 0.0
    assert cfg.data.augment_copies == 4 and cfg.data.max_translation == 10 and cfg.data.horizontal_flip
    assert cfg.loss.class_weighting.value == "median_frequency"
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (1e-3, 0.9, 5e-4)
    assert cfg.model._target_ == "bloodseg.models.segnet.SegNet"


def test_smoke_debug_is_small_and_on_cpu():
    cfg = compose_train(["experiment=segnet_vgg16", "debug=smoke"])
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.max_epochs <= 2
    assert cfg.data.image_size[0] * cfg.data.image_size[1] <= 128 * 128


def test_command_line_overrides_win_over_the_experiment():
    cfg = compose_train(
        ["experiment=segnet_vgg16", "optimizer=adam", "optimizer.lr=0.01", "data.batch_size=16"]
    )
    assert (
        cfg.optimizer._target_ == "torch.optim.Adam"
        and cfg.optimizer.lr == 0.01
        and cfg.data.batch_size == 16
    )


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lrr=0.1", "lrr"),
        ("data.imge_size=[1,2]", "imge_size"),
        ("trainer.max_epoch=3", "max_epoch"),
    ],
)
def test_misspelt_key_fails_with_its_name(override, key):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as error:
        compose_train([override])
    assert key in str(error.value) + str(error.value.__cause__)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("+model.depth=3", "model.depth"),
        ("+batchsize=4", "batchsize"),
        ("+data.classes.0.shade=1", "data.classes[0].shade"),
    ],
)
def test_keys_forced_in_with_plus_are_rejected_by_name(override, key):
    cfg = compose_train([override])
    with pytest.raises(BloodsegError, match=re.escape(key)):
        check_config(cfg)


def test_known_configs_pass_the_key_check():
    check_config(
        compose_train(["experiment=segnet_vgg16", "debug=smoke", "optimizer=adam", "scheduler=cosine"])
    )


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lr=fast", "lr"),
        ("loss.class_weighting=inverse", "class_weighting"),
        ("data.batch_size=four", "batch_size"),
    ],
)
def test_wrong_type_fails_with_its_name(override, key):
    with pytest.raises((ConfigCompositionException, ValidationError)) as error:
        compose_train([override])
    assert key in str(error.value) + str(error.value.__cause__)


def test_misspelt_key_in_a_yaml_file_fails(tmp_path):
    conf = tmp_path / "conf"
    import shutil

    shutil.copytree(CONF_DIR, conf)
    (conf / "experiment" / "typo.yaml").write_text("# @package _global_\nname: typo\ndata:\n  batchsize: 3\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises((ConfigCompositionException, ConfigKeyError)) as error:
            compose(config_name="train", overrides=["experiment=typo"])
    assert "batchsize" in str(error.value) + str(error.value.__cause__)


def test_every_knob_in_conf_has_a_comment():
    """Configs are the user interface: each key line of the group files documents itself."""
    undocumented = []
    for path in CONF_DIR.rglob("*.yaml"):
        if path.parent.name in ("experiment", "debug"):  # presets: each file documents itself in its header
            continue
        if path.parent.relative_to(CONF_DIR).as_posix() == "hydra/help":  # --help texts, not knobs
            continue
        for line in path.read_text().splitlines():
            if line.startswith(
                "hydra:"
            ):  # Hydra's own run-dir/logging settings end the knobs of an entry config
                break
            stripped = line.strip()
            if not stripped or stripped.startswith(("#", "-", "defaults")) or stripped.endswith(":"):
                continue
            if "#" not in stripped:
                undocumented.append(f"{path.relative_to(CONF_DIR)}: {stripped}")
    assert not undocumented, undocumented


@pytest.mark.parametrize("entry", ["evaluate", "bench"])
def test_other_entry_configs_compose(entry):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        overrides = ["debug=smoke"] if entry == "bench" else ["ckpt_path=x.ckpt", "data=cellavision"]
        cfg = compose(config_name=entry, overrides=overrides)
    check_config(cfg)
    if entry == "bench":
        assert list(cfg.data.image_size) == [64, 96] and "bf_score" in cfg.bench.measurements
    else:
        assert cfg.data.source.value == "cellavision" and cfg.split == "test"


NATIVE_SIZE = {
    "synthetic": [360, 480],
    "folder": [360, 480],
    "allidb1": [360, 480],
    "cellavision": [300, 300],
    "smear_fields": [1200, 1600],
    "allidb1_masks": [1368, 1712],
}


# every paper-protocol experiment; smear_fields is its own recipe (tested below)
@pytest.mark.parametrize("experiment", [e for e in options("experiment") if e != "smear_fields"])
@pytest.mark.parametrize("data", options("data"))
def test_data_preset_keeps_its_native_size_under_every_experiment(experiment, data):
    """Presets compose as read: the data preset's size and classes, the experiment's protocol and model."""
    assert set(options("data")) == set(NATIVE_SIZE)  # a new data preset needs its native size here
    alone = compose_train([f"data={data}", *EXTRA.get(f"data/{data}", [])])
    cfg = compose_train([f"experiment={experiment}", f"data={data}", *EXTRA.get(f"data/{data}", [])])
    assert list(cfg.data.image_size) == NATIVE_SIZE[data]
    assert cfg.data.classes == alone.data.classes and cfg.data.source == alone.data.source
    assert (cfg.data.test_fraction, cfg.data.val_fraction, cfg.data.augment_copies) == (0.3, 0.0, 4)
    assert cfg.loss.class_weighting.value == "median_frequency" and cfg.trainer.max_epochs == 100
    assert cfg.name == experiment
    user = compose_train([f"experiment={experiment}", f"data={data}", "data.image_size=[128,160]"])
    assert list(user.data.image_size) == [128, 160]  # the command line still wins


def test_the_smear_fields_experiment_is_the_recorded_recipe():
    """experiment=smear_fields composes to the overrides experiments/smear_fields/run_cpu.sh recorded."""
    recorded = compose_train(
        [
            "experiment=unet_resnet34",
            "model.encoder=resnet18",
            "model.encoder_weights=null",
            "optimizer=adam",
            "optimizer.lr=1e-3",
            "scheduler=poly",
            "loss.class_weighting=none",
            "data.augment_copies=1",
            "data.batch_size=8",
            "trainer.max_epochs=20",
            "trainer.check_val_every_n_epoch=5",
            "data=smear_fields",
            "data.root=/fields",
            "data.rotation=180",
            "data.color_jitter=0.2",
            "data.scale_range=[0.8,1.25]",
            # the cell splitting tuned after those runs (the runs were rescored with it)
            "evaluation.instances.min_distance=32",
            "evaluation.instances.smoothing=4.0",
            "evaluation.instances.min_cell_area=1500",
        ]
    )
    preset = compose_train(["experiment=smear_fields", "data.root=/fields"])
    for group in ("data", "model", "optimizer", "scheduler", "loss", "evaluation"):
        assert preset[group] == recorded[group], group
    assert preset.trainer.max_epochs == 20 and preset.trainer.check_val_every_n_epoch == 5
    assert list(preset.data.crop_size) == [256, 256] and list(preset.data.image_size) == [1200, 1600]
