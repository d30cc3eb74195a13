"""neuralode: Neural ODEs (Chen et al. 2018) and FFJORD on a small torch ODE core."""

__version__ = "0.1.0"
