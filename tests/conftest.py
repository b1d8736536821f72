import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolate_profiles(tmp_path, monkeypatch):
    # Tests never read or write the repository's shipped profiles.
    monkeypatch.setenv("EDGEPRUNE_PROFILES", str(tmp_path / "profiles"))
