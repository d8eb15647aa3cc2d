"""f2f shared core: time base, motion parameters, featurizers and the `f2f` CLI.

Everything in this package is importable without torch: the serving path depends on it.
"""

__version__ = "0.1.0"
