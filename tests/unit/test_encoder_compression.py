"""A sentence encoder's compression, piece by piece, on a tiny BERT built here: the embedding
metrics on a case worked out by hand, the training device switch, the layer stack found after
decompose, the encoder distillation loss and its layer map, the embedding table in dynamic int8,
and ORT's attention fusion holding parity."""
import copy
import math
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from slimline.artifact.onnx_export import export_onnx
from slimline.config.params import DistillParams, QuantizeParams
from slimline.data.splits import Split
from slimline.data.text import tokenize
from slimline.errors import SlimlineError
from slimline.measure.embedding import embedding_quality, nn1_agreement, recall_at_k
from slimline.measure.runtime import make_session, onnx_predict, onnx_predict_unpadded
from slimline.models.huggingface import (
    TEXT_AXES,
    encoder_layers,
    fusable_text_model,
    keep_encoder_layers,
    load_pretrained,
    load_tokenizer,
)
from slimline.techniques.distill_encoder import (
    TeacherCache,
    attention_relation_loss,
    distill_encoder,
    encoder_distillation_loss,
    layer_map,
)
from slimline.techniques.fusion import choose_fusion, fuse_transformer
from slimline.techniques.lowrank import factorize
from slimline.techniques.quantize import Int8Target, quantize_model
from slimline.techniques.teacher_targets import TeacherTargets
from slimline.training import device
from tests.helpers.text import save_tiny_bert, sentences


def on_circle(degrees):
    radians = np.radians(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def test_embedding_metrics_on_a_case_worked_out_by_hand():
    # Teacher: points at 0, 10, 75 and 90 degrees; nearest neighbours 0<->1 and 2<->3.
    # Student: 0, 30, 50, 90: text 1's nearest becomes 2 and text 2's becomes 1.
    teacher, student = on_circle([0, 10, 75, 90]), on_circle([0, 30, 50, 90])
    assert nn1_agreement(teacher, student).tolist() == [True, False, False, True]
    quality = embedding_quality(teacher, student)
    assert quality["nn1"] == 0.5
    cos20, cos25 = math.cos(math.radians(20)), math.cos(math.radians(25))
    assert quality["cos_mean"] == pytest.approx((2 + cos20 + cos25) / 4)
    assert quality["cos_min"] == pytest.approx(cos25)
    # Pairs by angle, teacher: 01 10, 23 15, 12 65, 02 75, 13 80, 03 90 (ranks 1..6);
    # student: 01 30, 23 40, 12 20, 02 50, 13 60, 03 90 (ranks 2, 3, 1, 4, 5, 6):
    # sum d^2 = 6, rho = 1 - 6 * 6 / (6 * 35).
    assert quality["spearman"] == pytest.approx(1 - 36 / 210)
    # MRR: the teacher's nearest ranks 1st for texts 0 and 3, 2nd for texts 1 and 2.
    assert quality["mrr"] == pytest.approx(0.75)
    # recall@k: with k = 1 it is nn@1; each text's 2 nearest are the same set under both; with
    # 4 texts, k = 10 takes the 3 others: every one.
    assert recall_at_k(teacher, student, 1) == 0.5 and recall_at_k(teacher, student, 2) == 1.0
    assert quality["recall10"] == 1.0
    # Six texts on a line at 0..5: text i's 2 nearest under the teacher are its neighbours;
    # swapping texts 0 and 5 leaves texts 2 and 3 both, 1 and 4 one of their two, 0 and 5 none.
    line = np.stack([np.cos(np.radians(10 * np.arange(6))),
                     np.sin(np.radians(10 * np.arange(6)))], 1)
    swapped = line[[5, 1, 2, 3, 4, 0]]
    assert recall_at_k(line, swapped, 2) == pytest.approx((0 + 0.5 + 1 + 1 + 0.5 + 0) / 6)
    assert embedding_quality(teacher, teacher * 3) == pytest.approx(
        {"cos_mean": 1.0, "cos_min": 1.0, "nn1": 1.0, "recall10": 1.0, "mrr": 1.0,
         "spearman": 1.0})


def test_the_training_device_is_cuda_only_when_present_and_cpu_when_forced():
    assert device.resolve("auto", cuda_available=False).name == "cpu"
    assert device.resolve("auto", cuda_available=True).name == "cuda"
    assert device.resolve("cpu", cuda_available=True).name == "cpu"
    assert not device.resolve("cpu", bf16_autocast=True, cuda_available=True).bf16
    assert device.resolve("cuda", bf16_autocast=True, cuda_available=True).bf16
    with pytest.raises(SlimlineError, match="training.device = cuda but torch sees no CUDA GPU"):
        device.resolve("cuda", cuda_available=False)
    if not torch.cuda.is_available():   # this machine: auto falls back, cuda refuses
        assert device.configure("auto").name == "cpu" and device.current().name == "cpu"
        with pytest.raises(SlimlineError):
            device.configure("cuda")
    assert device.configure("cpu").name == "cpu"


@pytest.fixture(scope="module")
def texts():
    return [row["text"] for row in sentences(96)]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, texts):
    return save_tiny_bert(tmp_path_factory.mktemp("encoder"), texts, task="embedding", layers=3,
                          hidden=32, heads=4)


