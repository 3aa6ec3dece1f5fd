"""Rolling indicators with O(1) (amortised) work per update."""

from __future__ import annotations

from collections import deque

from domain.state import StateModel


class RollingExtremeState(StateModel):
    index: int  # values seen
    queue: list[tuple[int, float]]  # the monotonic deque: (index, value), oldest first


class RollingExtreme:
    """Maximum (or minimum) of the last ``length`` values, with a monotonic deque."""

    __slots__ = ("_index", "_is_max", "_queue", "length")

    def __init__(self, length: int, *, maximum: bool) -> None:
        if length < 1:
            raise ValueError("length must be at least 1")
        self.length = length
        self._is_max = maximum
        self._queue: deque[tuple[int, float]] = deque()
        self._index = 0

    def update(self, value: float) -> float | None:
        queue = self._queue
        if self._is_max:
            while queue and queue[-1][1] <= value:
                queue.pop()
        else:
            while queue and queue[-1][1] >= value:
                queue.pop()
        queue.append((self._index, value))
        if queue[0][0] <= self._index - self.length:
            queue.popleft()
        self._index += 1
        if self._index < self.length:
            return None
        return queue[0][1]

    def state(self) -> RollingExtremeState:
        return RollingExtremeState(index=self._index, queue=list(self._queue))

    def restore(self, state: RollingExtremeState) -> None:
        if len(state.queue) > min(state.index, self.length):
            raise ValueError(f"a window of {self.length} holds no {len(state.queue)} values")
        self._index = state.index
        self._queue = deque(state.queue)

    @property
    def value(self) -> float | None:
        if self._index < self.length:
            return None
        return self._queue[0][1]
