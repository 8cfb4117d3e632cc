"""Simulated participants and studies, written like lab data.

`simulate_participant` runs one participant's blocks (`mcmcp.sim.chains`), lays them out as
their session (`mcmcp.sim.layout`: chains interleaved at random within one block per emotion,
gate rows before the trial they precede, catch trials mixed in) and writes it through
`mcmcp.store.SessionStore`, so simulated files are lab files; the CLI, the planner and the
analysis tests all go through it (one writer). `simulate_study` runs the participants one after
another, or in `jobs` worker processes, each written as soon as it is done, so memory does not
grow with the number of participants. `make_design` turns a config (and its model or a manual
ground truth) into the `Design` every participant shares.

Randomness: participant P's start points and chains (all blocks, simulated together) draw from
`mcmcp.sampling.seeds.stream_rng(seed, P, session, CHAIN_STREAM, 0)` and block b's trial order and
catch trials from `stream_rng(seed, P, session, LAYOUT_STREAM, b)`, so a participant's data are
the same whether simulated alone, with 99 others or in parallel (recorded in session.json `seeds`).
Practice and repeat trials are not simulated (agents need no practice; repeat_rate must be 0).
Children (identity models, `stimuli:`): each participant's chains and catch trials show the
children `mcmcp.identities.assignment` gives them, as in a lab session; image agents (observer)
see each face as its trial's child; rows and session.json record them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from mcmcp.sampling.seeds import participant_key, stream_rng
from mcmcp.sampling.sphere import fibonacci_sphere, sample_uniform
from mcmcp.sim.chains import ByChain, simulate_chains, simulate_gsp_chains
from vae.labels import EMOTIONS, canonical_emotion

if TYPE_CHECKING:
    from mcmcp.sampling.densities import VMFMixture
    from mcmcp.sampling.gate import Gate


CHAIN_STREAM, LAYOUT_STREAM = 0, 1  # stream tags of mcmcp.sampling.seeds.stream_rng


def simulated_ids(n: int) -> list[str]:
    """The ids of n simulated participants: sim001, sim002, ..."""
    return [f"sim{k:03d}" for k in range(1, n + 1)]


def start_points(kind: str, n: int, d: int, emotion: str, centroids: dict | None,
                 rng: np.random.Generator) -> np.ndarray:
    """Start states (n, d): fibonacci (deterministic, d <= 3), uniform, or centroids of the
    other emotions (cycled; needs `centroids`)."""
    if kind == "fibonacci":
        return fibonacci_sphere(n, d)
    if kind == "uniform":
        return sample_uniform(n, d, rng)
    others = [centroids[e] for e in sorted(centroids) if e != emotion]
    return np.array([others[i % len(others)] for i in range(n)])


class GroundTruth(NamedTuple):
    """A latent agent's true categories, recorded in session.json for analysis to score against.

    kind: 'data' (fitted to the encoded training faces), 'manual' (vMF at 7 Fibonacci points)
    or 'file' (read from JSON); densities: emotion -> VMFMixture on S^(d-1).
    """

    kind: str
    densities: dict[str, VMFMixture]


class ModelParts(NamedTuple):
    """What a simulation takes from the VAE: `loaded` (vae.checkpoint.LoadedModel); the training
    faces of the face store encoded once (`densities.emotion_codes`: emotion -> (n_e, d)), None
    when nothing is fitted to faces; the observer classifier, None unless the agent is one;
    the children (`mcmcp.identities.Identities`) and warnings about the inputs (recorded in
    every session.json)."""

    loaded: object
    codes: dict | None
    observer: object | None
    identities: object = None
    warnings: tuple = ()


class Design(NamedTuple):
    """Everything needed to simulate any participant of a study (picklable, sent once to each
    worker process): the config, d, the agent, each emotion's gate (None = unguided), the class
    centroids (catch trials, centroid starts; None without), the session.json fields shared by
    all participants, the output root and the children (`mcmcp.identities.Identities`, None
    without a model)."""

    cfg: object
    d: int
    agent: object
    gates: dict
    centroids: dict | None
    metadata: dict
    root: Path
    identities: object = None


class Done(NamedTuple):
    """One simulated participant: its session folder, rows written, chain steps (shown or
    screened out) and the seconds its chains took."""

    folder: Path
    n_rows: int
    chain_steps: int
    seconds: float


class Study(NamedTuple):
    """What `simulate_study` wrote: one session folder per participant, the number of rows, the
    chain steps simulated (shown or screened out) and the seconds the chains took (summed over
    participants)."""

    folders: list[Path]
    n_rows: int
    chain_steps: int
    simulate_seconds: float


def simulate_participant(design: Design, participant: str) -> Done:
    """Simulate one participant's session (every block of the design) and write it."""
    from mcmcp.identities import assignment
    from mcmcp.sim.layout import SESSION, Block, block_columns, session_columns
    from mcmcp.store import SessionStore, utc_now

    cfg, d, agent = design.cfg, design.d, design.agent
    agent.reset()  # nothing remembered from whoever this process simulated before
    C, n_shown = cfg.chains.per_emotion, cfg.trials.per_chain
    adapt = None if cfg.chains.adapt is None else (cfg.chains.adapt.target,
                                                   cfg.chains.adapt.burn_in)
    # Every block's chains at once (one vectorised run instead of one per block); the chains
    # are independent, so only the order of the random draws differs from block after block.
    rng = stream_rng(cfg.seed, participant, SESSION, CHAIN_STREAM, 0)
    start = np.concatenate([start_points(cfg.chains.start, C, d, e, design.centroids, rng)
                            for e in cfg.emotions])
    children = (None if design.identities is None
                else assignment(cfg, participant, design.identities.default))
    # the last chains.unguided chains of each block are control chains (never screened)
    guided = np.tile(np.arange(C) < C - cfg.chains.unguided, len(cfg.emotions))
    t0 = time.perf_counter()
    emotions = np.repeat(np.array(cfg.emotions, dtype=object), C)
    gate = joint_gate(design.gates, cfg.emotions, C)
    identity = None if children is None else children.chain(np.arange(C * len(cfg.emotions)))
    slider = None
    if cfg.paradigm == "gsp":
        trace, slider = simulate_gsp_chains(start, n_shown, cfg.gsp.points, agent, emotions,
                                            gate, rng, identity, guided)
    else:
        trace = simulate_chains(start, n_shown, cfg.chains.kappa_proposal, agent, emotions,
                                gate, rng, adapt, identity, guided=guided)
    seconds = time.perf_counter() - t0
    blocks = []
    for b, emotion in enumerate(cfg.emotions):
        gate = design.gates[emotion]
        layout = stream_rng(cfg.seed, participant, SESSION, LAYOUT_STREAM, b)
        blocks.append(block_columns(
            Block(emotion, trace.chains(slice(b * C, (b + 1) * C)),
                  None if gate is None else gate.gamma, children),
            b, n_shown, agent, cfg.trials.catch_rate, design.centroids, layout,
            None if slider is None else {k: v[:, b * C:(b + 1) * C] for k, v in slider.items()}))
        blocks[-1]["paradigm"] = cfg.paradigm
        if slider is not None:
            blocks[-1]["gsp_points"] = np.full(len(blocks[-1]["kind"]), cfg.gsp.points)
    columns, n_rows = session_columns(blocks, participant, agent.name, utc_now())
    seeds = {"master": cfg.seed, "participant_key": participant_key(participant),
             "chains": f"stream_rng(seed, participant, session, {CHAIN_STREAM}, 0)",
             "layout_and_catch": f"stream_rng(seed, participant, session, {LAYOUT_STREAM}, "
                                 "block)"}
    identity = {} if children is None else {
        "identity": {**children.record(), **design.identities.record()}}
    store = SessionStore.create(design.root, participant, SESSION, d,
                                {**design.metadata, "seeds": seeds, **identity})
    store.append_columns(columns, n_rows)
    store.finish(n_rows=n_rows)
    agent.save_tables()  # the next participant, in any process or run, starts from them
    return Done(store.folder, n_rows, int(trace.active.sum()), seconds)