@pytest.fixture(scope="module")
def inputs(encoder_dir, texts):
    return tokenize(load_tokenizer(encoder_dir), texts, 16)


def tensors(inputs):
    return {name: torch.from_numpy(array) for name, array in inputs.items()}


def test_the_layer_stack_is_found_after_decompose_factorized_its_projections(encoder_dir):
    model, _, _ = load_pretrained(encoder_dir)
    for layer in model.model.encoder.layer:     # what decompose does to every Linear it keeps
        for name in ("query", "key", "value"):
            linear = getattr(layer.attention.self, name)
            setattr(layer.attention.self, name, factorize(linear, "svd", [8]))
    name, stack = encoder_layers(model)
    assert name == "model.encoder.layer" and len(stack) == 3
    assert keep_encoder_layers(model, [0, -1]) == ("model.encoder.layer", [0, 2])
    with pytest.raises(SlimlineError, match="each layer once"):
        keep_encoder_layers(copy.deepcopy(model), [1, -1])


def test_the_layer_map_matches_each_student_layer_to_what_the_next_kept_layer_reads():
    assert layer_map([0, 4, 5], 3, 6) == {1: 4, 2: 5, 3: 6}
    assert layer_map([0, 2, 5], 3, 6) == {1: 2, 2: 5, 3: 6}
    assert layer_map(None, 6, 6) == {i: i for i in range(1, 7)}
    assert layer_map(None, 3, 6) == {1: 2, 2: 4, 3: 6}


def test_the_encoder_distillation_loss_is_zero_for_the_teacher_and_training_lowers_it(
        encoder_dir, inputs):
    teacher, _, _ = load_pretrained(encoder_dir)
    torch.manual_seed(0)   # weights far from the near-identity layers of a fresh initialisation
    for module in teacher.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.3)
    config = DistillParams(hidden_weight=1.0, attention_weight=1.0,
                           train={"epochs": 3, "batch_size": 16, "learning_rate": 0.003,
                                  "optimizer": "adamw", "max_shift": 0})
    batch = tensors({name: array[:16] for name, array in inputs.items()})
    identity = encoder_distillation_loss(teacher, layer_map(None, 3, 3), config, TeacherCache(), 4)
    twin = copy.deepcopy(teacher).eval()
    assert float(identity(twin, batch, None).detach()) == pytest.approx(0.0, abs=1e-5)
    identity.release()

    student = copy.deepcopy(teacher)
    kept = keep_encoder_layers(student, [0, -1])[1]
    mapping = layer_map(kept, 2, 3)
    loss_fn = encoder_distillation_loss(teacher, mapping, config, TeacherCache(), 4)
    before = float(loss_fn(student.eval(), batch, None).detach())
    loss_fn.release()
    assert before > 0.01
    report = distill_encoder(student, teacher, Split(inputs, np.zeros(len(inputs["input_ids"]),
                                                                      np.int64)),
                             config, seed=0, kept_layers=kept, log=lambda _: None)
    assert report.layer_map == {1: 2, 2: 3} and report.training_texts == 96
    assert report.teacher_runs == 2          # its targets: 96 texts in batches of 64, once
    after_fn = encoder_distillation_loss(teacher, mapping, config, TeacherCache(), 4)
    assert float(after_fn(student.eval(), batch, None).detach()) < before
    after_fn.release()
    assert student.model.get_input_embeddings().weight.requires_grad   # unfrozen afterwards


