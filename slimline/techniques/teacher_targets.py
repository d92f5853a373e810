"""The teacher's distillation targets for a whole corpus, computed once and kept on disk.

An encoder's distillation step on a CPU is mostly the teacher's forward pass when the teacher
runs on every batch of every epoch. Here it runs once, over the corpus in length-sorted batches
(little padding), and writes per text:

* the pooled embedding, (texts, width);
* the hidden states the students are matched to, each text at its own length only, packed one
  token after another: (tokens, states, width) with an offset per text;
* optionally the last layer's query/key/value projections (distill.attention_weight).

All fp16, memory-mapped: an epoch reads the rows of its batch and the page cache does the rest,
so the corpus need not fit in memory. Size: tokens x (states + 3 with attention) x width x 2
bytes (all-MiniLM-L6-v2, 20,000 texts of 23.5 tokens on average, 6 states: 2.2 GB), logged before
it is built. The files live in a temporary folder that is removed when training ends.

On a CUDA GPU the teacher runs in batches sized by tokens (training.gpu_tokens_per_batch), and
the targets are then copied into GPU memory where they fit in half of what is free (hold_on):
a step gathers its rows there, with no disk read or host copy on its path. On a CPU nothing of
this changes.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from slimline.errors import SlimlineError
from slimline.models.huggingface import TextModel, encoder_layers, mean_pool
from slimline.training import device as training_device
from slimline.training.batching import token_batches

ATTENTION_PARTS = ("query", "key", "value")
BUILD_BATCH = 64          # texts per teacher forward while the targets are built
PROGRESS_SECONDS = 30.0
COPY_CHUNK_TOKENS = 65536  # tokens per host-to-GPU copy in hold_on (no second host copy)


def last_layer_projections(model: TextModel) -> dict[str, torch.nn.Module]:
    """The last transformer layer's query, key and value projections (None where it has none)."""
    layer = encoder_layers(model)[1][-1]
    found = {}
    for name, module in layer.named_modules():
        part = name.rsplit(".", 1)[-1]
        if part in ATTENTION_PARTS and part not in found:
            found[part] = module
    return found if set(found) == set(ATTENTION_PARTS) else {}


