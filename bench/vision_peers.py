"""What a phone team would run instead of the line, built from the same teacher and data
(bench/vision.py measures them side by side):

  ort_int8            ONNX Runtime's one call: quantize_static, QDQ, per-channel int8 weights,
                      uint8 activations, on the calibration split; each calibration method tried
                      (minmax, percentile, entropy) and the best on the val split kept;
  nncf_int8           NNCF 3.4 `nncf.quantize` on the teacher's ONNX, its defaults;
  torch_pruning_int8  Torch-Pruning alone (L1 magnitude, classifier kept) at the MACs of the line's
                      student, fine-tuned on the labels for as many epochs as the line trains its
                      student (prune.finetune + distill.train), then the ort_int8 call.

And the real photos of the ImageNet-level check: every photo that ships inside scikit-image's
wheel (read out of the wheel, hash-pinned), scikit-learn and matplotlib, cut into fixed crops.
"""
from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from scratch import pinned_wheel

ROOT = Path(__file__).resolve().parents[1]
SKIMAGE = "scikit-image==0.26.0"
SKIMAGE_SHA256 = "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af"
NNCF = ["nncf==3.4.0", "ninja==1.13.2", "openvino-telemetry==2025.2.0"]
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


# ----------------------------------------------------------------------------------- fetching

def install_nncf() -> None:
    """NNCF into this environment, every package the lock pins kept at its pinned version."""
    try:
        import nncf  # noqa: F401
        return
    except ImportError:
        pass
    subprocess.run(["uv", "pip", "install", "--quiet", "--python", sys.executable,
                    "-c", str(ROOT / "requirements.lock"), *NNCF], check=True)


def skimage_wheel(folder: Path) -> Path:
    """scikit-image's wheel (Python 3.11, x86-64 Linux): only its photos are read."""
    return pinned_wheel(folder, SKIMAGE, SKIMAGE_SHA256,
                        ("--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"))


def photos(wheel: Path) -> dict[str, np.ndarray]:
    """name -> RGB uint8 (H, W, 3): scikit-image's colour photos and scenes, scikit-learn's
    china.jpg and flower.jpg, matplotlib's grace_hopper.jpg. Grey, synthetic and microscope
    images are left out: the check is ImageNet-like photos."""
    import matplotlib
    from PIL import Image
    from sklearn.datasets import load_sample_image

    skipped = {"brick", "camera", "cell", "chessboard_GRAY", "chessboard_RGB", "clock_motion",
               "coins", "color", "grass", "gravel", "horse", "hubble_deep_field", "ihc", "logo",
               "microaneurysms", "moon", "page", "phantom", "retina", "text"}
    found = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            stem, suffix = Path(name).stem, Path(name).suffix.lower()
            if (name.startswith("skimage/data/") and suffix in (".png", ".jpg")
                    and stem not in skipped):
                image = Image.open(io.BytesIO(archive.read(name))).convert("RGB")
                found[stem] = np.asarray(image)
    for name in ("china.jpg", "flower.jpg"):
        found[Path(name).stem] = np.asarray(load_sample_image(name))
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    found["grace_hopper"] = np.asarray(Image.open(hopper).convert("RGB"))
    return found


def crops(image: np.ndarray, size: int, mean: list[float], std: list[float]) -> np.ndarray:
    """Fixed crops of one photo, as the family preprocesses: the shorter side resized to
    size / CROP_FRACTION and to two larger scales, 9 crops (3 x 3 positions) of each, and their
    mirror images: 54 crops, float32 (54, 3, size, size)."""
    from PIL import Image

    from slimline.models.efficientnet_lite import CROP_FRACTION

    out = []
    for scale in (1.0, 1.25, 1.6):
        picture = Image.fromarray(image)
        short = round(size / CROP_FRACTION * scale)
        width, height = picture.size
        ratio = short / min(width, height)
        resized = (max(size, round(width * ratio)), max(size, round(height * ratio)))
        picture = picture.resize(resized, Image.Resampling.BILINEAR)
        array = np.asarray(picture, np.float32) / 255.0
        for fy in (0.0, 0.5, 1.0):
            for fx in (0.0, 0.5, 1.0):
                top = int((array.shape[0] - size) * fy)
                left = int((array.shape[1] - size) * fx)
                crop = array[top:top + size, left:left + size]
                out += [crop, crop[:, ::-1]]
    stacked = np.stack(out).transpose(0, 3, 1, 2)
    mean_, std_ = (np.asarray(v, np.float32).reshape(1, -1, 1, 1) for v in (mean, std))
    return ((stacked - mean_) / std_).astype(np.float32)