def test_attention_relations_compare_different_head_counts():
    torch.manual_seed(0)
    mask = torch.ones(2, 5, dtype=torch.int64)
    mask[1, 3:] = 0
    teacher = {part: torch.randn(2, 5, 16) for part in ("query", "key", "value")}
    assert float(attention_relation_loss(teacher, teacher, 4, mask)) == pytest.approx(0, abs=1e-6)
    student = {part: torch.randn(2, 5, 8) for part in ("query", "key", "value")}
    assert float(attention_relation_loss(student, teacher, 4, mask)) > 0


def test_text_variants_give_the_teacher_more_texts_to_embed(encoder_dir, inputs):
    teacher, _, _ = load_pretrained(encoder_dir)
    student = copy.deepcopy(teacher)
    kept = keep_encoder_layers(student, [0, -1])[1]
    config = DistillParams(text_variants=1,
                           train={"epochs": 1, "batch_size": 16, "learning_rate": 0.003,
                                  "optimizer": "adamw", "max_shift": 0})
    lines = []
    report = distill_encoder(student, teacher, Split(inputs, np.zeros(96, np.int64)), config,
                             seed=0, kept_layers=kept, log=lines.append)
    assert report.teacher_runs == 3 and report.training_texts == 192   # 96 texts, 96 variants
    assert any("192 training texts" in line for line in lines)


def test_the_teacher_runs_only_to_build_its_targets_never_in_the_epochs(encoder_dir, inputs):
    teacher, _, _ = load_pretrained(encoder_dir)
    student = copy.deepcopy(teacher)
    kept = keep_encoder_layers(student, [0, -1])[1]
    calls = []
    teacher.model.register_forward_hook(lambda *_: calls.append(1))
    config = DistillParams(attention_weight=1.0,
                           train={"epochs": 3, "batch_size": 8, "learning_rate": 0.003,
                                  "optimizer": "adamw", "max_shift": 0})
    # 96 texts: 12 training batches of 8 per epoch, more than one batch of targets (64).
    report = distill_encoder(student, teacher, Split(inputs, np.zeros(96, np.int64)), config,
                             seed=0, kept_layers=kept, log=lambda _: None)
    assert len(calls) == report.teacher_runs == 2
    assert len(report.loss_history) == 3 and report.loss_history[-1] < report.loss_history[0]


def test_teacher_targets_on_disk_are_the_teachers_outputs_at_each_texts_length(
        encoder_dir, inputs, tmp_path):
    teacher, _, _ = load_pretrained(encoder_dir)
    targets = TeacherTargets(teacher, inputs, [1, 3], attention=True, folder=tmp_path)
    folder = targets.folder
    rows = torch.tensor([5, 70, 2])
    length = int(inputs["attention_mask"][rows.numpy()].sum(1).max())
    pooled, hidden, parts = targets.batch(rows, length, "cpu")
    batch = tensors({name: array[rows.numpy(), :length] for name, array in inputs.items()})
    with torch.no_grad():
        out = teacher.model(**batch, output_hidden_states=True)
    mask = batch["attention_mask"].unsqueeze(-1).bool()
    torch.testing.assert_close(pooled, teacher(**batch), atol=2e-3, rtol=1e-2)
    for index in (1, 3):
        torch.testing.assert_close(hidden[index] * mask, out.hidden_states[index] * mask,
                                   atol=2e-2, rtol=1e-2)
    assert set(parts) == {"query", "key", "value"} and targets.teacher_batches == 2
    assert (hidden[1][~mask.squeeze(-1)] == 0).all()   # padding positions are zeros
    # Held in device memory (a GPU's; here the CPU's), a batch is gathered there: the same.
    assert targets.hold_on("cpu", log=lambda _: None)
    held = targets.batch(rows, length, "cpu")
    assert torch.equal(held[0], pooled)
    for before, after in ((hidden, held[1]), (parts, held[2])):
        assert all(torch.equal(before[key], after[key]) for key in before)
    targets.remove()
    assert not folder.exists()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, encoder_dir, inputs):
    model, _, _ = load_pretrained(encoder_dir)
    path = tmp_path_factory.mktemp("onnx") / "fp32.onnx"
    export_onnx(model, tensors({name: array[:2] for name, array in inputs.items()}), path,
                axes=TEXT_AXES, output_name="sentence_embedding")
    return model, onnx.load(str(path))


