"""The study report's section for chains shared across participants (`analysis.shared`).

In such a study no one person's stretch of a chain is a chain: the group's prototype of each
emotion comes from the study's shared chains, each person is checked on their own answers, and
a flagged person's stretches are shown by what they did to the group prototype (they cannot be
cut out of a chain: every later state grew from them). The sections after it analyse each
person's stretches as if they were chains of their own, which they are not.
"""

from __future__ import annotations

import pandas as pd

from analysis import shared


def is_shared(sessions: pd.DataFrame) -> bool:
    """Did the sessions run with chains shared across participants (config
    `chains.across_participants`)?"""
    configs = sessions["config"] if "config" in sessions else []
    return any(bool(((c or {}).get("chains") or {}).get("across_participants"))
               for c in configs)


def section(page, trials: pd.DataFrame, burn_in: float | int, precision: float,
            seed: int) -> None:
    """Write the shared-chains section to the report's `page` (`study_report._Page`) from every
    participant's trial rows (with coordinates, `analysis.load_trials`)."""
    groups = shared.group_prototypes(trials, burn_in, target_deg=precision, seed=seed)
    people = shared.person_checks(trials)
    flagged = people.loc[people["flagged"], "participant"].tolist()
    page.text("h2", "Chains shared across participants: the group's prototypes")
    page.text("p", (
        f"The chains of this study passed from participant to participant; "
        f"{people['participant'].nunique()} people moved them. The group prototype of each "
        f"emotion is estimated from the shared chains (after the burn-in, on the whole "
        f"chains), with its 95% cone; it is precise enough when the cone is at most "
        f"{precision:g}°. R-hat compares the shared chains with each other. Flagged people's "
        f"steps are kept here (every later state of a chain grew from them); the table below "
        f"the people shows how much of the prototype rests on them. The sections after this "
        f"one read each person's stretches as if they were chains of their own; for this "
        f"study the group's prototypes are the ones here."))
    page.table(groups, "shared_group_prototypes",
               {"emotion": "emotion", "cone95_deg": "95% cone (°)",
                "within_target": f"within {precision:g}°", "rhat_max": "R-hat",
                "ess_bulk_min": "ESS", "n_participants": "people", "verdict": "chains"})
    page.text("h3", "Each person, on their own answers")
    page.text("p", (
        "Catch trials, side bias and the responder test (did their choices depend on the "
        "faces?) are read on each person's own answers and steps. With the few steps a person "
        "gives each emotion in a short session the responder test rarely has the power to call "
        "anyone random; the catch trials and the side bias carry the check."))
    page.table(people, "shared_person_checks",
               {"participant": "participant", "n_steps": "steps", "catch_accuracy": "catch",
                "share_right": "right answers", "random_emotions": "random on",
                "reasons": "flagged because"})
    if not flagged:
        page.text("p", "No one is flagged.")
        return
    effect = shared.influence(trials, flagged, burn_in, seed=seed)
    page.text("p", (
        f"{len(flagged)} flagged ({', '.join(flagged)}). Their answers made the states counted "
        f"below; the angle is how far the group prototype moves when those states are left "
        f"out, beside its cone for scale."))
    page.table(effect, "shared_influence",
               {"emotion": "emotion", "n_states_flagged": "their states",
                "angle_deg": "prototype moves (°)", "cone95_deg": "95% cone (°)"})
