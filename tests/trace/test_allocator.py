"""The caching-allocator model (memplan.engines.trace.allocator) against the rules of CUDACachingAllocator.cpp, each case
worked by hand in its docstring."""

from memplan.engines.trace.allocator import MIB, replay, round_size, segment_size


def test_rounding_and_segment_sizes():
    assert round_size(1) == 512 and round_size(512) == 512 and round_size(1000) == 1024
    assert segment_size(4096) == 2 * MIB  # small pool: 2 MiB segments
    assert segment_size(5 * MIB) == 20 * MIB  # large, under 10 MiB: a 20 MiB segment
    assert segment_size(int(50.5 * MIB)) == 52 * MIB  # large: rounded up to 2 MiB


def test_small_requests_share_one_segment():
    """4,000 requests of 512 B: 2 MiB hold 4,096 of them, so one segment."""
    r = replay([(k, 100) for k in range(4000)])
    assert (r.max_reserved_bytes, r.max_allocated_bytes, r.segments) == (2 * MIB, 4000 * 512, 1)


def test_freed_block_is_reused_and_split():
    """30 + 30 MiB (two 30 MiB segments); free the first; 20 MiB takes it (best fit) and the 10 MiB rest stays
    free in it (a large-pool remainder > 1 MiB is split off); a 10 MiB request then fits that rest: 60 MiB."""
    r = replay([(1, 30 * MIB), (2, 30 * MIB), (1, -1), (3, 20 * MIB), (4, 10 * MIB)])
    assert r.max_reserved_bytes == 60 * MIB and r.segments == 2


def test_fragmentation_needs_a_new_segment():
    """Two 10 MiB blocks freed in separate segments cannot hold one 20 MiB request: a third segment."""
    r = replay([(1, 10 * MIB), (2, 10 * MIB), (1, -1), (2, -1), (3, 20 * MIB)])
    assert r.max_reserved_bytes == 40 * MIB and r.segments == 3


def test_free_neighbours_coalesce():
    """A 40 MiB segment split into 20 + 20 MiB; freeing both merges them, so 40 MiB fits without a new segment."""
    r = replay([(1, 40 * MIB), (1, -1), (2, 20 * MIB), (3, 20 * MIB), (2, -1), (3, -1), (4, 40 * MIB)])
    assert r.max_reserved_bytes == 40 * MIB and r.segments == 1


def test_expandable_segments_grow_in_place():
    """Expandable: the first 10 MiB maps one 20 MiB page and the second fits its free half; 30 MiB finds no free
    block and maps two more pages: 60 MiB. Fixed segments: a request of 10 MiB or more gets its own segment
    rounded to 2 MiB: 10 + 10 + 30 = 50 MiB."""
    events = [(1, 10 * MIB), (2, 10 * MIB), (3, 30 * MIB)]
    assert replay(events, expandable_segments=True).max_reserved_bytes == 60 * MIB
    assert replay(events).max_reserved_bytes == 50 * MIB
