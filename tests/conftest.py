"""Shared fixtures. Analysis fixtures (prefix `analysis_`) write small simulated studies with the
real simulator (`mcmcp.sim.study.simulate_study`, the code path of `python -m mcmcp.simulate`), so
a drift between what the simulator writes and what analysis reads fails the analysis tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcmcp.config import config_from_dict
from mcmcp.sampling import sphere
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sim.study import GroundTruth, simulate_study


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `slow` run first, so that with one worker per core (`make test`, xdist)
    the longest ones start at once and the workers finish together, instead of one worker
    starting the demo's three minutes when the other has nothing left to do."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def analysis_truth(emotions: list[str], kappa: float) -> dict[str, VMFMixture]:
    """Well-separated true categories: vMF(m_e, kappa) at a Fibonacci lattice m_e."""
    means = sphere.fibonacci_sphere(max(len(emotions), 2), 3)
    return {e: VMFMixture.single(means[i], kappa) for i, e in enumerate(emotions)}


def analysis_simulate_study(
    root: Path,
    participants: list[str],
    truth: dict[str, VMFMixture],
    seed: int,
    n_chains: int = 4,
    n_shown: int = 200,
    kappa_proposal: float = 30.0,
    lapse: float = 0.0,
    catch_rate: float = 0.0,
    gate: dict | None = None,
    checkpoint_sha256: str | None = None,
) -> list[Path]:
    """Simulate `participants` (simulated together) answering as Luce agents whose categories
    are `truth`, through an experiment config like a YAML one; returns their session folders.

    n_shown: shown trials per chain (gate-screened steps come on top); chains start on a
    Fibonacci lattice; gate: the config's `gate:` section (default {"kind": "none"}), e.g.
    {"kind": "manual", "mean": [...], "kappa": 10, "gamma": 1} for one gatekeeper per emotion.
    catch_rate: share of shown trials that are catch trials (target and foil are the truth's
    modes). lapse: probability of answering at random (every kind of trial).
    """
    cfg = config_from_dict({
        "name": "analysis_test", "seed": seed, "emotions": list(truth),
        "chains": {"per_emotion": n_chains, "kappa_proposal": kappa_proposal,
                   "start": "fibonacci"},
        "trials": {"per_chain": n_shown, "practice": 0, "catch_rate": catch_rate},
        "gate": gate or {"kind": "none"},
        "agent": {"kind": "latent", "exponent": 1.0, "lapse": lapse},
    }, "<analysis test>", require_checkpoint=False)
    study = simulate_study(cfg, root, participants, GroundTruth("file", truth),
                           checkpoint_sha256=checkpoint_sha256)
    return study.folders


@pytest.fixture(scope="session")
def analysis_small_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two attentive participants and one inattentive one (lapse 0.9), two emotions, 4 chains x
    120 trials and 20 catch trials per emotion; returns the data root. Shared by many tests:
    never write into it."""
    truth = analysis_truth(["happy", "sad"], kappa=20.0)
    root = tmp_path_factory.mktemp("analysis") / "participants_data"
    # 20 catch trials per block: round(rate * 480 / (1 - rate)) = 20 for rate 1/25.
    analysis_simulate_study(root, ["sim001", "sim002"], truth, seed=10, n_shown=120,
                            catch_rate=0.04)
    # Another agent (lapse) is another run, with its own seed so its random streams differ.
    analysis_simulate_study(root, ["sim003"], truth, seed=11, n_shown=120, catch_rate=0.04,
                            lapse=0.9)
    return root


@pytest.fixture
def analysis_simulate():
    """The study simulator above, for tests that need their own designs."""
    return analysis_simulate_study



@pytest.fixture(scope="session")
def default_faces():
    """The default procedural face set the committed model was trained on (built once, ~10 s),
    so tests of the trained model run on a fresh clone where data/faces.h5 does not exist yet."""
    from vae.procedural.faces import generate_faces

    return generate_faces()


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster (tests/pgcluster.py) for the online-study tests;
    `postgres.new_database()` gives each test its own empty database."""
    from pgcluster import Cluster

    with Cluster() as cluster:
        yield cluster