def joint_gate(gates: dict, emotions, n_chains: int) -> Gate | None:
    """One gate over the chains of every block (block b = chains b*C .. b*C+C-1), each block
    screened by its own emotion's gate density; None when the design has no gate."""
    from mcmcp.sampling.gate import Gate

    if all(gates[e] is None for e in emotions):
        return None
    groups = [slice(b * n_chains, (b + 1) * n_chains) for b in range(len(emotions))]
    first = gates[emotions[0]]  # one gate spec for the whole design: the same γ and schedule
    return Gate(ByChain([gates[e].density for e in emotions], groups), first.gamma,
                first.anneal_until)


_DESIGN: Design | None = None  # a worker process's design, set once by _start_worker


def _start_worker(design: Design) -> None:
    global _DESIGN
    _DESIGN = design
    torch = sys.modules.get("torch")  # an image agent's model: one thread per worker process
    if torch is not None:
        torch.set_num_threads(1)


def _simulate_in_worker(participant: str) -> Done:
    return simulate_participant(_DESIGN, participant)


def simulate_study(
    cfg,
    root: str | Path,
    participants: list[str],
    truth: GroundTruth | None = None,
    model: ModelParts | None = None,
    checkpoint_sha256: str | None = None,
    source: str | Path = "<config>",
    jobs: int = 1,
    progress: bool = False,
    table_cache: Path | None = None,
) -> Study:
    """Simulate `participants` (ids) through the design of `cfg` and write each one's session
    under `root` with `SessionStore`, exactly as a lab session is written.

    cfg: `mcmcp.specs.ExperimentConfig` (emotions, chains, trials, gate, agent (None = latent),
    seed). truth: the latent agent's categories (required for agent.kind latent, recorded as
    session.json `ground_truth`). model: required by classifier/observer agents, vmf/mixture/
    classifier gates and, without a truth, by catch trials and centroid starts.
    checkpoint_sha256: the model the codes belong to, recorded in session.json (None: none).
    jobs: worker processes (1 = this process); a participant's data do not depend on it.
    progress: show a progress bar on stderr. table_cache: where an observer agent keeps its
    tables between participants and runs (`mcmcp.table_cache`; None: in memory only).
    Raises ConfigError (naming `source`) for a design that cannot be simulated, FileExistsError
    if a session folder exists (nothing is written then).
    """
    from mcmcp.sim.layout import SESSION
    from mcmcp.store import session_dir

    existing = [str(f) for f in (session_dir(root, p, SESSION) for p in participants) if f.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite existing session folders: "
                              f"{', '.join(existing[:3])}{' ...' if len(existing) > 3 else ''}; "
                              "choose another --out")
    design = make_design(cfg, Path(root), truth, model, checkpoint_sha256, source, table_cache)
    done = []
    from tqdm import tqdm

    bar = tqdm(total=len(participants), unit="participant", disable=not progress,
               file=sys.stderr)
    if jobs == 1 or len(participants) == 1:
        for pid in participants:
            done.append(simulate_participant(design, pid))
            bar.update()
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the parent may hold torch's thread pool, which fork would copy
        with ProcessPoolExecutor(min(jobs, len(participants)), multiprocessing.get_context(
                "spawn"), initializer=_start_worker, initargs=(design,)) as pool:
            for result in pool.map(_simulate_in_worker, participants):
                done.append(result)
                bar.update()
    bar.close()
    return Study([r.folder for r in done], sum(r.n_rows for r in done),
                 sum(r.chain_steps for r in done), sum(r.seconds for r in done))


