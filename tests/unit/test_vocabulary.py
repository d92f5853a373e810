"""Vocabulary trimming on a tiny BERT built here: texts made of kept tokens embed exactly as
before, any other token reads the unknown token's row, the cut replays from the recipe, and the
trimmed model exports, quantizes (its smaller table in int8) and fuses like an untrimmed one."""
import copy

import numpy as np
import onnx
import pytest
import torch

from slimline.artifact.recipe import Recipe, input_specs
from slimline.artifact.store import load_model, write_artifact
from slimline.artifact.student import Student, trim_student_vocabulary
from slimline.config.params import QuantizeParams
from slimline.data.splits import Split
from slimline.data.text import read_special_tokens, save_special_tokens, tokenize
from slimline.errors import SlimlineError
from slimline.measure.embedding import cosine_rows
from slimline.measure.runtime import make_session, onnx_predict
from slimline.models.huggingface import (
    TEXT_AXES,
    fusable_text_model,
    load_pretrained,
    load_tokenizer,
    trim_vocabulary,
)
from slimline.techniques.quantize import Int8Target, quantize_model
from slimline.techniques.vocabulary import corpus_vocabulary, unseen_share
from tests.helpers.text import save_tiny_bert, sentences


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    texts = [row["text"] for row in sentences(96)]
    folder = save_tiny_bert(tmp_path_factory.mktemp("encoder"), texts, task="embedding",
                            layers=2, hidden=32, heads=4)
    tokenizer = load_tokenizer(folder)
    model, config, task = load_pretrained(folder)
    return folder, tokenizer, model, config, task


def run(model, inputs):
    with torch.no_grad():
        return model(**{name: torch.from_numpy(array) for name, array in inputs.items()}).numpy()


def test_trimming_keeps_the_corpus_texts_exact_and_maps_other_tokens_to_unknown(encoder, tmp_path):
    folder, tokenizer, model, config, task = encoder
    corpus = tokenize(tokenizer, ["the football match was big", "a sunny morning"], 12)
    save_special_tokens(folder, tmp_path)
    special_ids, unknown = read_special_tokens(tmp_path)
    assert unknown == tokenizer.unk_token_id and unknown in special_ids
    vocabulary = corpus_vocabulary(corpus, special_ids, unknown)
    rows_before = model.model.get_input_embeddings().num_embeddings
    student = Student(copy.deepcopy(model), Recipe("huggingface", {"config": config, "task": task},
                      input_specs(corpus, TEXT_AXES), output_name="sentence_embedding"), "test")
    trim_student_vocabulary(student, vocabulary.kept, vocabulary.unknown)
    rows = student.model.model.get_input_embeddings().num_embeddings
    assert rows == len(vocabulary.kept) < rows_before
    np.testing.assert_allclose(run(student.model, corpus), run(model, corpus), atol=1e-6)

    other = tokenize(tokenizer, ["the tennis coach saw a storm"], 12)
    assert unseen_share(other, vocabulary) > 0
    as_unknown = {name: array.copy() for name, array in other.items()}
    outside = ~np.isin(as_unknown["input_ids"], vocabulary.kept)
    as_unknown["input_ids"][outside] = unknown
    np.testing.assert_allclose(run(student.model, other), run(model, as_unknown), atol=1e-6)
    assert not np.allclose(run(student.model, other), run(model, other), atol=1e-4)

    # The artifact rebuilds from its recipe; its ONNX graph maps the ids itself; int8 shrinks it.
    write_artifact(tmp_path / "trimmed", student.model, student.recipe, corpus, 1e-4)
    reloaded, _ = load_model(tmp_path / "trimmed")
    np.testing.assert_allclose(run(reloaded, other), run(student.model, other), atol=1e-6)
    graph = onnx.load(str(tmp_path / "trimmed" / "model.onnx"))
    session = make_session(tmp_path / "trimmed" / "model.onnx")
    np.testing.assert_allclose(onnx_predict(session, other), run(student.model, other), atol=1e-5)
    quantized, _ = quantize_model(graph, Split(corpus, np.zeros(2, np.int64)),
                                  QuantizeParams(scheme="dynamic"), Int8Target("uint8", False, "t"),
                                  transformer=True, embedding=True, log=lambda _: None)
    tables = [init for init in quantized.graph.initializer if len(init.dims) == 2
              and init.dims[0] == rows]
    assert tables and all(init.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
                          for init in tables)
    path = tmp_path / "int8.onnx"
    onnx.save(quantized, str(path))
    assert cosine_rows(onnx_predict(make_session(path), other), run(student.model, other)) > 0.98
    wrapper, _, _ = fusable_text_model(copy.deepcopy(student.model))
    with torch.no_grad():
        np.testing.assert_allclose(run(wrapper, other), run(student.model, other), atol=1e-5)


def test_trimming_needs_an_unknown_token_and_an_untrimmed_table(encoder):
    _, tokenizer, model, _, _ = encoder
    corpus = tokenize(tokenizer, ["the football match"], 8)
    with pytest.raises(SlimlineError, match="no unknown token"):
        corpus_vocabulary(corpus, [0], None)
    vocabulary = corpus_vocabulary(corpus, tokenizer.all_special_ids, tokenizer.unk_token_id)
    trimmed = copy.deepcopy(model)
    trim_vocabulary(trimmed, vocabulary.kept, vocabulary.unknown)
    with pytest.raises(SlimlineError, match="no untrimmed"):
        trim_vocabulary(trimmed, vocabulary.kept, vocabulary.unknown)
