"""Shared fixtures."""
import pytest
import torch


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
