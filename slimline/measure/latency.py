"""The one place that times models: ONNX Runtime sessions, timed interleaved.

Every round runs each model in turn, in rotating order, so machine noise hits all models alike;
ratios are taken per round (slimline/measure/stats.py), never across separate runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from slimline.data.splits import Inputs, as_inputs


@dataclass
class Timing:
    """Per-call latencies (ms) of one model, grouped by interleaved round."""
    rounds: list[np.ndarray]

    @property
    def all(self) -> np.ndarray:
        return np.concatenate(self.rounds)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.all, q))


def time_interleaved(sessions: dict, inputs: Inputs | np.ndarray, *, runs: int, warmup: int,
                     rounds: int) -> dict[str, Timing]:
    """Time `runs` calls of each session on `inputs` (name -> array), in interleaved rounds."""
    feeds = {name: as_inputs(inputs) for name in sessions}
    for name, session in sessions.items():
        for _ in range(warmup):
            session.run(None, feeds[name])
    per_round = -(-runs // rounds)
    samples = {name: [] for name in sessions}
    names = list(sessions)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            session, feed, times = sessions[name], feeds[name], np.empty(per_round)
            for call in range(per_round):
                start = time.perf_counter_ns()
                session.run(None, feed)
                times[call] = (time.perf_counter_ns() - start) / 1e6
            samples[name].append(times)
    return {name: Timing(rounds) for name, rounds in samples.items()}
