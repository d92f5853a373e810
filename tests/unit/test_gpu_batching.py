"""A GPU used as a GPU (issue 31): on CUDA, text batches sized by tokens with the learning rate
scaled; on a CPU nothing changes. No GPU runs these tests: the sizing, the scaling and the
training loop's use of them are checked on the CPU with the device's setting forced."""
import pytest
import torch
from torch import nn

from slimline.config.params import TrainParams
from slimline.data.splits import Split
from slimline.training import device
from slimline.training.batching import scaled_learning_rate, token_batches
from slimline.training.loop import fit


def test_batches_hold_up_to_the_token_budget_and_at_least_batch_size_texts():
    lengths = torch.tensor([30, 5, 5, 12, 64, 8, 5, 40, 20, 7] * 20)
    batches = token_batches(lengths, max_tokens=256, min_texts=4)
    everyone = torch.cat(batches)
    assert sorted(everyone.tolist()) == list(range(200))             # each text once
    for batch in batches[:-1]:
        longest = int(lengths[batch].max())
        assert len(batch) >= 4
        assert len(batch) * longest <= 256 or len(batch) == 4        # 4 x 64 tokens: the floor
    # Short texts share a batch by the dozen, long ones come four at a time.
    assert len(batches[0]) == 256 // 5 and len(batches[-1]) == 4
    assert [int(lengths[b].max()) for b in batches] == sorted(
        int(lengths[b].max()) for b in batches)


def test_the_learning_rate_grows_with_the_batch():
    assert scaled_learning_rate(3e-4, "adamw", 32, 128) == pytest.approx(6e-4)    # sqrt(4)
    assert scaled_learning_rate(0.1, "sgd", 64, 256) == pytest.approx(0.4)        # linear
    assert scaled_learning_rate(3e-4, "adamw", 32, 32) == pytest.approx(3e-4)


def test_token_batches_are_for_cuda_only():
    assert device.resolve("auto", cuda_available=False, tokens_per_batch=4096).tokens_per_batch \
        is None
    assert device.resolve("cpu", cuda_available=True, tokens_per_batch=4096).tokens_per_batch \
        is None
    gpu = device.resolve("auto", cuda_available=True, tokens_per_batch=4096)
    assert gpu.tokens_per_batch == 4096 and "4,096 tokens" in gpu.describe()


def train_and_record(tokens_per_batch):
    """fit() on 100 texts with the device's token budget forced (on the CPU): each step's batch
    size and the log."""
    lengths = torch.tensor([4, 9, 16, 3, 12] * 20)
    mask = (torch.arange(16)[None, :] < lengths[:, None]).long()
    texts = Split({"input_ids": mask.numpy().copy(), "attention_mask": mask.numpy()},
                  torch.arange(100).numpy())
    model = nn.Linear(1, 1)
    sizes, lines = [], []

    def loss_fn(model, inputs, labels):
        sizes.append(len(labels))
        return (model.weight ** 2).sum() + 0 * model.bias.sum()

    previous = device.current()
    device._current = device.TrainingDevice(torch.device("cpu"), False, "test",
                                            tokens_per_batch)
    try:
        fit(model, texts, TrainParams(epochs=2, batch_size=5, learning_rate=1e-3,
                                      optimizer="adamw", max_shift=0),
            seed=0, loss_fn=loss_fn, log=lines.append)
    finally:
        device._current = previous
    return sizes, lines


def test_the_training_loop_takes_token_sized_batches_and_scales_its_peak_rate():
    sizes, lines = train_and_record(tokens_per_batch=None)     # the CPU, as before
    assert sizes == [5] * 40 and not any("tokens" in line for line in lines)
    sizes, lines = train_and_record(tokens_per_batch=80)
    steps = len(sizes) // 2
    assert sum(sizes) == 200 and steps < 20 and min(sizes) >= 5
    expected = 1e-3 * (100 / steps / 5) ** 0.5
    assert any(f"{steps} batches of up to 80 tokens" in line
               and f"peak learning rate {expected:.3g}" in line for line in lines)
