"""Distillation of a sentence encoder (an embedding model) on unlabelled texts.

    loss = (1 - cos(pooled student, pooled teacher))
           + hidden_weight * masked MSE(student hidden state i, teacher hidden state m(i))
           + attention_weight * KL(teacher || student) of the last layer's attention relations

The pooled embedding is what the user consumes; the hidden states give every student layer a
target of its own, which the pooled cosine alone does not (all-MiniLM-L6-v2 cut to three layers:
cosine 0.71 after two epochs with the brief's [0, 2, 4], 0.91 after three with [0, 4, 5]).

The layer map m: a student layer initialised from teacher layer k feeds the next kept layer,
which the teacher trained to read the teacher's hidden state at its own input; so student layer
i's output is matched to the hidden state the next kept layer expects, and the last student
layer to the teacher's last (the mean-pooled output space lives in the last layer: keeping
layers [0, 4, 5] starts at cosine 0.72 before any training, [0, 2, 4] at 0.37). A student with
every layer maps one to one.

The attention relations (MiniLMv2, Wang et al. 2021) compare softmax(Q Q^T), softmax(K K^T) and
softmax(V V^T) of the last layer, split into the teacher's head count, so a student with pruned
heads still has a target.

Cost on a 2-core CPU, where a distillation step is most of the line's time: the word-embedding
table is frozen by default (11.7 M of all-MiniLM-L6-v2's 22.7 M parameters: its AdamW state and
dense gradients were most of a step), batches are length-bucketed by the training loop, and the
teacher runs once over the whole corpus before training: its targets are kept on disk, fp16 and
memory-mapped (slimline/techniques/teacher_targets.py), so every epoch, and every candidate
student of slimline/techniques/student_choice.py, costs only the student's passes (on a GPU the
targets are held in its memory and batches are sized by tokens). The
fine-tuning loss after prune and decompose (recovery_loss) caches the reference's outputs per
batch in memory instead, while they fit in TEACHER_CACHE_BYTES.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from slimline.config.params import DistillParams
from slimline.data.splits import Split
from slimline.errors import SlimlineError
from slimline.models.huggingface import TextModel, encoder_layers, mean_pool
from slimline.techniques.teacher_targets import (
    ATTENTION_PARTS,
    TeacherTargets,
    last_layer_projections,
)
from slimline.techniques.text_variants import with_variants
from slimline.training import device as training_device
from slimline.training.loop import fit, seed_everything

TEACHER_CACHE_BYTES = 2 * 1024 ** 3


def layer_map(kept: list[int] | None, student_layers: int, teacher_layers: int) -> dict[int, int]:
    """Student hidden-state index -> teacher hidden-state index (index 0 is the embeddings'
    output, i the output of layer i - 1; see the module docstring). `kept`: the teacher layers
    the student was initialised from, or None (one to one when the depths match, else spread
    evenly with the last on the last)."""
    if kept is not None:
        if len(kept) != student_layers:
            raise SlimlineError(f"distillation layer map: {len(kept)} kept layers for a student "
                                f"of {student_layers}")
        return {i + 1: (kept[i + 1] if i + 1 < len(kept) else teacher_layers)
                for i in range(student_layers)}
    return {i: round(i * teacher_layers / student_layers) for i in range(1, student_layers + 1)}


def _masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(student.dtype)
    return ((student - teacher) ** 2 * weights).sum() / (weights.sum() * student.shape[-1])


class _Capture:
    """The outputs of the last layer's query, key and value projections on every forward."""

    def __init__(self, model: TextModel):
        modules = last_layer_projections(model)
        if not modules:
            raise SlimlineError("distill.attention_weight: the last layer has no query/key/value "
                                "projections to compare; set it to 0")
        self.values: dict[str, torch.Tensor] = {}
        self.handles = [module.register_forward_hook(self._hook(part))
                        for part, module in modules.items()]

    def _hook(self, part):
        def record(module, inputs, output):
            self.values[part] = output
        return record

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _relations(vectors: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    """log softmax(X X^T / sqrt(d)) per relation head, padding masked out: (B, heads, T, T)."""
    batch, length, width = vectors.shape
    split = vectors.view(batch, length, heads, width // heads).transpose(1, 2)
    scores = split @ split.transpose(-1, -2) / (width // heads) ** 0.5
    scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def attention_relation_loss(student: dict, teacher: dict, heads: int,
                            mask: torch.Tensor) -> torch.Tensor:
    """Mean over q-q, k-k, v-v of KL(teacher relation || student relation), real tokens only."""
    rows = mask[:, None, :, None].to(torch.float32)
    total = 0.0
    for part in ATTENTION_PARTS:
        target = _relations(teacher[part].float(), heads, mask)
        predicted = _relations(student[part].float(), heads, mask)
        kl = (target.exp() * (target - predicted)).sum(-1, keepdim=True)
        total = total + (kl * rows).sum() / (rows.sum() * heads)
    return total / len(ATTENTION_PARTS)


class TeacherCache:
    """The teacher's pooled embedding and mapped hidden states (and last-layer projections) per
    batch, computed once and kept while they fit in `budget` bytes."""

    def __init__(self, budget: int = TEACHER_CACHE_BYTES):
        self.entries: dict[bytes, tuple] = {}
        self.budget, self.used, self.hits, self.misses = budget, 0, 0, 0

    @staticmethod
    def key(inputs: dict[str, torch.Tensor]) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        for tensor in inputs.values():
            digest.update(tensor.detach().cpu().numpy().tobytes())
            digest.update(str(tuple(tensor.shape)).encode())
        return digest.digest()

    def get(self, key: bytes):
        entry = self.entries.get(key)
        self.hits += entry is not None
        self.misses += entry is None
        return entry

    def put(self, key: bytes, entry: tuple) -> None:
        size = sum(tensor.numel() * tensor.element_size() for tensor in _tensors(entry))
        if self.used + size <= self.budget:
            self.entries[key], self.used = entry, self.used + size


def _tensors(entry):
    for item in entry:
        if isinstance(item, torch.Tensor):
            yield item
        elif isinstance(item, dict):
            yield from item.values()


def encoder_distillation_loss(teacher: TextModel, mapping: dict[int, int], config,
                              cache: TeacherCache | TeacherTargets, relation_heads: int = 1):
    """loss_fn(model, inputs, labels) for the training loop: see the module docstring. `config`
    has the loss weights (DistillParams, LossWeights). With TeacherTargets the labels are the
    batch's row numbers in the corpus the targets were computed on; with a TeacherCache they
    are unused and the teacher runs on a batch it has not seen."""
    teacher_capture = (_Capture(teacher) if config.attention_weight
                       and not isinstance(cache, TeacherTargets) else None)
    student_capture: dict[int, _Capture] = {}
    wanted = sorted(set(mapping.values()))

    def teacher_targets(inputs, rows):
        if isinstance(cache, TeacherTargets):   # the split's labels are the corpus row numbers
            return cache.batch(rows, inputs["attention_mask"].shape[1],
                               inputs["attention_mask"].device)
        key = TeacherCache.key(inputs)
        entry = cache.get(key)
        if entry is None:
            training_device.follow(teacher, inputs["input_ids"])
            with torch.inference_mode():
                out = teacher.model(input_ids=inputs["input_ids"],
                                    attention_mask=inputs["attention_mask"],
                                    output_hidden_states=True)
                pooled = mean_pool(out.last_hidden_state, inputs["attention_mask"]).clone()
                hidden = {index: out.hidden_states[index].clone() for index in wanted}
                parts = ({part: value.clone() for part, value in teacher_capture.values.items()}
                         if teacher_capture else {})
            entry = (pooled, hidden, parts)
            cache.put(key, entry)
        return entry

    def loss_fn(model, inputs, labels):
        mask = inputs["attention_mask"]
        pooled_target, hidden_target, parts_target = teacher_targets(inputs, labels)
        if config.attention_weight and id(model) not in student_capture:
            student_capture[id(model)] = _Capture(model)
        out = model.model(input_ids=inputs["input_ids"], attention_mask=mask,
                          output_hidden_states=True)
        pooled = mean_pool(out.last_hidden_state, mask)
        loss = 1 - F.cosine_similarity(pooled, pooled_target, dim=1).mean()
        if config.hidden_weight:
            loss = loss + config.hidden_weight * sum(
                _masked_mse(out.hidden_states[student], hidden_target[teacher_index], mask)
                for student, teacher_index in mapping.items()) / len(mapping)
        if config.attention_weight:
            loss = loss + config.attention_weight * attention_relation_loss(
                student_capture[id(model)].values, parts_target, relation_heads, mask)
        return loss

    def release():
        for capture in [*student_capture.values(), *([teacher_capture] if teacher_capture else [])]:
            capture.remove()

    loss_fn.release = release
    return loss_fn


@dataclass(frozen=True)
class LossWeights:
    hidden_weight: float = 1.0
    attention_weight: float = 0.0


def recovery_loss(reference: TextModel, hidden_weight: float = 1.0):
    """The fine-tuning loss after a structural cut of an encoder (prune, decompose): stay close
    to `reference`, the model before the cut (frozen), in the pooled embedding and in every
    layer's hidden states, one to one (the depth is unchanged)."""
    reference = frozen(reference)
    depth = len(encoder_layers(reference)[1])
    return encoder_distillation_loss(reference, layer_map(None, depth, depth),
                                     LossWeights(hidden_weight), TeacherCache())


@dataclass
class EncoderDistillReport:
    layer_map: dict[int, int]
    loss_history: list[float]
    trainable_parameters: int
    training_texts: int
    teacher_runs: int       # teacher forward passes while its targets were built (none after)


def training_corpus(train: Split, config: DistillParams, seed: int, log=print) -> dict:
    """The texts the student learns from: the training split's, and with distill.text_variants
    edited variants of each for the teacher to embed too."""
    if "input_ids" not in train.inputs or "attention_mask" not in train.inputs:
        raise SlimlineError("encoder distillation needs text inputs (input_ids, attention_mask)")
    if not config.text_variants:
        return train.inputs
    inputs = with_variants(train.inputs, config.text_variants, seed)
    log(f"distill (encoder): {len(inputs['input_ids']):,} training texts: each text and "
        f"{config.text_variants} edited variants of it (distill.text_variants)")
    return inputs


def teacher_targets(teacher: TextModel, corpus: dict, config: DistillParams,
                    mappings: list[dict[int, int]], log=print) -> TeacherTargets:
    """The teacher's targets on `corpus`, once for every student whose layer map is in
    `mappings` (the union of the hidden states they are matched to)."""
    states = sorted({index for mapping in mappings for index in mapping.values()}) \
        if config.hidden_weight else []
    targets = TeacherTargets(frozen(teacher), corpus, states,
                             attention=bool(config.attention_weight), log=log)
    where = training_device.current()
    if where.is_gpu:      # built on the GPU; kept there, a step reads no disk (hold_on)
        targets.hold_on(where.device, log)
    return targets


def frozen(model: TextModel) -> TextModel:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def distill_encoder(student: TextModel, teacher: TextModel, train: Split, config: DistillParams,
                    *, seed: int, kept_layers: list[int] | None = None,
                    targets: TeacherTargets | None = None, log=print) -> EncoderDistillReport:
    """Train `student` (in place) to embed `train`'s texts as `teacher` does (labels unused).
    `targets`: the teacher's targets already computed on the training corpus (several students
    share them); else they are computed here and removed afterwards."""
    teacher = frozen(teacher)
    student_depth = len(encoder_layers(student)[1])
    teacher_depth = len(encoder_layers(teacher)[1])
    mapping = layer_map(kept_layers, student_depth, teacher_depth)
    relation_heads = teacher.model.config.num_attention_heads
    log(f"distill (encoder): loss = 1 - cosine of pooled embeddings + {config.hidden_weight:g} x "
        f"hidden-state MSE (student -> teacher hidden states {mapping}) + "
        f"{config.attention_weight:g} x last-layer attention relations; word embeddings "
        f"{'frozen' if config.freeze_embeddings else 'trained'}")
    own_targets = targets is None
    if own_targets:
        targets = teacher_targets(teacher, training_corpus(train, config, seed, log), config,
                                  [mapping], log)
    embeddings = student.model.get_input_embeddings()
    frozen_table = config.freeze_embeddings and embeddings is not None
    if frozen_table:
        embeddings.weight.requires_grad_(False)
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    loss_fn = encoder_distillation_loss(teacher, mapping, config, targets, relation_heads)
    count = len(targets.inputs["input_ids"])
    # The labels are the row numbers: the loss reads each text's teacher targets by its row.
    corpus = Split(targets.inputs, np.arange(count, dtype=np.int64))
    seed_everything(seed)
    try:
        history = fit(student, corpus, config.train, seed=seed, loss_fn=loss_fn,
                      description="distill", log=log)
    finally:
        loss_fn.release()
        if frozen_table:
            embeddings.weight.requires_grad_(True)
        if own_targets:
            targets.remove()
    log(f"distill (encoder): {trainable:,} trainable parameters, {count:,} training texts; the "
        f"teacher ran {targets.teacher_batches} batches to build its targets and none in the "
        f"{config.train.epochs} epochs")
    return EncoderDistillReport(mapping, history, trainable, count, targets.teacher_batches)
