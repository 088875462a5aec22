"""A cache bounded by the bytes it holds, not by its entry count: introspected models differ in size by 1000x (a
pasted 300-layer config holds ~2 MB, GPT-2 ~0.2 MB), so a count bound lets a flood of distinct configs grow
the process without limit."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable


class BytesLRU:
    """Least-recently-used entries go first once the costs of what it holds pass `max_bytes`. Caches that hold
    its values elsewhere (memoised per model) register a clear function with `on_evict`, so an evicted value is
    not kept alive by them."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._on_evict: list[Callable[[], None]] = []
        self._on_put: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self._data)

    def on_evict(self, clear: Callable[[], None]) -> None:
        self._on_evict.append(clear)

    def on_put(self, call: Callable[[], None]) -> None:
        """Call `call()` after each new entry (a service freezes the long-lived objects then: memplan api)."""
        if call not in self._on_put:
            self._on_put.append(call)

    def get(self, key: Hashable) -> Any:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            self._data.move_to_end(key)
            return hit[0]

    def put(self, key: Hashable, value: Any, cost: int) -> None:
        evicted = False
        with self._lock:
            if key in self._data:
                self.bytes -= self._data.pop(key)[1]
            while self._data and self.bytes + cost > self.max_bytes:
                self.bytes -= self._data.popitem(last=False)[1][1]
                evicted = True
            self._data[key] = (value, cost)
            self.bytes += cost
        if evicted:
            for clear in self._on_evict:
                clear()
        for call in self._on_put:
            call()

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.bytes = 0
        for clear in self._on_evict:
            clear()
