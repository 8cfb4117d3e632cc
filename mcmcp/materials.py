"""What a session opens besides its config: the checkpoint, the face store, and what is fitted
from them (gatekeeper and catch-trial densities, start centroids, a synthetic agent, children).

Lab sessions, online sessions and simulations open their inputs here, so they check them the
same way (an unfinished checkpoint is refused, a failed verdict or a foreign face store is a
warning) and fit the same gates. Errors are `ConfigError`s naming the config key.
"""

from __future__ import annotations

from pathlib import Path

from mcmcp.config import ConfigError
from mcmcp.specs import DEFAULT_FACES, ROOT, ExperimentConfig


def open_model(cfg: ExperimentConfig, file: str | Path = "<config>"):
    """Load the config's checkpoint (vae.checkpoint.LoadedModel), checking its latent size.

    A latent size that differs from `model.latent_dim`, or from a manual gate's mean, or a
    Fibonacci start on d > 3, is a ConfigError naming the key.
    """
    from vae.checkpoint import load_checkpoint

    try:
        loaded = load_checkpoint(cfg.model.checkpoint)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(file, "model.checkpoint", str(cfg.model.checkpoint),
                          f"a readable vae checkpoint ({err})") from None
    d = loaded.config.latent_dim
    if cfg.model.latent_dim is not None and cfg.model.latent_dim != d:
        raise ConfigError(file, "model.latent_dim", cfg.model.latent_dim,
                          f"the latent size of {cfg.model.checkpoint}, which is {d}")
    if cfg.gate.mean is not None and len(cfg.gate.mean) != d:
        raise ConfigError(file, "gate.mean", list(cfg.gate.mean),
                          f"{d} numbers (the latent size of {cfg.model.checkpoint})")
    if cfg.chains.start == "fibonacci" and d > 3:
        raise ConfigError(file, "chains.start", "fibonacci",
                          f"centroids or uniform: the checkpoint's latent size is {d} > 3")
    kind = loaded.config.kind
    if cfg.model.kind is not None and cfg.model.kind != kind:
        raise ConfigError(file, "model.kind", cfg.model.kind,
                          f"the kind of {cfg.model.checkpoint}, which is {kind}")
    if cfg.stimuli.identity and kind != "identity":
        raise ConfigError(file, "stimuli.identity", list(cfg.stimuli.identity),
                          f"nothing: {cfg.model.checkpoint} is a {kind} model, which draws no "
                          "child from a reference face; remove stimuli.identity or use an "
                          "identity checkpoint (model.kind identity)")
    return loaded


def checkpoint_fitness(loaded, file: str | Path = "<config>") -> list[str]:
    """Check a loaded checkpoint is fit for a session: an unfinished one (training stopped before
    its last epoch) is a ConfigError; a finished one whose verdict failed returns warnings.

    `loaded.finished` / `loaded.verdict` come from vae.checkpoint; checkpoints written before
    they existed count as unfinished when their `epoch` is below train_config `epochs`. A verdict
    is failing when its `passed` is False; its `summary` (if any) is quoted in the warning.
    """
    finished = getattr(loaded, "finished", None)
    if finished is None:
        epochs = (loaded.train_config or {}).get("epochs")
        finished = loaded.epoch is None or epochs is None or loaded.epoch >= epochs
    if not finished:
        path = loaded.path
        raise ConfigError(file, "model.checkpoint", str(path),
                          f"a finished checkpoint: {path} stopped after epoch {loaded.epoch} of "
                          f"{(loaded.train_config or {}).get('epochs')}; finish it with "
                          f"`python -m vae.train --resume {path}` or use another checkpoint")
    verdict = getattr(loaded, "verdict", None)
    passed = verdict.get("passed") if isinstance(verdict, dict) else getattr(verdict, "passed", None)
    if passed is False:
        summary = (verdict.get("summary") if isinstance(verdict, dict)
                   else getattr(verdict, "summary", None))
        return [f"checkpoint {loaded.path} FAILED its training verdict"
                + (f" ({summary})" if summary else "")
                + ": its faces may not be readable or separable enough for a study"]
    return []


def foreign_store_warning(faces: Path, faces_hash: str, loaded) -> str | None:
    """The warning for a face store whose content hash is not the one `loaded` (a
    vae.checkpoint.LoadedModel) was trained on, None when it is. Callers add what it means
    for them."""
    if faces_hash == loaded.data_hash:
        return None
    return (f"face store {faces} (content sha256 {faces_hash[:12]}) is not the store checkpoint "
            f"{loaded.path} was trained on (sha256 {str(loaded.data_hash)[:12]})")


