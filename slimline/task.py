"""What a model's output is for, decided once from its recipe; every stage asks the Task.

* classification: the output is class logits; a model is trained on the labels (cross-entropy)
  and scored by top-1 against them.
* embedding: the output is a sentence embedding (a transformer without a task head) and there are
  no labels: a compressed model is repaired by staying close to a reference model's embeddings
  (1 - cosine) and scored by its fidelity to them (mean cosine; slimline/measure/embedding.py).

numpy only at import (torch is imported by the methods that train or run a torch model), so
quantize's and evaluate's ONNX-only paths use it without the training stack.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimline.measure.embedding import embedding_fidelity

CLASSIFICATION, EMBEDDING = "classification", "embedding"


@dataclass(frozen=True)
class Task:
    name: str            # CLASSIFICATION | EMBEDDING
    examples: str = "images"   # what one example is, as units say it: "images" | "texts"

    @property
    def is_embedding(self) -> bool:
        return self.name == EMBEDDING

    @property
    def is_text(self) -> bool:
        return self.examples == "texts"

    @property
    def throughput_unit(self) -> str:
        return f"{self.examples}/s"

    @property
    def judged(self) -> str:
        """What evaluate's item-by-item column counts (top-1, or an embedding model's nn@1)."""
        return "nn@1 agreement" if self.is_embedding else "top-1"

    def predict_onnx(self, session, inputs):
        """An ONNX model's outputs as the task judges them: an embedding model's per text at its
        own length (dynamic int8 quantizes activations per call: padding changes its results,
        and a batch-1 user sends no padding); a classifier's in batches."""
        from slimline.measure.runtime import onnx_predict, onnx_predict_unpadded

        return (onnx_predict_unpadded(session, inputs) if self.is_embedding
                else onnx_predict(session, inputs))

    @property
    def metric(self) -> str:
        """What score() measures, as the logs and reports name it."""
        return "embedding fidelity" if self.is_embedding else "top-1"

    def score(self, reference=None):
        """score(model, split) -> float: top-1 on the split's labels, or (embedding) the mean
        cosine of the model's embeddings to `reference`'s."""
        from slimline.training.loop import accuracy, predict

        if not self.is_embedding:
            return accuracy

        def fidelity(model, split) -> float:
            return embedding_fidelity(
                predict(reference, split.inputs), predict(model, split.inputs)
            )

        return fidelity

    def recovery_loss(self, reference=None):
        """The fine-tuning loss after a structural cut: cross-entropy on the labels, or (embedding)
        staying close to `reference` (the model before the cut, frozen): 1 - cosine of the
        embeddings plus, for a transformer encoder, the MSE of every layer's hidden states
        (slimline/techniques/distill_encoder.py)."""
        from slimline.training.loop import cross_entropy

        if not self.is_embedding:
            return cross_entropy
        if self.is_text:
            from slimline.techniques.distill_encoder import recovery_loss

            return recovery_loss(reference)
        return stay_close_loss(reference)

    def output_quality(self, outputs: np.ndarray, reference_outputs: np.ndarray,
                       labels: np.ndarray) -> float:
        """The same quality as score(), on outputs already computed (an ONNX model's)."""
        if self.is_embedding:
            return embedding_fidelity(reference_outputs, outputs)
        return float((outputs.argmax(1) == labels).mean())


CLASSIFIER = Task(CLASSIFICATION)


def task_of(recipe) -> Task:
    """A transformer saved without a task head is an embedding model; everything else classifies.
    A transformer's examples are texts (token ids in), everything else's images."""
    text = recipe.architecture == "huggingface" or any(
        spec.get("name") == "input_ids" for spec in recipe.inputs if isinstance(spec, dict))
    embedding = recipe.architecture == "huggingface" and recipe.arguments.get("task") == EMBEDDING
    return Task(EMBEDDING if embedding else CLASSIFICATION, "texts" if text else "images")


def cosine_distillation_loss(student, teacher):
    """1 - mean cosine(student, teacher) (torch tensors): the student's embeddings point where
    the teacher's do."""
    import torch.nn.functional as F

    return 1 - F.cosine_similarity(student, teacher, dim=1).mean()


def stay_close_loss(reference):
    """loss_fn(model, inputs, labels): 1 - cosine of the model's embeddings to those of
    `reference` (frozen, in inference mode); the labels are not used."""
    import torch

    from slimline.training import device as training_device
    from slimline.training.loop import forward

    reference = reference.eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)

    def loss_fn(model, inputs, labels):
        training_device.follow(reference, next(iter(inputs.values())))
        with torch.inference_mode():
            target = forward(reference, inputs)
        return cosine_distillation_loss(forward(model, inputs), target.clone())
    return loss_fn
