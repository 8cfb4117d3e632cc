"""The hyperspherical (von Mises-Fisher) VAE: face data, distributions, model, training, figures.

Nothing in this package imports `mcmcp` or `analysis`: data flows from here outwards.
"""

__version__ = "0.1.0"
