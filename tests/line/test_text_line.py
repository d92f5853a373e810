"""Bring your own transformer: a tiny BERT classifier and a text file a user would hand over,
through the whole line (dvc repro) on a reduced configuration; and the bad inputs a user makes,
each ending prepare with one clear line."""
import json
import shutil

import numpy as np
import onnx
import pytest
import yaml

from slimline.artifact.recipe import ONNX, read_recipe
from slimline.artifact.store import load_model
from slimline.measure.runtime import make_session
from slimline.stage import stage_main
from slimline.techniques.prune_transformer import head_counts
from tests.conftest import make_project, reduced_params, run
from tests.helpers.text import save_tiny_bert, sentences, write_jsonl

pytestmark = pytest.mark.slow
MODELS = ("teacher", "pruned", "decomposed", "distilled", "quantized")
ADAMW = {"optimizer": "adamw", "max_shift": 0, "weight_decay": 0.01, "batch_size": 32}
# Decompose times every candidate layer in ONNX Runtime (two exports each): two FFN layers
# show SVD on a transformer without paying for all fourteen.
NOT_FACTORIZED = [f"model.bert.encoder.layer.{layer}.{name}" for layer in (0, 1)
                  for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                               "attention.output.dense", "output.dense")]
NOT_FACTORIZED += ["model.bert.pooler.dense", "model.classifier"]


def text_params(**extra) -> dict:
    """The reduced line on the user's files: the untrained classifier head is fine-tuned in
    prepare (model.finetune), then pruned, factorized, distilled to one layer, int8."""
    params = reduced_params(
        data={"source": "text", "path": "texts.jsonl", "text": {"max_length": 16},
              "val_size": 100, "test_size": 150, "calibration_size": 32},
        model={"source": "huggingface", "path": "user_model", "num_classes": 3, "finetune": True},
        prepare={"train": {"epochs": 4, "learning_rate": 0.003, **ADAMW}},
        prune={"keep_ratio": 0.5, "head_keep_ratio": 0.5, "latency_runs": 20,
               "finetune": {"epochs": 2, "learning_rate": 0.001, **ADAMW}},
        decompose={"latency_runs": 20, "min_speedup": 1.0, "exclude": NOT_FACTORIZED,
                   "finetune": {"epochs": 1, "learning_rate": 0.0005, **ADAMW}},
        distill={"enabled": True, "student_layers": [1], "compare_without_teacher": False,
                 "train": {"epochs": 3, "learning_rate": 0.002, **ADAMW}},
        quantize={"scheme": "dynamic", "latency_runs": 20, "latency_rounds": 2},
    )
    for section, values in extra.items():
        params[section] = {**params[section], **values}
    return params


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """What a user brings: a labelled JSONL file and a saved model folder (model + tokenizer)."""
    folder = tmp_path_factory.mktemp("user")
    rows = sentences(600)
    write_jsonl(rows, folder / "texts.jsonl")
    save_tiny_bert(folder / "user_model", [row["text"] for row in rows])
    return folder


@pytest.fixture(autouse=True)
def shared_data_root(user_files, monkeypatch):
    """The bad-input tests point at the module's shared files outside their own project folder:
    a data root the deployment allows (SLIMLINE_DATA_ROOTS)."""
    monkeypatch.setenv("SLIMLINE_DATA_ROOTS", str(user_files))


@pytest.fixture(scope="module")
def text_line(user_files, tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("text_line"), text_params())
    for name in ("texts.jsonl", "user_model"):
        (shutil.copytree if (user_files / name).is_dir() else shutil.copy)(
            user_files / name, project / name
        )
    run(["dvc", "repro"], project, timeout=1200)
    return project


def metrics(project, stage):
    return json.loads((project / "metrics" / f"{stage}.json").read_text())


def test_teacher_learned_the_task_and_exports_named_dynamic_inputs(text_line):
    assert metrics(text_line, "prepare")["teacher_test_top1"] >= 0.9  # 3 classes: chance is 0.33
    for name in MODELS:
        graph = onnx.load(str(text_line / "models" / name / ONNX)).graph
        assert [value.name for value in graph.input] == ["input_ids", "attention_mask"]
        for value in graph.input:
            dims = value.type.tensor_type.shape.dim
            assert not dims[0].HasField("dim_value") and not dims[1].HasField("dim_value")
    session = make_session(text_line / "models" / "teacher" / ONNX)
    ids = np.full((3, 7), 5, np.int64)  # another batch and sequence length than the data's
    assert session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0].shape == (
        3,
        3,
    )


