import os

import pytest
import torch

# Tests compare against float64 references; fix the thread count so runs are repeatable.
torch.set_num_threads(int(os.environ.get("EDGEGEN_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
