"""Generation tests run tiny models: one thread is fastest for them, and keeps them from crawling
when another process competes for the cores (spinning OpenMP workers)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