# -------------------------------------------------------------------------------- the peers

class _Reader:
    """ONNX Runtime's calibration reader over an array of inputs, one batch at a time."""

    def __init__(self, name: str, inputs: np.ndarray, batch: int = 16):
        self.feeds = iter([{name: inputs[i:i + batch]} for i in range(0, len(inputs), batch)])

    def get_next(self):
        return next(self.feeds, None)


def ort_quantize_static(fp32: Path, target: Path, calibration: np.ndarray, method: str) -> Path:
    """The one call, as ONNX Runtime's documentation shows it, with per-channel weights."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    from slimline.measure.runtime import make_session, quiet_ort

    name = make_session(fp32).get_inputs()[0].name
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    target.parent.mkdir(parents=True, exist_ok=True)
    with quiet_ort():
        quantize_static(str(fp32), str(target), _Reader(name, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        calibrate_method=methods[method])
    return target


def best_ort_int8(fp32: Path, folder: Path, calibration: np.ndarray, val: np.ndarray,
                  val_labels: np.ndarray) -> tuple[Path, str, dict[str, float]]:
    """Every calibration method's one call; the one that agrees most with `val_labels` on the
    val inputs (labels, or the fp32 model's own predictions where there are none) is kept."""
    from slimline.measure.runtime import make_session, onnx_predict

    scores = {}
    for method in CALIBRATION_METHODS:
        path = ort_quantize_static(fp32, folder / f"ort-{method}.onnx", calibration, method)
        scores[method] = float(np.mean(onnx_predict(make_session(path), val).argmax(1)
                                       == val_labels))
    best = max(scores, key=scores.get)
    return folder / f"ort-{best}.onnx", best, scores


def nncf_int8(fp32: Path, target: Path, calibration: np.ndarray) -> Path:
    """NNCF's post-training quantization of the ONNX model, its defaults."""
    os.environ.setdefault("NNCF_TELEMETRY", "0")   # no network here; never try to report
    import nncf
    import onnx

    model = onnx.load(str(fp32))
    name = model.graph.input[0].name
    dataset = nncf.Dataset([{name: calibration[i:i + 1]} for i in range(len(calibration))])
    quantized = nncf.quantize(model, dataset, subset_size=len(calibration))
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(quantized, str(target))
    return target


def torch_pruning_student(teacher_dir: Path, student_dir: Path, target: Path, train, val,
                          epochs: int, learning_rate: float, seed: int) -> tuple[Path, float]:
    """Torch-Pruning alone at the MACs of the line's student (as Torch-Pruning counts them):
    L1 magnitude, one ratio for every layer found by bisection, the classifier kept; fine-tuned on
    the labels for `epochs`. Returns the artifact and the pruning ratio used."""
    import torch
    import torch_pruning as tp

    from slimline.artifact.edits import resize_edits
    from slimline.artifact.store import load_model, write_artifact
    from slimline.config.params import TrainParams
    from slimline.training.loop import fit, seed_everything

    teacher, recipe = load_model(teacher_dir)
    example = torch.from_numpy(val.inputs["input"][:1])
    macs = tp.utils.count_ops_and_params(load_model(student_dir)[0], example)[0]

    def pruned(ratio: float):
        model = copy.deepcopy(teacher)
        head = [module for module in model.modules() if isinstance(module, torch.nn.Linear)][-1]
        tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=[head]).step()
        return model, tp.utils.count_ops_and_params(model, example)[0]

    low, high = 0.0, 0.95
    for _ in range(12):   # MACs fall monotonically with the ratio
        middle = (low + high) / 2
        low, high = (middle, high) if pruned(middle)[1] > macs else (low, middle)
    model, _ = pruned(high)
    seed_everything(seed)
    fit(model, train, TrainParams(epochs=epochs, learning_rate=learning_rate), seed=seed,
        description="torch-pruning fine-tune", log=lambda message: None)
    edited = recipe.derive(f"torch-pruning L1 ratio {high:.3f} + {epochs} epochs",
                           edits=resize_edits(teacher, model))
    write_artifact(target, model, edited, val.head(64), tolerance=1e-3)
    return target, high
