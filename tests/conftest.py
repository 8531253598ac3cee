import os, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

# A hung test fails after 25 minutes (pytest-timeout, a dev extra) instead of using up CI's 90:
# once a forked renderer deadlocked and CI printed nothing more for an hour and a quarter.
os.environ.setdefault("PYTEST_TIMEOUT", "1500")

@pytest.fixture(scope="session")
def root(): return ROOT

@pytest.fixture(autouse=True, scope="session")
def _isolated_env(tmp_path_factory):
    "Keep tests from writing into the user's cache or results folders (unless CI set a shared cache)."
    os.environ.setdefault("MEDSSL_CACHE", str(tmp_path_factory.mktemp("cache")))
    os.environ.setdefault("MEDSSL_RESULTS", str(tmp_path_factory.mktemp("results")))
    os.environ.setdefault("MPLBACKEND", "Agg")
    yield
