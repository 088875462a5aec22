"""Replay an alloc/free log through a model of PyTorch's CUDA caching allocator to predict max_memory_reserved.

The rules modelled (c10/cuda/CUDACachingAllocator.cpp, torch 2.x, one stream, default settings):
- every request is rounded up to a multiple of 512 B (`round_size`, kMinBlockSize);
- requests <= 1 MiB (kSmallSize) use the small pool, whose segments are 2 MiB (kSmallBuffer); larger requests use
  the large pool: a request under 10 MiB (kMinLargeAlloc) gets a 20 MiB segment (kLargeBuffer), a larger one a
  segment of its size rounded up to 2 MiB (kRoundLarge) (`get_allocation_size`);
- a request takes the smallest free cached block of its pool that is large enough (best fit, `get_free_block`,
  ties to the lower segment and address; with no max_split_size set, the default, any larger block qualifies);
- the block is split when the remainder is >= 512 B (small pool) or > 1 MiB (large pool) (`shouldSplit`);
- a freed block merges with free neighbours of the same segment (`try_merge_blocks`);
- segments are never returned (no empty_cache, no OOM retry), so reserved only grows.

With `expandable_segments` (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True) each pool is one segment that grows
in 2 MiB pages (small) or 20 MiB pages (large) at its end: modelled as a best fit inside the segment, then growth
of the end (a free tail block is extended rather than left behind).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable

MIB = 2**20
MIN_BLOCK = 512
SMALL_SIZE = 1 * MIB
SMALL_BUFFER = 2 * MIB
LARGE_BUFFER = 20 * MIB
MIN_LARGE_ALLOC = 10 * MIB
ROUND_LARGE = 2 * MIB


def round_size(nbytes: int) -> int:
    """Example: round_size(100) == 512; round_size(1000) == 1024."""
    return max(MIN_BLOCK, -(-nbytes // MIN_BLOCK) * MIN_BLOCK)


def segment_size(size: int) -> int:
    """The cudaMalloc size for a request with no cached block (`get_allocation_size`).

    Example: 4 KiB -> 2 MiB; 5 MiB -> 20 MiB; 50.5 MiB -> 52 MiB."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-size // ROUND_LARGE) * ROUND_LARGE


@dataclass
class _Block:
    segment: int
    offset: int
    size: int
    small: bool
    free: bool = True
    prev: "_Block | None" = None
    next: "_Block | None" = None


@dataclass
class _Pool:
    small: bool
    free: list[tuple[int, int, int]] = field(default_factory=list)  # sorted (size, segment, offset)
    blocks: dict[tuple[int, int], _Block] = field(default_factory=dict)  # the free blocks

    def add_free(self, b: _Block) -> None:
        b.free = True
        bisect.insort(self.free, (b.size, b.segment, b.offset))
        self.blocks[(b.segment, b.offset)] = b

    def remove_free(self, b: _Block) -> None:
        i = bisect.bisect_left(self.free, (b.size, b.segment, b.offset))
        del self.free[i]
        del self.blocks[(b.segment, b.offset)]
        b.free = False

    def best_fit(self, size: int) -> _Block | None:
        i = bisect.bisect_left(self.free, (size, -1, -1))
        if i == len(self.free):
            return None
        _, seg, off = self.free[i]
        return self.blocks[(seg, off)]


@dataclass
class ReplayResult:
    max_reserved_bytes: int
    max_allocated_bytes: int
    segments: int


class CachingAllocator:
    def __init__(self, expandable_segments: bool = False):
        self.expandable = expandable_segments
        self.pools = {True: _Pool(small=True), False: _Pool(small=False)}
        self.reserved = self.allocated = 0
        self.max_reserved = self.max_allocated = 0
        self.segments = 0
        self._tails: dict[bool, _Block] = {}  # expandable: the last block of each pool's one segment
        self._live: dict[int, _Block] = {}

    def malloc(self, key: int, nbytes: int) -> None:
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        pool = self.pools[small]
        block = pool.best_fit(size)
        if block is None:
            block = self._grow(pool, size)
        else:
            pool.remove_free(block)
        remaining = block.size - size
        if remaining >= MIN_BLOCK if small else remaining > SMALL_SIZE:
            rest = _Block(block.segment, block.offset + size, remaining, small, True, block, block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next, block.size = rest, size
            pool.add_free(rest)
            if self._tails.get(small) is block:
                self._tails[small] = rest
        self._live[key] = block
        self.allocated += block.size
        self.max_allocated = max(self.max_allocated, self.allocated)

    def _grow(self, pool: _Pool, size: int) -> _Block:
        if self.expandable:
            page = SMALL_BUFFER if pool.small else LARGE_BUFFER
            tail = self._tails.get(pool.small)
            if tail is not None and tail.free:  # extend the free tail block to fit
                pool.remove_free(tail)
                grow = -(-(size - tail.size) // page) * page
                tail.size += grow
                self._reserve(grow)
                return tail
            grow = -(-size // page) * page
            end = (tail.offset + tail.size) if tail is not None else 0
            block = _Block(0, end, grow, pool.small, False, tail, None)
            if tail is not None:
                tail.next = block
            self._tails[pool.small] = block
            self._reserve(grow)
            return block
        seg = segment_size(size)
        self.segments += 1
        block = _Block(self.segments, 0, seg, pool.small, False)
        self._reserve(seg)
        return block

    def _reserve(self, nbytes: int) -> None:
        self.reserved += nbytes
        self.max_reserved = max(self.max_reserved, self.reserved)

    def free(self, key: int) -> None:
        block = self._live.pop(key, None)
        if block is None:
            return
        self.allocated -= block.size
        pool = self.pools[block.small]
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free:
                pool.remove_free(neighbour)
                if neighbour is block.prev:
                    block.offset, block.prev = neighbour.offset, neighbour.prev
                    if neighbour.prev is not None:
                        neighbour.prev.next = block
                else:
                    block.next = neighbour.next
                    if neighbour.next is not None:
                        neighbour.next.prev = block
                block.size += neighbour.size
                for small, tail in self._tails.items():
                    if tail is neighbour:
                        self._tails[small] = block
        pool.add_free(block)


def replay(events: Iterable[tuple[int, int]], expandable_segments: bool = False) -> ReplayResult:
    """Replay (key, nbytes) events (nbytes > 0: allocate, < 0: free) and return the maxima."""
    alloc = CachingAllocator(expandable_segments)
    for key, nbytes in events:
        if nbytes > 0:
            alloc.malloc(key, nbytes)
        else:
            alloc.free(key)
    return ReplayResult(alloc.max_reserved, alloc.max_allocated, alloc.segments)
