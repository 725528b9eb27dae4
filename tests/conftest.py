"""Shared fixtures."""
import os

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs ``-n auto``), each worker takes its share of the cores,
    and so do the processes its tests start: two workers of two threads each on two cores ran
    slower than one."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(share)
        os.environ["OMP_NUM_THREADS"] = str(share)


def pytest_collection_modifyitems(config, items):
    """The slow end-to-end checks first: in parallel runs a minute-long test that starts last
    leaves the other workers idle while it runs."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="module")
def one_thread():
    """One CPU thread for the module's tests: small models run fastest that way, and on a busy
    2-core machine two threads per process ran many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _same_random_numbers():
    """Every test starts from the same random state, whatever ran before it: a test's data and
    weights do not depend on the order or selection of tests, so a failure reproduces alone."""
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