def test_dynamic_int8_of_an_encoder_quantizes_its_embedding_table(exported, inputs):
    _, fp32 = exported
    calibration = Split(inputs, np.zeros(len(inputs["input_ids"]), np.int64))
    config = QuantizeParams(scheme="dynamic")
    target = Int8Target("uint8", False, "test")
    quantized, report = quantize_model(fp32, calibration, config, target, transformer=True,
                                       embedding=True, log=lambda _: None)
    word = word_table_dtypes(quantized)
    assert word and set(word.values()) <= {np.int8, np.uint8}
    assert report.settings["op_types"] == ["MatMul", "Gather"]
    # A convnet's dynamic path (MatMul only) leaves the table in fp32.
    matmul_only, _ = quantize_model(fp32, calibration, config, target, transformer=False)
    assert set(word_table_dtypes(matmul_only).values()) == {np.float32}
    session = make_session_from(quantized)
    reference = onnx_predict_unpadded(make_session_from(fp32), inputs)
    cosine = embedding_quality(reference, onnx_predict_unpadded(session, inputs))["cos_mean"]
    assert cosine > 0.98


def word_table_dtypes(model) -> dict:
    """The word-embedding table's initializers (the table, or its int8 form) by dtype."""
    return {init.name: numpy_helper.to_array(init).dtype.type for init in model.graph.initializer
            if "word_embeddings" in init.name and init.dims and len(init.dims) == 2}


def make_session_from(model):
    folder = Path(tempfile.mkdtemp(prefix="slimline-test-"))
    onnx.save(model, str(folder / "model.onnx"))
    return make_session(folder / "model.onnx")


def test_attention_fuses_with_parity_only_through_the_fusable_export(exported, inputs):
    model, plain = exported
    wrapper, heads, width = fusable_text_model(copy.deepcopy(model))
    assert (heads, width) == (4, 32)
    with torch.no_grad():
        torch.testing.assert_close(wrapper(**tensors(inputs)), model(**tensors(inputs)),
                                   atol=1e-5, rtol=0)
    path = Path(tempfile.mkdtemp(prefix="slimline-test-")) / "eager.onnx"
    export_onnx(wrapper, tensors({name: array[:2] for name, array in inputs.items()}), path,
                axes=TEXT_AXES, output_name="sentence_embedding")
    fused, counts = fuse_transformer(onnx.load(str(path)), heads, width)
    assert counts["Attention"] == 3 and counts["SkipLayerNormalization"] == 6
    report = choose_fusion(plain, fused, counts, inputs, {k: v[:1] for k, v in inputs.items()},
                           mode="on", runs=20, rounds=2)
    assert report.kept and report.max_abs_diff < 1e-4
    np.testing.assert_allclose(onnx_predict(make_session_from(fused), inputs),
                               onnx_predict(make_session_from(plain), inputs), atol=1e-4)
    # The exporter's own graph (sdpa attention) does not fuse: the fusable export is the feature.
    _, plain_counts = fuse_transformer(plain, heads, width)
    assert plain_counts.get("Attention", 0) == 0
