"""A Hugging Face transformer from a local folder: rebuilt from its recipe, pruned by heads and
FFN neurons, cut to fewer layers, judged by embedding fidelity; bad folders and files fail in
one clear line. (The whole text line end to end is tests/test_text_line.py.)"""
import copy
import json

import numpy as np
import pytest
import torch

from slimline.artifact.edits import apply_edits, keep_layers_edit, resize_edits
from slimline.config.params import PruneParams
from slimline.data.text import encode_labels, read_pairs, read_text_table, tokenize
from slimline.errors import SlimlineError
from slimline.measure.embedding import (
    best_threshold_accuracy,
    cosine_rows,
    embedding_fidelity,
    embedding_outcomes,
    pair_correct,
)
from slimline.models.huggingface import (
    build_text_model,
    keep_encoder_layers,
    load_pretrained,
    load_tokenizer,
)
from slimline.techniques.lowrank import factorize
from slimline.techniques.prune_transformer import head_counts, prune_transformer
from tests.helpers.text import TOPICS, save_tiny_bert, sentences, write_jsonl


@pytest.fixture(scope="module")
def corpus():
    return sentences(120)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, corpus):
    return save_tiny_bert(tmp_path_factory.mktemp("classifier"), [row["text"] for row in corpus])


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, corpus):
    return save_tiny_bert(tmp_path_factory.mktemp("encoder"), [row["text"] for row in corpus],
                          task="embedding", layers=2, hidden=64)


def encoded(folder, texts, max_length=16):
    return {name: torch.from_numpy(array)
            for name, array in tokenize(load_tokenizer(folder), texts, max_length).items()}


def parameters(model):
    return sum(parameter.numel() for parameter in model.parameters())


def test_recipe_config_rebuilds_the_saved_model_exactly(classifier_dir, corpus):
    model, config, task = load_pretrained(classifier_dir)
    assert task == "classification" and json.loads(json.dumps(config)) == config
    skeleton = build_text_model(config, task)
    skeleton.load_state_dict(model.state_dict(), strict=True)
    inputs = encoded(classifier_dir, [row["text"] for row in corpus[:8]])
    torch.testing.assert_close(skeleton(**inputs), model(**inputs), rtol=0, atol=0)
    assert model(**inputs).shape == (8, len(TOPICS))


def test_heads_and_ffn_neurons_are_pruned_and_the_recipe_replays_them(classifier_dir, corpus):
    model, config, task = load_pretrained(classifier_dir)
    reference = copy.deepcopy(model)
    inputs = encoded(classifier_dir, [row["text"] for row in corpus[:8]])
    settings = PruneParams(enabled=True, keep_ratio=0.5, head_keep_ratio=0.5,
                           finetune={"epochs": 0})
    report = prune_transformer(model, settings, inputs, None, None, seed=0, log=lambda _: None)
    assert list(head_counts(reference).values()) == [4, 4]
    assert list(head_counts(model).values()) == [2, 2]
    ffn = "model.bert.encoder.layer.0.intermediate.dense"
    assert (report.channels_before[ffn], report.channels_after[ffn]) == (128, 64)
    assert parameters(model) < 0.85 * parameters(reference)
    assert (
        model.model.config.hidden_size == model.model.bert.embeddings.word_embeddings.embedding_dim
    )
    rebuilt = apply_edits(build_text_model(config, task), resize_edits(reference, model))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert list(head_counts(rebuilt).values()) == [2, 2]
    torch.testing.assert_close(rebuilt(**inputs), model(**inputs), rtol=0, atol=0)


def test_a_shallower_student_keeps_chosen_teacher_layers(encoder_dir, corpus):
    model, config, task = load_pretrained(encoder_dir)
    teacher_last = copy.deepcopy(model.model.encoder.layer[1].state_dict())
    edit = keep_layers_edit(*keep_encoder_layers(model, [1]))
    assert len(model.model.encoder.layer) == 1
    for name, tensor in model.model.encoder.layer[0].state_dict().items():
        assert torch.equal(tensor, teacher_last[name])
    rebuilt = apply_edits(build_text_model(config, task), [edit])
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    with pytest.raises(SlimlineError, match="student_layers"):
        keep_encoder_layers(copy.deepcopy(model), [3])


