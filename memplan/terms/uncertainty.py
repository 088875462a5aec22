"""How far a real run's device peak lands from the estimate: the calibrated range of the estimate's peak_bytes."""

from __future__ import annotations

import math

#: a family of jobs gets its own range only with at least this many stored runs; smaller ones use all runs
MIN_FAMILY_RUNS = 5


def calibrated_range_bytes(peak_bytes: int, low_ratio: float, high_ratio: float) -> tuple[int, int]:
    """[low, high] = [floor(peak_bytes * low_ratio), ceil(peak_bytes * high_ratio)], never excluding peak_bytes.

    low_ratio and high_ratio are the smallest and the largest measured / estimated device peak (NVML peak against
    peak_bytes) over the stored CUDA runs of the job's family (`memplan validate` computes them from profiles/ into
    memplan/catalog/calibration.json). Every stored run lies inside its family's range by construction; for a new
    run drawn like the k stored ones, the chance that it lands above the largest of them is 1/(k+1)
    (`new_run_coverage`).
    Example: 15,506,731,008 B estimated (14.44 GiB), in a family whose runs measured 0.918x to
    1.136x their estimates: [14,235,179,065, 17,615,646,426] B (13.26 to 16.41 GiB).
    """
    low = math.floor(peak_bytes * low_ratio)
    high = math.ceil(peak_bytes * high_ratio)
    return min(low, peak_bytes), max(high, peak_bytes)


def new_run_coverage(runs: int) -> float:
    """The chance that a new run, exchangeable with `runs` stored ones, lands at or below the largest of them:
    k / (k + 1) (order statistics: each of the k + 1 runs is equally likely to be the largest).

    Example: 19 stored runs -> 0.95; 5 -> 0.833.
    """
    return runs / (runs + 1) if runs > 0 else 0.0


def ratio_bounds(ratios: list[float]) -> tuple[float, float]:
    """(low_ratio, high_ratio) from measured / estimated ratios, rounded outwards to 0.001 so the rounded range
    still holds every run.

    Example: [0.9187, 1.0412, 1.1351] -> (0.918, 1.136).
    """
    return math.floor(min(ratios) * 1000) / 1000, math.ceil(max(ratios) * 1000) / 1000
