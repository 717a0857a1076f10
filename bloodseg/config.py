"""Typed schemas for every Hydra config group, registered in Hydra's ConfigStore.

Each YAML file under ``conf/`` is merged onto one of these dataclasses, so a misspelt
key or a value of the wrong type fails when the config is composed, naming the key
(for example ``Key 'lrr' not in 'SGDConfig'``), before any data is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from bloodseg.constants import DEFAULT_MAX_WHOLE_PIXELS, IMAGENET_MEAN, IMAGENET_STD
from bloodseg.errors import BloodsegError

# The YAML configs ship inside the package (bloodseg/conf; the repository's top-level conf/ links to it),
# so a non-editable install has them too. An absolute path: Hydra resolves a relative config_path
# against the calling *module* when an entry point is imported (console scripts).
CONF_DIR = str(Path(__file__).resolve().parent / "conf")


class ConfigChoice(Enum):
    """A config value with fixed choices, written as typed on the command line (``median_frequency``,
    not ``ClassWeighting.median_frequency``): in tab completion, logs and messages."""

    def __str__(self) -> str:
        return self.name


class DataSource(ConfigChoice):
    synthetic = "synthetic"
    folder = "folder"
    cellavision = "cellavision"
    smear_fields = "smear_fields"
    allidb1_masks = "allidb1_masks"


class ClassWeighting(ConfigChoice):
    none = "none"
    inverse_frequency = "inverse_frequency"
    median_frequency = "median_frequency"
    enet_log = "enet_log"


class TestTimeAugmentation(ConfigChoice):
    none = "none"
    flip = "flip"
    dihedral = "dihedral"


@dataclass
class ClassSpec:
    """One class of the label table: its name, overlay colour and label encodings."""

    name: str = MISSING
    color: list[int] | None = None  # RGB; how colour label images encode the class
    value: int | None = None  # grey level; how single-channel label images encode it


@dataclass
class SyntheticConfig:
    num_images: int = 42
    seed: int = 0
    min_size: list[int] = field(default_factory=lambda: [300, 400])
    max_size: list[int] = field(default_factory=lambda: [480, 640])


@dataclass
class DataConfig:
    source: DataSource = DataSource.synthetic
    root: str | None = None
    mask_root: str | None = None
    classes: list[ClassSpec] = MISSING
    image_size: list[int] = field(default_factory=lambda: [360, 480])
    test_fraction: float = 0.3
    val_fraction: float = 0.0
    split_seed: int = 42
    augment_copies: int = 4
    max_translation: int = 10
    horizontal_flip: bool = True
    vertical_flip: bool = False
    augment_on_device: bool | None = None
    crop_size: list[int] | None = None
    rotation: float = 0.0
    scale_range: list[float] = field(default_factory=lambda: [1.0, 1.0])
    color_jitter: float = 0.0
    batch_size: int = 4
    eval_batch_size: int = 8
    num_workers: int = 2
    max_images: int | None = None
    allow_unpaired: bool = False
    allow_empty_classes: bool = False
    split_file: str | None = None
    cache_dir: str | None = None
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelConfig:
    _target_: str = MISSING
    name: str = MISSING
    compile: bool = False
    channels_last: bool | None = None


@dataclass
class SegNetConfig(ModelConfig):
    _target_: str = "bloodseg.models.segnet.SegNet"
    name: str = "segnet_vgg16"
    pretrained: Any = "auto"
    pool_tie_tolerance: float = 0.01


@dataclass
class SmpConfig(ModelConfig):
    _target_: str = "bloodseg.models.baselines.build_smp"
    name: str = MISSING
    arch: str = MISSING
    encoder: str = "resnet34"
    encoder_weights: Any = "auto"


@dataclass
class LossConfig:
    class_weighting: ClassWeighting = ClassWeighting.median_frequency
    label_smoothing: float = 0.0


@dataclass
class OptimizerConfig:
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.0


@dataclass
class SGDConfig(OptimizerConfig):
    _target_: str = "torch.optim.SGD"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False


@dataclass
class AdamConfig(OptimizerConfig):
    _target_: str = "torch.optim.Adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0


@dataclass
class AdamWConfig(AdamConfig):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = 1e-2


@dataclass
class SchedulerConfig:
    _target_: str | None = None
    _partial_: bool = True


@dataclass
class StepLRConfig(SchedulerConfig):
    _target_: str | None = "torch.optim.lr_scheduler.StepLR"
    step_size: int = 30
    gamma: float = 0.1


@dataclass
class CosineConfig(SchedulerConfig):
    _target_: str | None = "torch.optim.lr_scheduler.CosineAnnealingLR"
    T_max: int = MISSING
    eta_min: float = 0.0


@dataclass
class PolyConfig(SchedulerConfig):
    _target_: str | None = "torch.optim.lr_scheduler.PolynomialLR"
    total_iters: int = MISSING
    power: float = 0.9


@dataclass
class TrainerConfig:
    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: Any = "auto"
    precision: str = "auto"
    max_epochs: int = 100
    min_epochs: int | None = None
    max_steps: int = -1
    max_time: str | None = None
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    check_val_every_n_epoch: int = 1
    num_sanity_val_steps: int = 0
    log_every_n_steps: int = 10
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    deterministic: Any = False
    benchmark: bool | None = None
    sync_batchnorm: bool = False
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    use_distributed_sampler: bool = False


@dataclass
class CSVLoggerConfig:
    name: str = "csv"


@dataclass
class WandbLoggerConfig:
    project: str = "bloodseg"
    entity: str | None = None
    group: str | None = None
    job_type: str | None = "train"
    tags: list[str] = field(default_factory=list)
    name: str | None = None
    mode: str = "auto"  # auto | offline | online | disabled (bloodseg.tracking.resolve_mode)
    resume: bool = True
    log_artifacts: bool = True
    log_images_every_n_epochs: int = 10
    num_images: int = 4
    init_timeout: float = 60.0


@dataclass
class LoggerConfig:
    csv: CSVLoggerConfig | None = field(default_factory=CSVLoggerConfig)
    wandb: WandbLoggerConfig | None = None


@dataclass
class CheckpointConfig:
    save_last: bool = True
    save_top_k: int = 0
    monitor: str | None = None
    mode: str = "max"
    every_n_epochs: int = 1


@dataclass
class EarlyStoppingConfig:
    monitor: str | None = None  # e.g. val/mean_iou; None = no early stopping
    mode: str = "max"
    patience: int = 20


@dataclass
class CallbacksConfig:
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    progress_bar: str = "rich"
    lr_monitor: bool = True
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class InstancesConfig:
    enabled: bool = True
    min_true_area: int = 100
    min_cell_area: int = 80
    min_distance: int = 8
    smoothing: float = 1.0
    max_hole_area: int = 300


@dataclass
class EvaluationConfig:
    instances: InstancesConfig = field(default_factory=InstancesConfig)
    bf_tolerance: float = 0.0075
    semantics: str = "matlab_current"
    num_overlays: int = 1
    tta: TestTimeAugmentation = TestTimeAugmentation.none


@dataclass
class TrainConfig:
    name: str = "default"
    seed: int = 42
    ckpt_path: str | None = None
    auto_resume: bool = True
    test_after_fit: bool = True
    optimized_metric: str | None = "val/mean_iou"
    launcher_gpus: list[Any] | None = None
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    loss: LossConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    callbacks: CallbacksConfig = MISSING
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)


@dataclass
class EvaluateInstancesConfig:
    enabled: bool = True
    min_true_area: int | None = None
    min_cell_area: int | None = None
    min_distance: int | None = None
    smoothing: float | None = None
    max_hole_area: int | None = None


@dataclass
class EvaluateEvaluationConfig(EvaluationConfig):
    instances: EvaluateInstancesConfig = field(
        default_factory=EvaluateInstancesConfig
    )  # null = the checkpoint's


@dataclass
class EvaluateConfig:
    ckpt_path: str | None = None
    pred_dir: str | None = None
    gt_dir: str | None = None
    image_dir: str | None = None
    split: str = "test"
    network_size: list[int] | None = None
    output_dir: str | None = None
    overwrite: bool = False
    batch_size: int = 8
    data: DataConfig | None = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluation: EvaluateEvaluationConfig = field(default_factory=EvaluateEvaluationConfig)


@dataclass
class BenchSettings:
    measurements: list[str] = field(
        default_factory=lambda: ["train_step", "inference", "evaluation", "bf_score"]
    )
    models: list[str] = field(default_factory=lambda: ["segnet_vgg16"])
    warmup_steps: int = 5
    steps: int | None = None
    inference_batch_size: int = 32
    bf_batch_size: int = 16
    reference_repeats: int = 1


@dataclass
class BenchConfig(TrainConfig):
    bench: BenchSettings = field(default_factory=BenchSettings)


# the schema each group option extends (``defaults: - /NAME@_here_``), stored outside the groups


# ---- the tools' schemas (predict, suggest, export) ------------------------------------------------
class PredictMode(ConfigChoice):
    """How an image goes through the network: auto (whole when it fits, else tiled), whole, tile, resize."""

    auto = "auto"
    whole = "whole"
    tile = "tile"
    resize = "resize"


@dataclass
class NetworkPassSettings:
    """How images go through the network, shared by predict and suggest."""

    mode: PredictMode = PredictMode.auto
    scale: float = 1.0
    overlap: float = 0.25
    max_whole_pixels: int = DEFAULT_MAX_WHOLE_PIXELS
    batch_size: int = 8
    device: str = "auto"


@dataclass
class PredictSettings(NetworkPassSettings):
    alpha: float = 0.45
    outlines: bool = True
    pixel_size_um: float | None = None
    min_cell_area: int | None = None
    min_distance: int | None = None
    smoothing: float | None = None
    max_hole_area: int | None = None
    stream_pixels: int = 16_777_216
    stream_tile: int = 512
    max_picture_pixels: int = 67_108_864
    max_count_pixels: int = 268_435_456
    tta: TestTimeAugmentation = TestTimeAugmentation.none


@dataclass
class PredictConfig:
    ckpt_path: str | None = None
    input: str | None = None
    output_dir: str | None = None
    predict: PredictSettings = field(default_factory=PredictSettings)


class Score(ConfigChoice):
    entropy = "entropy"
    margin = "margin"


@dataclass
class SuggestSettings(NetworkPassSettings):
    score: Score = Score.entropy
    flip: bool = True


@dataclass
class SuggestConfig:
    ckpt_path: str | None = None
    input: str | None = None
    output_dir: str | None = None
    n: int | None = 10
    suggest: SuggestSettings = field(default_factory=SuggestSettings)


class ExportFormat(ConfigChoice):
    onnx = "onnx"
    torchscript = "torchscript"


class InputDtype(ConfigChoice):
    uint8 = "uint8"
    float32 = "float32"


@dataclass
class ExportConfig:
    ckpt_path: str | None = None
    format: ExportFormat = ExportFormat.onnx
    output: str | None = None
    input_dtype: InputDtype = InputDtype.uint8
    opset: int = 18
    verify: bool = True
    verify_images: str | None = None
    verify_count: int = 4


GROUP_SCHEMAS = {
    "segnet_schema": SegNetConfig,
    "smp_schema": SmpConfig,
    "sgd_schema": SGDConfig,
    "adam_schema": AdamConfig,
    "adamw_schema": AdamWConfig,
    "none_schema": SchedulerConfig,
    "step_schema": StepLRConfig,
    "cosine_schema": CosineConfig,
    "poly_schema": PolyConfig,
}


def unknown_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Full names of keys that no schema declares (Hydra's ``+key=value`` can add them past the schema)."""
    found = []
    schema = OmegaConf.get_type(cfg)
    declared = {f.name for f in fields(schema)} if is_dataclass(schema) else None
    for key in cfg.keys():
        name = f"{prefix}{key}"
        if declared is not None and key not in declared:
            found.append(name)
            continue
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
            found += unknown_keys(node, f"{name}.")
        elif isinstance(node, ListConfig) and not node._is_none() and not node._is_missing():
            for i, item in enumerate(node):
                if isinstance(item, DictConfig):
                    found += unknown_keys(item, f"{name}[{i}].")
    return found