def test_embedding_fidelity_after_svd_of_every_linear(encoder_dir, corpus):
    teacher, _, task = load_pretrained(encoder_dir)
    assert task == "embedding"
    inputs = encoded(encoder_dir, [row["text"] for row in corpus[:64]])
    student = copy.deepcopy(teacher)
    linears = [
        name for name, module in student.named_modules() if isinstance(module, torch.nn.Linear)
    ]
    for name in linears:  # rank 3/8 of full: fewer parameters, a real cut
        layer = student.get_submodule(name)
        student.set_submodule(name, factorize(layer, "svd", [3 * min(layer.weight.shape) // 8]))
    assert parameters(student) < parameters(teacher)
    with torch.no_grad():
        reference, compressed = teacher(**inputs).numpy(), student(**inputs).numpy()
        unrelated = build_text_model(*load_pretrained(encoder_dir)[1:])(**inputs).numpy()
    assert embedding_fidelity(reference, reference) == pytest.approx(1.0, abs=1e-6)
    fidelity = embedding_fidelity(reference, compressed)
    print(f"fidelity {fidelity:.4f}, unrelated {embedding_fidelity(reference, unrelated):.4f}")
    assert 0.9 <= fidelity < 1.0
    assert embedding_fidelity(reference, unrelated) < fidelity


def test_pair_accuracy_finds_the_separating_threshold():
    similarities = np.array([0.9, 0.8, 0.75, 0.3, 0.2, 0.1])
    assert best_threshold_accuracy(similarities, np.array([1, 1, 1, 0, 0, 0])) == (1.0, 0.75)
    accuracy, _ = best_threshold_accuracy(similarities, np.array([1, 0, 1, 0, 1, 0]))
    assert accuracy == pytest.approx(4 / 6)
    first = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [1.0, 1.0]])
    second = np.array([[2.0, 0.0], [0.0, 1.0], [0.1, 1.0], [-1.0, -1.0]])
    correct, threshold = pair_correct(first, second, np.array([1, 0, 1, 1]))
    assert correct.tolist() == [True, True, True, False] and 0.1 < threshold < 1.0
    vectors = np.array([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(cosine_rows(vectors, vectors * 3), [1.0, 1.0])


def test_labels_map_through_the_model_label2id(tmp_path, corpus):
    path = write_jsonl(corpus[:30], tmp_path / "train.jsonl")
    table = read_text_table(path, "text", "label")
    labels, names = encode_labels(table.labels, {"sport": 0, "food": 1, "weather": 2}, path)
    assert names == ["sport", "food", "weather"]
    assert [names[index] for index in labels] == [row["label"] for row in corpus[:30]]


def test_text_file_without_the_declared_column(tmp_path, corpus):
    path = write_jsonl(corpus[:5], tmp_path / "data.jsonl")
    with pytest.raises(SlimlineError) as error:
        read_text_table(path, "sentence", "label")
    assert str(error.value).startswith(f"{path}: no column 'sentence'")
    csv_file = tmp_path / "data.csv"
    csv_file.write_text("text,topic\nhello there,a\n")
    with pytest.raises(
        SlimlineError, match=r"data.csv: no column 'label' \(data.text.label_column\)"
    ):
        read_text_table(csv_file, "text", "label")


def test_pairs_file_needs_zero_one_labels(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("text_a,text_b,label\nrain today,storm now,1\npasta,goal,similar\n")
    with pytest.raises(SlimlineError, match="must hold 1 \\(similar\\) or 0"):
        read_pairs(path, ("text_a", "text_b", "label"))


def test_folder_that_is_not_a_hugging_face_model(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(
        SlimlineError, match="not a Hugging Face model directory \\(no config.json\\)"
    ):
        load_pretrained(tmp_path)


def test_model_folder_without_a_tokenizer(tmp_path, classifier_dir):
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((classifier_dir / name).read_bytes())
    load_pretrained(tmp_path)  # the model alone loads
    with pytest.raises(SlimlineError, match="no tokenizer in the model directory"):
        load_tokenizer(tmp_path)


def test_embedding_outcomes_pair_or_nearest_neighbour_item_by_item():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(20, 8))
    labels, hits = embedding_outcomes(teacher, teacher + 0.01 * rng.normal(size=(20, 8)))
    assert labels.tolist() == [1] * 20 and hits.tolist() == [1] * 20
    _, unrelated = embedding_outcomes(teacher, rng.normal(size=(20, 8)))
    assert unrelated.mean() < 0.5  # another model's neighbours are rarely the teacher's
    first, second = teacher[:6], teacher[:6] * 2
    second[3:] = -second[3:]
    pair_labels = np.array([1, 1, 1, 0, 0, 0])
    truth, predicted = embedding_outcomes(teacher, teacher, (first, second, pair_labels))
    assert truth.tolist() == pair_labels.tolist() and predicted.tolist() == pair_labels.tolist()


def test_tokenizing_in_chunks_gives_what_one_call_gives(encoder_dir, corpus, monkeypatch):
    import slimline.data.text as text

    tokenizer = load_tokenizer(encoder_dir)
    texts = [row["text"] for row in corpus][:50]
    whole = tokenizer(texts, max_length=12, padding="max_length", truncation=True)
    monkeypatch.setattr(text, "TOKENIZE_CHUNK", 7)     # 50 texts: 8 chunks, the last short
    chunked = tokenize(tokenizer, texts, 12)
    assert chunked["input_ids"].tolist() == whole["input_ids"]
    assert chunked["attention_mask"].tolist() == whole["attention_mask"]
    assert text.truncated_count(tokenizer, texts, 4) == sum(
        len(ids) > 4 for ids in tokenizer(texts)["input_ids"])


def test_a_text_file_is_read_and_tokenized_a_chunk_at_a_time(tmp_path, encoder_dir, corpus,
                                                              monkeypatch):
    """load_text_dataset streams the file: the same arrays, labels and truncation count as the
    whole file in one call; rows are read as they are used, so a malformed row far down stops
    the load with its line number only after the chunks before it were tokenized."""
    import slimline.data.text as text
    from slimline.config.params import TextDataParams

    path = write_jsonl(corpus[:50], tmp_path / "texts.jsonl")
    config = TextDataParams(label_column="label", max_length=12)
    tokenizer = load_tokenizer(encoder_dir)
    texts = [row["text"] for row in corpus[:50]]
    calls = []
    original = text.tokenize
    monkeypatch.setattr(text, "tokenize", lambda *a: calls.append(len(a[1])) or original(*a))
    monkeypatch.setattr(text, "TOKENIZE_CHUNK", 7)     # 50 rows: 8 chunks, the last short
    dataset = text.load_text_dataset(path, config, encoder_dir)
    assert calls == [7] * 7 + [1]
    assert dataset.inputs["input_ids"].tolist() == tokenizer(
        texts, max_length=12, padding="max_length", truncation=True)["input_ids"]
    assert [dataset.classes[i] for i in dataset.labels] == [row["label"] for row in corpus[:50]]
    assert dataset.truncated == text.truncated_count(tokenizer, texts, 12)

    calls.clear()
    with open(path, "a") as handle:
        handle.write("{not json\n")
    with pytest.raises(SlimlineError, match=r"texts.jsonl: line 51 is not JSON"):
        text.load_text_dataset(path, config, encoder_dir)
    assert calls == [7] * 7                             # the rows before it were already used
