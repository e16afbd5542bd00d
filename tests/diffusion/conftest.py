"""Fixtures of the diffusion tests. The models here are small: torch's intra-op threads cost more
than they save on them (many times more on a shared, busy CPU), so tests run on one thread."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")  # module scope: also covers module-scoped fixtures (trained models)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