# (key, test, what the value must be): checked by check_config wherever the key exists and is set
VALUE_RULES: list[tuple[str, Any, str]] = [
    ("optimizer.lr", lambda v: v > 0, "> 0"),
    ("optimizer.weight_decay", lambda v: v >= 0, ">= 0"),
    ("optimizer.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data.batch_size", lambda v: v >= 1, ">= 1"),
    ("data.eval_batch_size", lambda v: v >= 1, ">= 1"),
    ("data.num_workers", lambda v: v >= 0, ">= 0"),
    ("data.test_fraction", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data.val_fraction", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data.augment_copies", lambda v: v >= 0, ">= 0 (0: the original images only)"),
    ("data.max_translation", lambda v: v >= 0, ">= 0"),
    ("data.rotation", lambda v: 0 <= v <= 180, "in [0, 180] degrees"),
    ("data.color_jitter", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data.max_images", lambda v: v >= 1, ">= 1 (or null for all)"),
    ("loss.label_smoothing", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("trainer.max_epochs", lambda v: v >= -1, ">= 0 (or -1: no limit)"),
    ("trainer.log_every_n_steps", lambda v: v >= 1, ">= 1"),
    ("trainer.accumulate_grad_batches", lambda v: v >= 1, ">= 1"),
    ("trainer.check_val_every_n_epoch", lambda v: v >= 1, ">= 1"),
    ("trainer.gradient_clip_val", lambda v: v >= 0, ">= 0 (or null: no clipping)"),
    ("callbacks.checkpoint.every_n_epochs", lambda v: v >= 1, ">= 1"),
    ("callbacks.checkpoint.save_top_k", lambda v: v >= -1, ">= 0 (or -1: all)"),
    ("callbacks.early_stopping.patience", lambda v: v >= 0, ">= 0"),
    ("evaluation.bf_tolerance", lambda v: v > 0, "> 0"),
    ("evaluation.num_overlays", lambda v: v >= 0, ">= 0"),
    ("evaluation.instances.min_true_area", lambda v: v >= 1, ">= 1"),
    ("evaluation.instances.min_cell_area", lambda v: v >= 1, ">= 1"),
    ("evaluation.instances.min_distance", lambda v: v >= 1, ">= 1"),
    ("evaluation.instances.smoothing", lambda v: v >= 0, ">= 0"),
    ("evaluation.instances.max_hole_area", lambda v: v >= 0, ">= 0"),
    ("batch_size", lambda v: v >= 1, ">= 1"),
]


def bad_values(cfg: DictConfig) -> list[str]:
    """``key=value (must be ...)`` for every VALUE_RULES key whose value is out of range."""
    found = []
    for key, test, must in VALUE_RULES:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if isinstance(value, int | float) and not isinstance(value, bool) and not test(value):
            found.append(f"{key}={value} (must be {must})")
    test_share = OmegaConf.select(cfg, "data.test_fraction", default=None)
    val_share = OmegaConf.select(cfg, "data.val_fraction", default=None)
    if (
        isinstance(test_share, float | int)
        and isinstance(val_share, float | int)
        and test_share + val_share >= 1
    ):
        found.append(f"data.test_fraction + data.val_fraction = {test_share + val_share} (must be < 1)")
    return found


def check_config(cfg: DictConfig) -> None:
    """Fail with the key's name when a composed config holds a key no schema knows or a value out of range."""
    unknown = unknown_keys(cfg)
    if unknown:
        raise BloodsegError(
            f"unknown config key(s): {', '.join(unknown)}; fix the spelling (see `--cfg job` for the known keys)"
        )
    bad = bad_values(cfg)
    if bad:
        raise BloodsegError(f"out of range: {'; '.join(bad)}; fix: give a value in range")


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore under the names the YAML files extend.

    The schemas of group options (``model``, ``optimizer``, ``scheduler``) are stored at the root,
    outside their groups, and the options pull them in with ``- /<name>_schema@_here_``: so they are
    never offered as options (``optimizer=adam_schema``), in ``--help`` or in tab completion.
    """
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(name="bench_schema", node=BenchConfig)
    cs.store(name="predict_schema", node=PredictConfig)
    cs.store(name="suggest_schema", node=SuggestConfig)
    cs.store(name="export_schema", node=ExportConfig)
    for name, node in GROUP_SCHEMAS.items():
        cs.store(name=name, node=node)


register_configs()
