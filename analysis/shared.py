"""Across-participant chains: the study's shared chains rebuilt from every participant's rows,
the group prototype of each emotion, and what a flagged participant's stretches did to it.

A shared chain's rows are spread over the files of everyone who held it; each row says which
lease and which step of the chain it is (`lease`, `chain_step`, `mcmcp.schema`). Re-keyed as
one chain of the study (participant `STUDY`, session 0), they go through the same
`analysis.load.chain_states`, `analysis.prototypes.prototypes` and
`analysis.diagnostics.convergence` as a participant's own chains, with `moved_by` saying whose
answer made each state. Per-participant checks stay per participant, on the rows as loaded
(`person_checks`: catch trials, side bias and the responder test on each person's steps, with
the verdict layer's own functions). A flagged participant's steps cannot be cut out of a chain
(every later state grew from them); `influence` shows the prototype with and without the states
their answers made.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.checks import trial_facts
from analysis.diagnostics import catch_accuracy, convergence
from analysis.load import DEFAULT_BURN_IN, chain_states
from analysis.prototypes import angle_deg, prototypes, table_vectors
from analysis.sides import side_bias

STUDY = "study"  # the participant label of the study's shared chains


def study_chains(trials: pd.DataFrame) -> pd.DataFrame:
    """The rows of the shared chains (chain and gate rows with a `chain_step`) as the study's
    chains: participant STUDY, session 0, iteration = chain_step; `moved_by` keeps the
    participant who answered."""
    rows = trials[trials["kind"].isin(["chain", "gate"]) & trials["chain_step"].notna()]
    return rows.assign(moved_by=rows["participant"], participant=STUDY,
                       session=pd.array(np.zeros(len(rows), dtype=np.int64), dtype="Int64"),
                       iteration=rows["chain_step"])


def shared_states(trials: pd.DataFrame) -> pd.DataFrame:
    """`chain_states` of the study's shared chains, with `moved_by`: the participant whose
    answer made each state (NA for a chain's start)."""
    rows = study_chains(trials)
    states = chain_states(rows)
    made = rows[["chain", "chain_step", "moved_by"]].assign(
        step=rows["chain_step"].astype("int64") + 1).drop(columns="chain_step")
    return states.merge(made, on=["chain", "step"], how="left")


def group_prototypes(trials: pd.DataFrame, burn_in: float | int = DEFAULT_BURN_IN,
                     target_deg: float | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per emotion: the group prototype from the study's shared chains (mean_*,
    cone95_deg, ... of `analysis.prototypes.prototypes`), R-hat and ESS across the chains
    (`analysis.diagnostics.convergence`), the participants who moved them, and with a
    `target_deg`, `within_target`: the 95% cone is at most that wide."""
    states = shared_states(trials)
    table = prototypes(states, burn_in, by=[], seed=seed).drop(columns="participant")
    conv = convergence(states.drop(columns="moved_by"), burn_in, by=[])
    people = states.groupby("emotion")["moved_by"].nunique().rename("n_participants")
    table = table.merge(conv[["emotion", "rhat_max", "ess_bulk_min", "verdict"]],
                        on="emotion").merge(people, on="emotion")
    if target_deg is not None:
        table["within_target"] = table["cone95_deg"] <= target_deg
    return table


def influence(trials: pd.DataFrame, flagged: list[str],
              burn_in: float | int = DEFAULT_BURN_IN, seed: int = 0) -> pd.DataFrame:
    """Per emotion: the group prototype from every kept state and from the kept states that
    the `flagged` participants' answers did not make, and the angle between them (degrees);
    n_states_flagged: the kept states their answers made; cone95_deg: the cone of the prototype
    from every kept state, for scale. The chains themselves are unchanged (later states still
    grew from the flagged steps): this shows how much of the prototype rests on them. The
    burn-in is counted on the whole chains either way (`n_steps`)."""
    states = shared_states(trials)
    every = prototypes(states, burn_in, by=[], seed=seed)
    without = prototypes(states[~states["moved_by"].isin(flagged)], burn_in, by=[], seed=seed)
    out = every[["emotion", "n_states", "cone95_deg"]].merge(
        without[["emotion", "n_states"]], on="emotion", suffixes=("", "_without"))
    out["n_states_flagged"] = out.pop("n_states") - out.pop("n_states_without")
    out["angle_deg"] = angle_deg(table_vectors(every), table_vectors(without))
    return out


def person_checks(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per participant of a shared study, on their own answers: catch accuracy
    (`analysis.diagnostics.catch_accuracy`: n_catch, catch_accuracy, catch_flagged); side bias
    on their two-face chain and catch trials (`analysis.sides.side_bias`: share_right,
    side_bias, side, side_flagged); and per emotion the responder test on the steps they moved
    (`analysis.responders.choice_dependence`, its power at the spherical mean of those steps'
    current faces): n_steps, random_emotions (emotions where their choices did not depend on
    the faces, with enough power to tell). The counts and tests are the report's own
    (`analysis.checks.trial_facts`). flagged and reasons: in words, as a reader sees them;
    `influence` shows what a flagged person's steps did to the group prototype."""
    catch = catch_accuracy(trials).set_index("participant")
    facts = trial_facts(trials)  # per person x emotion; the side counts are the person's
    sided = (facts.drop_duplicates("participant").set_index("participant")
             [["n_right", "n_sided"]].reindex(catch.index, fill_value=0))
    rows = []
    for person, c in catch.iterrows():
        mine = facts[facts["participant"] == person]
        side = side_bias(int(sided.at[person, "n_right"]), int(sided.at[person, "n_sided"]))
        random = mine.loc[mine["responses_random"].astype(bool), "emotion"].tolist()
        why = []
        if c["flagged"]:
            why.append(f"catch accuracy {c['accuracy']:.0%} of {int(c['n_catch'])}")
        if side.flagged:
            why.append(f"{side.bias:.0%} of answers follow the {side.side} side")
        if random:
            why.append(f"choices did not depend on the faces ({', '.join(random)})")
        rows.append({"participant": person, "n_steps": int(mine["n_chain_trials"].sum()),
                     "n_catch": int(c["n_catch"]), "catch_accuracy": c["accuracy"],
                     "catch_flagged": bool(c["flagged"]), "share_right": side.share_right,
                     "side_bias": side.bias, "side": side.side,
                     "side_flagged": side.flagged, "random_emotions": ", ".join(random),
                     "flagged": bool(why), "reasons": "; ".join(why)})
    return pd.DataFrame(rows)
