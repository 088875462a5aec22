"""The formulas: small pure functions, one module per family, bytes out.

Each docstring states the formula, its source (paper and equation, or the library code it models) and a worked
example that `tests/terms/` repeats. Nothing outside this package computes a byte count.
"""
