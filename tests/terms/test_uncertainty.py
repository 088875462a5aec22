"""memplan.terms.uncertainty: the calibrated range, its coverage and the rounding of the measured ratios."""

from memplan.terms import uncertainty as u


def test_docstring_examples():
    low, high = u.calibrated_range_bytes(15_506_731_008, 0.918, 1.136)
    assert (low, high) == (14_235_179_065, 17_615_646_426)
    assert round(u.new_run_coverage(19), 3) == 0.95 and round(u.new_run_coverage(5), 3) == 0.833
    assert u.ratio_bounds([0.9187, 1.0412, 1.1351]) == (0.918, 1.136)


def test_range_never_excludes_the_estimate():
    assert u.calibrated_range_bytes(1000, 1.01, 1.2) == (1000, 1200)
    assert u.calibrated_range_bytes(1000, 0.9, 0.99) == (900, 1000)
    assert u.new_run_coverage(0) == 0.0


def test_rounded_bounds_hold_every_ratio():
    ratios = [0.91361, 0.95, 1.06171]
    low, high = u.ratio_bounds(ratios)
    assert low <= min(ratios) and high >= max(ratios) and high - max(ratios) < 0.001