def make_design(cfg, root: Path, truth: GroundTruth | None, model: ModelParts | None,
                checkpoint_sha256: str | None, source: str | Path,
                table_cache: Path | None = None) -> Design:
    """The agent, gates, centroids and shared session metadata of a study (see simulate_study).
    The faces were encoded once (ModelParts.codes), for the truth, centroids and gates; an
    observer agent keeps its tables in the folder `table_cache` (None: in memory only)."""
    from mcmcp.agents import make_agent
    from mcmcp.config import config_to_dict
    from mcmcp.sampling.densities import fit_densities
    from mcmcp.sampling.gate import make_gate
    from mcmcp.sampling.sphere import spherical_mean
    from mcmcp.specs import AgentSpec
    from mcmcp.store import versions

    agent_spec = cfg.agent or AgentSpec()
    loaded = None if model is None else model.loaded
    codes = None if model is None else model.codes
    with_faces = codes is not None
    identities = None if model is None else model.identities
    agent = make_agent(agent_spec, None if truth is None else truth.densities,
                       None if loaded is None else loaded.model,
                       None if model is None else model.observer, identities, table_cache)
    if truth is not None and truth.kind != "data":
        # Categories not made from faces: a clear exemplar of one is its own mode.
        centroids = {e: dens.mode() for e, dens in truth.densities.items()}
    elif with_faces:
        centroids = {e: spherical_mean(c) for e, c in codes.items()}
    else:
        centroids = None
    d = next(iter(truth.densities.values())).d if truth is not None else loaded.config.latent_dim
    _check_design(cfg, d, truth, loaded, centroids, source)
    gate_densities = None
    if cfg.gate.kind in ("vmf", "mixture") and with_faces:
        gate_densities = fit_densities(codes, cfg.gate.kind, cfg.gate.components)
    gates = {e: make_gate(cfg.gate, e, gate_densities, None if loaded is None else loaded.model)
             for e in cfg.emotions}
    metadata = {
        "mode": "simulation",
        "config": config_to_dict(cfg),
        "checkpoint_sha256": checkpoint_sha256,
        "agent": {"name": agent.name, **vars(agent_spec)},
        "gate": vars(cfg.gate),
        "ground_truth": None if truth is None else {
            "kind": truth.kind,
            "densities": {e: dens.to_dict() for e, dens in truth.densities.items()},
            "prototypes": {e: dens.mode().tolist() for e, dens in truth.densities.items()},
        },
        "versions": versions(),
        "warnings": [] if model is None else list(model.warnings),
    }
    silent = no_catch_trials(cfg, centroids)
    if silent:
        metadata["warnings"].append(silent)
        print(f"WARNING: {silent}", file=sys.stderr, flush=True)
    return Design(cfg, d, agent, gates, centroids, metadata, root, identities)


