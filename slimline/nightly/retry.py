"""Retrying storage operations that fail because the endpoint is down, with exponential back-off.

An S3 endpoint that restarts, fails over or sheds load answers again within seconds to minutes;
a night should ride that out inside the task instead of failing. Only *transient* failures are
retried (endpoint unreachable, 5xx/SlowDown); refused credentials or a missing bucket fail at once,
because waiting does not fix them. Settings (environment, read by the step and publish commands):

  SLIMLINE_S3_ATTEMPTS             tries per storage operation, the first included (default 5)
  SLIMLINE_S3_RETRY_DELAY_SECONDS  wait before the first retry, doubled each time (default 5)
  SLIMLINE_S3_MAX_RETRY_DELAY_SECONDS  cap of one wait (default 120)

The defaults wait 5 + 10 + 20 + 40 = 75 s at most before giving up; Airflow's task retries
(SLIMLINE_RETRIES, minutes apart) are the next line of defence.

Below this loop, botocore retries each request itself (5 attempts by default, for every one of
the objects a push sends in parallel): a `dvc push` of 40 objects to a dead endpoint took 75 s
before it gave up. `limit_request_retries` caps that at 2 attempts (AWS_MAX_ATTEMPTS, unless it
is set), so the back-off above is the one that decides how long a night waits.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from slimline.errors import SlimlineError

T = TypeVar("T")


REQUEST_ATTEMPTS = "2"


def limit_request_retries() -> None:
    """Called first by the commands that talk to the storage (step, publish); their dvc children
    inherit it."""
    os.environ.setdefault("AWS_MAX_ATTEMPTS", REQUEST_ATTEMPTS)


class TransientStorageError(Exception):
    """The storage could not be reached or was overloaded; the same call may succeed later."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay: float = 5.0
    max_delay: float = 120.0

    @classmethod
    def from_env(cls, env: dict | None = None) -> RetryPolicy:
        env = os.environ if env is None else env

        def number(name: str, default: float, minimum: float) -> float:
            raw = env.get(name, "")
            try:
                value = float(raw) if raw.strip() else default
            except ValueError:
                raise SlimlineError(f"{name} = {raw!r} is not a number") from None
            if value < minimum:
                raise SlimlineError(f"{name} = {raw!r} must be at least {minimum:g}")
            return value

        return cls(attempts=int(number("SLIMLINE_S3_ATTEMPTS", cls.attempts, 1)),
                   first_delay=number("SLIMLINE_S3_RETRY_DELAY_SECONDS", cls.first_delay, 0),
                   max_delay=number("SLIMLINE_S3_MAX_RETRY_DELAY_SECONDS", cls.max_delay, 0))

    def delay(self, retry: int) -> float:
        """The wait before retry number `retry` (1-based): first_delay, doubled, capped."""
        return min(self.first_delay * 2 ** (retry - 1), self.max_delay)


def with_retries(action: Callable[[], T], what: str, policy: RetryPolicy,
                 log: Callable[[str], None], sleep: Callable[[float], None] = time.sleep) -> T:
    """Run `action`; on TransientStorageError wait and try again, up to policy.attempts in all.

    Gives up with a SlimlineError of one line: what failed, how often, for how long, and why.
    """
    waited = 0.0
    for attempt in range(1, policy.attempts + 1):
        try:
            return action()
        except TransientStorageError as exc:
            if attempt == policy.attempts:
                raise SlimlineError(f"{what} failed after {attempt} attempt(s) over {waited:.0f} s "
                                    f"of back-off: {exc} (more patience: SLIMLINE_S3_ATTEMPTS, "
                                    "SLIMLINE_S3_RETRY_DELAY_SECONDS)") from None
            delay = policy.delay(attempt)
            log(f"retry: {what} failed (attempt {attempt}/{policy.attempts}: {exc}); "
                f"trying again in {delay:.0f} s")
            sleep(delay)
            waited += delay
    raise AssertionError("unreachable: attempts >= 1")