def ensure_default_faces(path: Path, image_size: tuple[int, int]) -> None:
    """Build the default procedural face store (`DEFAULT_FACES`, seconds; one line says so) when
    `path` is it and it does not exist yet, so the README's commands work on a fresh clone.
    Any other missing store stays an error for the caller to report."""
    if Path(path) == DEFAULT_FACES and not DEFAULT_FACES.exists():
        from vae.data import ensure_store

        ensure_store(DEFAULT_FACES, image_size)


def need_faces(cfg) -> bool:
    return (cfg.gate.kind in ("vmf", "mixture") or cfg.trials.catch_rate > 0
            or cfg.chains.start == "centroids"
            or (cfg.agent is not None and cfg.agent.kind == "latent")
            or bool(cfg.stimuli.identity))  # the children's reference faces


def open_faces(cfg, loaded, source):
    """(faceset, content hash, training-split indices or None, warnings) for the config's face
    store; builds the default store on first use."""
    from vae.store import read_store, split_by_identity, store_hash

    path = cfg.model.faces
    ensure_default_faces(path, loaded.config.image_size)
    try:
        faceset = read_store(path)
        faces_hash = store_hash(path)
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(source, "model.faces", str(path),
                          f"a readable face store; build one with `python -m vae.data build` "
                          f"({type(err).__name__}: {str(err)[:200]})") from None
    warnings = []
    tc = loaded.train_config or {}
    foreign = foreign_store_warning(path, faces_hash, loaded)
    if foreign is None and "val_fraction" in tc:
        # the faces the model was trained on: fit densities to the training identities only
        idx, _ = split_by_identity(faceset.identities, tc["val_fraction"], tc.get("split_seed", 0))
    else:
        idx = None
        warnings.append(
            f"{foreign or f'checkpoint {loaded.path} records no training split'}: the "
            "gatekeeper, catch-trial and agent densities are fitted to ALL its faces, held-out "
            "validation identities included; use the checkpoint's own face store")
    return faceset, faces_hash, idx, warnings


def fit_materials(cfg, loaded, faces, identities=None):
    """(gates, centroids, agent) for the session, fitting only what the config needs; an image
    agent draws the session's children from `identities` (mcmcp.identities.Identities)."""
    from mcmcp.agents import make_agent
    from mcmcp.sampling.densities import class_centroids, emotion_densities
    from mcmcp.sampling.gate import make_gate

    densities, agent_densities, centroids = None, None, None
    if faces is not None:
        faceset, _, idx, _ = faces
        if cfg.gate.kind in ("vmf", "mixture"):
            densities = emotion_densities(loaded, faceset, idx, kind=cfg.gate.kind,
                                          n_components=cfg.gate.components, seed=cfg.seed)
        if cfg.agent is not None and cfg.agent.kind == "latent":
            agent_densities = (densities if cfg.gate.kind == "vmf"
                               else emotion_densities(loaded, faceset, idx, kind="vmf"))
        centroids = class_centroids(loaded, faceset, idx)
    gates = {e: make_gate(cfg.gate, e, densities, loaded.model) for e in cfg.emotions}
    gates = {e: g for e, g in gates.items() if g is not None}
    agent = None
    if cfg.agent is not None:
        observer = None
        if cfg.agent.kind == "observer":
            from vae.observer import load_observer

            observer = load_observer(ROOT / "vae" / "checkpoints" / "observer.pt")
        # a session asks one pair at a time: decoding its new face is cheaper than the up to
        # 36 table nodes a new face can need (a 20-trial pilot: 3.9 against 33.9 ms a trial)
        agent = make_agent(cfg.agent, densities=agent_densities, model=loaded.model,
                           observer=observer, identities=identities, cells=0)
    return gates, centroids, agent


def session_materials(cfg, loaded, source="<config>"):
    """What a session of `cfg` fits from the face store, for lab and online sessions alike:
    (gates, centroids, agent, faces content hash or None, warnings, identities) where
    identities are the children the faces may show (`mcmcp.identities.open_identities`)."""
    from mcmcp.identities import open_identities

    faces = open_faces(cfg, loaded, source) if need_faces(cfg) else None
    identities = open_identities(cfg, loaded, None if faces is None else faces[0], source)
    gates, centroids, agent = fit_materials(cfg, loaded, faces, identities)
    return (gates, centroids, agent, *((None, []) if faces is None else (faces[1], faces[3])),
            identities)