def no_catch_trials(cfg, centroids: dict | None) -> str:
    """What a simulation must not drop silently: the emotions whose blocks get no catch trial
    although trials.catch_rate asks for them (a catch trial needs a clear exemplar of the
    block's emotion and one of another emotion: `centroids` from the truth or the faces); ''
    when every block gets them or none is asked for."""
    if cfg.trials.catch_rate <= 0:
        return ""
    have = centroids or {}
    lost = [e for e in cfg.emotions if e not in have or len(have) < 2]
    if not lost:
        return ""
    why = ("no class centroids (give a checkpoint and face store, or a truth with the emotions)"
           if not have else f"the centroids cover only {', '.join(sorted(have))}")
    return (f"trials.catch_rate is {cfg.trials.catch_rate:g} but the blocks of "
            f"{', '.join(lost)} get no catch trials: {why}; a catch trial needs the block's "
            "emotion and another one, so without them no lapse rate can be estimated")


def _check_design(cfg, d, truth, loaded, centroids, source) -> None:
    """ConfigError (naming `source` and the key) for what cannot be simulated in R^d."""
    from mcmcp.config import ConfigError

    if cfg.trials.repeat_rate > 0:
        raise ConfigError(source, "trials.repeat_rate", cfg.trials.repeat_rate,
                          "0 for simulations: repeat trials are not simulated")
    if truth is not None:
        missing = [e for e in cfg.emotions if e not in truth.densities]
        if missing:
            raise ConfigError(source, "emotions", list(cfg.emotions),
                              f"emotions the ground truth has ({', '.join(truth.densities)}); "
                              f"it lacks {', '.join(missing)}")
    if loaded is not None and loaded.config.latent_dim != d:
        raise ConfigError(source, "model.checkpoint", str(cfg.model.checkpoint),
                          f"a model of latent size {d} (the ground truth's), not "
                          f"{loaded.config.latent_dim}")
    if cfg.model.latent_dim is not None and cfg.model.latent_dim != d:
        raise ConfigError(source, "model.latent_dim", cfg.model.latent_dim, f"{d}")
    if cfg.gate.mean is not None and len(cfg.gate.mean) != d:
        raise ConfigError(source, "gate.mean", list(cfg.gate.mean), f"a list of d = {d} numbers")
    if cfg.chains.start == "fibonacci" and d > 3:
        raise ConfigError(source, "chains.start", "fibonacci",
                          f"centroids or uniform: the latent size is {d} > 3")
    if cfg.chains.start == "centroids" and centroids is None:
        raise ConfigError(source, "chains.start", "centroids",
                          "fibonacci or uniform, or give a checkpoint and face store "
                          "(model.checkpoint, model.faces) to compute class centroids")