def test_prune_removed_heads_and_ffn_neurons(text_line):
    prune = metrics(text_line, "prune")
    assert (prune["attention_heads_before"], prune["attention_heads_after"]) == (8, 4)
    assert prune["parameters_after"] < 0.7 * prune["parameters_before"]
    assert prune["val_top1_after"] >= 0.9
    model, recipe = load_model(text_line / "models" / "pruned")  # rebuilt from the recipe alone
    assert list(head_counts(model).values()) == [2, 2]
    assert model.model.bert.encoder.layer[0].intermediate.dense.out_features == 64
    assert any(edit["attributes"].get("num_attention_heads") == 2 for edit in recipe.edits)


def test_decompose_and_distill_edits_replay(text_line):
    assert metrics(text_line, "decompose")["layers_considered"] == 14
    decomposed = read_recipe(text_line / "models" / "decomposed")
    distilled_model, distilled = load_model(text_line / "models" / "distilled")
    assert distilled.edits[:len(decomposed.edits)] == decomposed.edits
    assert distilled.edits[-1] == {"op": "keep_layers", "module": "model.bert.encoder.layer",
                                   "indices": [1]}
    assert len(distilled_model.model.bert.encoder.layer) == 1
    assert metrics(text_line, "distill")["distilled_test_top1"] >= 0.8


def test_int8_is_smaller_and_evaluate_measured_every_model(text_line):
    quantize = metrics(text_line, "quantize")
    # Dynamic int8 shrinks the MatMul weights and the embedding tables 4x.
    assert quantize["int8_size_bytes"] < 0.5 * quantize["fp32_size_bytes"]
    assert read_recipe(text_line / "models" / "quantized").precision == "int8-dynamic"
    evaluate = metrics(text_line, "evaluate")
    assert evaluate["gate_passed"] == 1
    for name in MODELS:
        assert evaluate[f"{name}.top1"] >= 0.8
        assert evaluate[f"{name}.latency_p50_ms"] > 0 and evaluate[f"{name}.macs"] > 0
    assert (
        evaluate["distilled.parameters"]
        < evaluate["pruned.parameters"]
        < evaluate["teacher.parameters"]
    )
    assert evaluate["quantized.size_mb"] < evaluate["distilled.size_mb"]


# ------------------------------------------------------------------------ bad inputs, one line

def prepare(folder, params, capsys):
    """The prepare stage's own entry point, in process (the stage contract, without paying
    for a fresh interpreter's imports per case): (exit code, stderr)."""
    from stages.prepare import add_arguments, main

    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        stage_main("prepare", main, add_arguments, argv=[
            "--params", str(folder / "params.yaml"), "--data", str(folder / "data"),
            "--teacher", str(folder / "teacher"), "--metrics", str(folder / "prepare.json")])
    return exit_.value.code, capsys.readouterr().err


def assert_one_line(result, folder, *fragments):
    code, stderr = result
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not (folder / "teacher").exists() and not (folder / "data").exists()


def test_text_file_without_the_declared_column(user_files, tmp_path, capsys):
    shutil.copy(user_files / "texts.jsonl", tmp_path / "texts.jsonl")
    params = text_params(data={"path": "texts.jsonl", "text": {"text_column": "sentence"}},
                         model={"path": str(user_files / "user_model")})
    result = prepare(tmp_path, params, capsys)
    assert_one_line(
        result, tmp_path, "texts.jsonl", "no column 'sentence'", "data.text.text_column"
    )


def test_model_folder_that_is_not_a_hugging_face_model(user_files, tmp_path, capsys):
    (tmp_path / "my_model").mkdir()
    (tmp_path / "my_model" / "weights.pt").write_bytes(b"not a model")
    params = text_params(data={"path": str(user_files / "texts.jsonl")}, model={"path": "my_model"})
    assert_one_line(prepare(tmp_path, params, capsys), tmp_path, "my_model",
                    "not a Hugging Face model directory (no config.json)")


def test_model_folder_without_its_tokenizer(user_files, tmp_path, capsys):
    (tmp_path / "my_model").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(user_files / "user_model" / name, tmp_path / "my_model" / name)
    params = text_params(data={"path": str(user_files / "texts.jsonl")}, model={"path": "my_model"})
    assert_one_line(prepare(tmp_path, params, capsys), tmp_path, "my_model", "no tokenizer")
