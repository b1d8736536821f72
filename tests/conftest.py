import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolate_profiles(tmp_path, monkeypatch):
    # Tests never read or write the repository's shipped profiles.
    monkeypatch.setenv("EDGEPRUNE_PROFILES", str(tmp_path / "profiles"))


@pytest.fixture(scope="session")
def random_fmnist_resnet(tmp_path_factory):
    """fmnist_resnet with seeded random weights (saved as w.pt) and a quick torch latency profile of
    it: the savings only need to exist, not to be precise. Measured once for every module using it."""
    from edgeprune.latency.measurement import run_profile
    from edgeprune.models import zoo

    folder = tmp_path_factory.mktemp("fmnist_resnet")
    torch.manual_seed(0)
    model, _, _ = zoo.load_model("fmnist_resnet", weights="random")
    torch.save(model.state_dict(), folder / "w.pt")
    prof = run_profile("fmnist_resnet", backend="torch", budget_s=0.5, warmup_s=0.1, min_repeats=3, max_repeats=10)
    return {"weights": folder / "w.pt", "profile": prof}