def open_model_parts(cfg, src: str, truth_arg: str) -> ModelParts | None:
    """The VAE parts this simulation needs, or None when it needs none (nothing is decoded or
    encoded). A missing checkpoint is a ConfigError saying what needed it."""
    from mcmcp.config import ConfigError
    from mcmcp.materials import open_model
    from mcmcp.specs import AgentSpec

    agent = cfg.agent or AgentSpec()
    truth_from_data = agent.kind == "latent" and truth_arg == "data"
    needs = [why for why, needed in (
        ("--truth data (categories fitted to the encoded faces)", truth_from_data),
        (f"agent.kind {agent.kind}", agent.kind != "latent"),
        (f"gate.kind {cfg.gate.kind}", cfg.gate.kind in ("vmf", "mixture", "classifier")),
        ("stimuli.identity (the children's reference faces)", bool(cfg.stimuli.identity)),
    ) if needed]
    if not needs:
        return None
    if not cfg.model.checkpoint.is_file():
        raise ConfigError(src, "model.checkpoint", str(cfg.model.checkpoint),
                          f"an existing VAE checkpoint, needed by {' and '.join(needs)}; train "
                          "one with `python -m vae.train`, or simulate without a model: "
                          "--truth manual (or a JSON file), a latent agent, gate none or manual")
    from mcmcp.identities import open_identities

    loaded = open_model(cfg, src)
    loaded.model.eval()
    codes = observer = faceset = None
    warnings = []
    # Faces: to fit the truth or the gate, or for class centroids when no truth gives them,
    # or for the children's reference faces.
    fit = (truth_from_data or cfg.gate.kind in ("vmf", "mixture")
           or (agent.kind != "latent"
               and (cfg.chains.start == "centroids" or cfg.trials.catch_rate > 0)))
    if fit or cfg.stimuli.identity:
        from mcmcp.materials import ensure_default_faces, foreign_store_warning
        from mcmcp.sampling.densities import emotion_codes
        from vae.store import read_store, split_by_identity, store_hash

        ensure_default_faces(cfg.model.faces, loaded.config.image_size)
        faceset = read_store(cfg.model.faces)  # ValueError naming the file if unreadable
        foreign = foreign_store_warning(cfg.model.faces, store_hash(cfg.model.faces), loaded)
        if foreign is not None:
            warnings.append(f"{foreign}: the training split is drawn from ITS identities, so "
                            "the agent and gate densities may be fitted to faces the model "
                            "never saw in training, or miss some it did; use the checkpoint's "
                            "own face store")
            print(f"WARNING: {warnings[-1]}", file=sys.stderr, flush=True)
        if fit:
            tc = loaded.train_config or {}
            train_idx, _ = split_by_identity(faceset.identities, tc.get("val_fraction", 0.2),
                                             tc.get("split_seed", 0))
            codes = emotion_codes(loaded, faceset, train_idx)
    identities = open_identities(cfg, loaded, faceset, src)
    if agent.kind == "observer":
        from vae.observer import load_observer

        observer = load_observer(Path(cfg.model.checkpoint).parent / "observer.pt")
    return ModelParts(loaded, codes, observer, identities, tuple(warnings))


def ground_truth(truth_arg: str, cfg, model: ModelParts | None, kappa: float = 30.0,
                 components: int = 1) -> GroundTruth | None:
    """The latent agent's categories from --truth (None for other agents): 'data' (fitted to
    the encoded faces, `components` vMFs each), 'manual' (vMF(m_e, kappa) at 7 Fibonacci
    points) or a JSON file {emotion: VMFMixture.to_dict()}."""
    from mcmcp.config import ConfigError
    from mcmcp.sampling.densities import VMFMixture, fit_densities
    from mcmcp.specs import AgentSpec

    if (cfg.agent or AgentSpec()).kind != "latent":
        return None
    if truth_arg == "data":
        kind = "vmf" if components == 1 else "mixture"
        return GroundTruth("data", fit_densities(model.codes, kind, components))
    if truth_arg == "manual":
        means = fibonacci_sphere(len(EMOTIONS), 3)
        return GroundTruth("manual", {e: VMFMixture.single(means[k], kappa)
                                      for k, e in enumerate(EMOTIONS)})
    path = Path(truth_arg)
    allowed = ("'data', 'manual' or an existing JSON file {emotion: {means, kappas, weights}} "
               "(VMFMixture.to_dict) with one latent size")
    try:
        data = json.loads(path.read_text())
        truth = {canonical_emotion(e): VMFMixture.from_dict(v) for e, v in data.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise ConfigError(path, "--truth", str(path), f"{allowed} ({err})") from None
    if not truth or len({dens.d for dens in truth.values()}) != 1:
        raise ConfigError(path, "--truth", str(path), allowed)
    return GroundTruth("file", truth)
