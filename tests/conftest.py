"""Settings for every test process. The helpers live in tests/blobs.py and tests/helpers.py:
this file imports nothing heavy, so that pytest-xdist's controller (which loads it too) starts
in a fraction of a second instead of importing torch before its workers can start."""

from __future__ import annotations

import os

import pytest

# The subprocesses that tests start (python -m neuralode ...) inherit these: with one test process
# per core (make test), two torch threads each would oversubscribe the cores, and OpenMP's
# spinning threads then slow every process many times over (measured: 25x on a CNF step).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["MPLBACKEND"] = "Agg"  # figures without a display, whatever the environment sets


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The suite's tensors are tiny and CI has two cores: one torch thread is several times
    faster than two threads fighting over them (and over other processes)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="session")
def registered_configs():
    """The structured configs and resolvers the YAML files use, for code that reads them
    without going through ``compose`` (which registers them itself)."""
    from neuralode.train.config import register_configs

    register_configs()
