import os

import pytest
from hypothesis import settings

from rnn_scratch.backend import cupy_available, cupy_unavailable_reason, resolve_backend
from rnn_scratch.testing import register_profiles

# Subprocesses (examples, the CLI, the device script) import this checkout's rnn_scratch, not whichever copy is
# installed, and find it when none is: a script's own folder, not the working directory, starts its sys.path.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)

register_profiles()
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The backend every test runs on: RNN_SCRATCH_BACKEND=cupy runs the whole suite on the GPU.
BACKEND = resolve_backend(None) if os.environ.get("RNN_SCRATCH_BACKEND") else "numpy"


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CuPy and a usable CUDA device")
    config.addinivalue_line("markers", "slow: long-running (examples, whole-loop training)")


def pytest_collection_modifyitems(config, items):
    if cupy_available():
        return
    skip = pytest.mark.skip(reason=f"no usable GPU: {cupy_unavailable_reason()}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def backend():
    return BACKEND