class TeacherTargets:
    """Memory-mapped fp16 targets of `teacher` on `inputs` (input_ids, attention_mask: numpy
    int64 (texts, max_length), right-padded). `states`: the teacher hidden-state indices to keep
    (0: the embeddings' output, i: layer i's); `attention`: also the last layer's q/k/v."""

    def __init__(self, teacher: TextModel, inputs: dict[str, np.ndarray], states: list[int], *,
                 attention: bool = False, folder: Path | None = None, log=print):
        self.inputs, self.states = inputs, sorted(set(states))
        self.folder = Path(tempfile.mkdtemp(prefix="slimline-teacher-", dir=folder))
        self.teacher_batches = 0          # teacher forward passes (counted: built once)
        self.held: dict[str, torch.Tensor] = {}   # the targets in GPU memory (hold_on)
        mask = inputs["attention_mask"]
        lengths = mask.sum(1).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        width = teacher.model.config.hidden_size
        tokens, count = int(self.offsets[-1]), len(lengths)
        per_token = len(self.states) + (len(ATTENTION_PARTS) if attention else 0)
        log(f"teacher targets: {count:,} texts, {tokens:,} tokens, pooled + {len(self.states)} "
            f"hidden states {self.states}{' + last-layer q/k/v' if attention else ''}, fp16 on "
            f"disk: {(tokens * per_token + count) * width * 2 / 1e9:.2f} GB in {self.folder}")
        try:
            self.pooled = self._file("pooled", (count, width))
            self.hidden = self._file("hidden", (tokens, len(self.states), width)) \
                if self.states else None
            self.parts = self._file("parts", (tokens, len(ATTENTION_PARTS), width)) \
                if attention else None
            self._build(teacher, inputs, lengths, log)
        except BaseException:
            self.remove()
            raise

    def _file(self, name: str, shape: tuple[int, ...]) -> np.memmap:
        return np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+",
                                         dtype=np.float16, shape=shape)

    @torch.inference_mode()
    def _build(self, teacher: TextModel, inputs, lengths: np.ndarray, log) -> None:
        teacher = teacher.eval()
        where = training_device.current().device
        training_device.place(teacher)
        projections = last_layer_projections(teacher) if self.parts is not None else {}
        if self.parts is not None and not projections:
            raise SlimlineError("distill.attention_weight: the last layer has no query/key/value "
                                "projections to compare; set it to 0")
        captured: dict[str, torch.Tensor] = {}
        handles = [module.register_forward_hook(
            lambda module, args, output, part=part: captured.__setitem__(part, output))
            for part, module in projections.items()]
        tokens = training_device.current().tokens_per_batch
        if tokens:
            batches = [rows.numpy() for rows in
                       token_batches(torch.from_numpy(lengths), tokens, BUILD_BATCH)]
        else:
            order = np.argsort(lengths, kind="stable")
            batches = [order[start:start + BUILD_BATCH]
                       for start in range(0, len(order), BUILD_BATCH)]
        started = last = time.perf_counter()
        try:
            for done, rows in enumerate(batches, 1):
                longest = max(int(lengths[rows].max()), 1)
                ids = torch.from_numpy(inputs["input_ids"][rows, :longest]).to(where)
                mask = torch.from_numpy(inputs["attention_mask"][rows, :longest]).to(where)
                out = teacher.model(input_ids=teacher.table_rows(ids), attention_mask=mask,
                                    output_hidden_states=bool(self.states))
                self.teacher_batches += 1
                self.pooled[rows] = mean_pool(out.last_hidden_state, mask).cpu().numpy()
                stacked = {"hidden": (torch.stack([out.hidden_states[i] for i in self.states], 2)
                                      if self.states else None),
                           "parts": (torch.stack([captured[p] for p in ATTENTION_PARTS], 2)
                                     if projections else None)}
                for name, values in stacked.items():
                    if values is not None:
                        self._write_tokens(getattr(self, name), rows, lengths,
                                           values.to(torch.float16).cpu().numpy())
                now = time.perf_counter()
                if now - last >= PROGRESS_SECONDS or done == len(batches):
                    last, elapsed = now, now - started
                    log(f"teacher targets: batch {done}/{len(batches)} "
                        f"({100 * done / len(batches):.0f}%), {elapsed:.0f} s elapsed, about "
                        f"{elapsed / done * (len(batches) - done):.0f} s left")
        finally:
            for handle in handles:
                handle.remove()
            teacher.to("cpu")

    def _write_tokens(self, target: np.memmap, rows, lengths, values: np.ndarray) -> None:
        for position, row in enumerate(rows):
            start = self.offsets[row]
            target[start:start + lengths[row]] = values[position, :lengths[row]]

    def _read_tokens(self, source: np.memmap, rows: np.ndarray, length: int) -> np.ndarray:
        """(batch, length, fields, width) float32, each text's tokens then zeros (padding)."""
        out = np.zeros((len(rows), length, *source.shape[1:]), np.float32)
        for position, row in enumerate(rows):
            start, end = self.offsets[row], self.offsets[row + 1]
            count = min(end - start, length)
            out[position, :count] = source[start:start + count]
        return out

    def hold_on(self, device, log=print) -> bool:
        """Copy the targets into `device`'s memory where they fit in half of what is free there
        (the student and its optimizer need the rest); True where they now live there."""
        files = {name: getattr(self, name) for name in ("pooled", "hidden", "parts")
                 if getattr(self, name) is not None}
        size = sum(values.nbytes for values in files.values())
        if torch.device(device).type == "cuda":
            free = torch.cuda.mem_get_info(device)[0]
            if size > free / 2:
                log(f"teacher targets: {size / 1e9:.2f} GB do not fit in half of the "
                    f"{free / 1e9:.1f} GB free on {device}: read from disk each step")
                return False
        for name, values in files.items():
            held = torch.empty(values.shape, dtype=torch.float16, device=device)
            for start in range(0, len(values), COPY_CHUNK_TOKENS):
                held[start:start + COPY_CHUNK_TOKENS] = torch.from_numpy(
                    np.ascontiguousarray(values[start:start + COPY_CHUNK_TOKENS])).to(device)
            self.held[name] = held
        self.held["offsets"] = torch.from_numpy(self.offsets).to(device)
        log(f"teacher targets: {size / 1e9:.2f} GB held in {device} memory for the epochs")
        return True

    def _gather_tokens(self, source: torch.Tensor, rows: torch.Tensor,
                       length: int) -> torch.Tensor:
        """_read_tokens on the held targets, where they live: (batch, length, fields, width)
        float32, each text's tokens then zeros."""
        offsets = self.held["offsets"]
        starts, ends = offsets[rows], offsets[rows + 1]
        positions = starts[:, None] + torch.arange(length, device=source.device)[None, :]
        real = positions < ends[:, None]
        values = source[positions.clamp(max=len(source) - 1)].float()
        return values * real[:, :, None, None]

    def batch(self, rows: torch.Tensor, length: int, device) -> tuple:
        """(pooled, {state index: hidden}, {part: projection}) of the texts `rows` (indices into
        the corpus), padded to `length` tokens, as float32 tensors on `device`."""
        if self.held:
            return self._held_batch(rows, length, device)
        rows = rows.cpu().numpy()
        pooled = torch.from_numpy(self.pooled[rows].astype(np.float32)).to(device)
        hidden, parts = {}, {}
        if self.hidden is not None:
            values = torch.from_numpy(self._read_tokens(self.hidden, rows, length)).to(device)
            hidden = {state: values[:, :, slot] for slot, state in enumerate(self.states)}
        if self.parts is not None:
            values = torch.from_numpy(self._read_tokens(self.parts, rows, length)).to(device)
            parts = {part: values[:, :, slot] for slot, part in enumerate(ATTENTION_PARTS)}
        return pooled, hidden, parts

    def _held_batch(self, rows: torch.Tensor, length: int, device) -> tuple:
        rows = rows.to(self.held["offsets"].device)
        pooled = self.held["pooled"][rows].float().to(device)
        hidden, parts = {}, {}
        if "hidden" in self.held:
            values = self._gather_tokens(self.held["hidden"], rows, length).to(device)
            hidden = {state: values[:, :, slot] for slot, state in enumerate(self.states)}
        if "parts" in self.held:
            values = self._gather_tokens(self.held["parts"], rows, length).to(device)
            parts = {part: values[:, :, slot] for slot, part in enumerate(ATTENTION_PARTS)}
        return pooled, hidden, parts

    def remove(self) -> None:
        self.held = {}
        for name in ("pooled", "hidden", "parts"):
            setattr(self, name, None)
        shutil.rmtree(self.folder, ignore_errors=True)
