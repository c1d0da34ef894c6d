"""Caps on what holds a request open: event streams and ?wait long polls.

Each costs the API process a connection and some memory for as long as it lasts, so one
token cannot take them all (TANDEM_STREAMS_PER_TOKEN) and a process takes no more than it
can serve (TANDEM_STREAMS_PER_PROCESS). The counts are in-process: the caps are per API
process. Past either, 429 with Retry-After; a slot is given back when its stream or wait
ends, however it ends (the client hanging up included).
"""

from __future__ import annotations

from collections import Counter
from types import TracebackType

from app.errors import TooManyRequests

# Streams last long, so a slot may not free up at once: ask the client to wait a little.
RETRY_AFTER_S = 5.0


class TooManyStreams(TooManyRequests):
    code, title = "too_many_streams", "Too many open event streams and long polls"


class Slot:
    """One open stream or long poll; `release()` gives it back (once, however often called)."""

    def __init__(self, slots: StreamSlots, token_id: str) -> None:
        self._slots = slots
        self._token_id = token_id
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots._give_back(self._token_id)

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.release()


class StreamSlots:
    def __init__(self, per_token: int, per_process: int) -> None:
        self.per_token = per_token
        self.per_process = per_process
        self._by_token: Counter[str] = Counter()
        self._total = 0

    @property
    def open(self) -> int:
        return self._total

    def take(self, token_id: str) -> Slot:
        if self._by_token[token_id] >= self.per_token:
            raise TooManyStreams(
                f"this token already holds {self.per_token} open event streams and long polls "
                "on this API process; close one or retry later",
                retry_after=RETRY_AFTER_S,
                limit=self.per_token,
            )
        if self._total >= self.per_process:
            raise TooManyStreams(
                f"this API process already holds {self.per_process} open event streams and "
                "long polls; retry later",
                retry_after=RETRY_AFTER_S,
                limit=self.per_process,
            )
        self._by_token[token_id] += 1
        self._total += 1
        return Slot(self, token_id)

    def _give_back(self, token_id: str) -> None:
        self._total -= 1
        self._by_token[token_id] -= 1
        if self._by_token[token_id] <= 0:
            del self._by_token[token_id]
