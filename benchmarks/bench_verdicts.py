"""Is the report's verdict right for the lab's own design? experiments/happy.yaml as shipped.

Simulated participants (the YAML's design: 4 chains x 100 trials, the annealed vMF gate, 5%
catch trials; latent agents whose categories are fitted to the encoded faces, so each
participant's true prototype is known) go through `python -m mcmcp.simulate`, and their files
through the report's checks (`analysis.checks.inference_checks` with the YAML's
analysis.precision). A verdict is right when 'precise enough' comes with an error (angle from the
prototype to the truth) within the precision, and 'needs more' with an error beyond it or a
cone that cannot promise it (a wider cone is the honest answer when the error is inside only by
luck, so this counts 'needs more' as right when its cone is wider than the target). Prints the
table of verdicts against errors, and the old headline (R-hat < 1.1) for comparison.

    python benchmarks/bench_verdicts.py [--participants 200] [--jobs 2] [--out reports/bench_verdicts]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.checks import inference_checks, trial_facts
from analysis.diagnostics import convergence
from analysis.load import chain_states, load_sessions, load_trials
from analysis.prototypes import angle_deg, truth_table
from mcmcp import simulate
from mcmcp.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "experiments/happy.yaml"))
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "reports/bench_verdicts"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = out / f"data-seed{args.seed}"
    if not data.exists():
        simulate.main(["--config", args.config, "--participants", str(args.participants),
                       "--jobs", str(args.jobs), "--seed", str(args.seed), "--out", str(data)])
    precision = load_config(args.config, require_checkpoint=False).analysis.precision
    trials = load_trials(data)
    states = chain_states(trials)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = inference_checks(states, trial_facts(trials), precision=precision)
        rhat = convergence(states).set_index(["participant", "emotion"])["rhat_max"]
    truth = truth_table(load_sessions(data))
    people = table[table["participant"] != "all"].merge(truth, on=["participant", "emotion"])
    mean = people[[c for c in people if c.startswith("mean_")]].to_numpy(float)
    true = people[[c for c in people if c.startswith("truth_") and c[6:].isdigit()]].to_numpy(float)
    people["error_deg"] = angle_deg(mean, true)
    people["rhat"] = rhat.reindex(list(zip(people["participant"], people["emotion"],
                                           strict=True))).to_numpy()
    inside = people["error_deg"] <= precision
    precise = people["headline"] == "precise enough"
    more = people["headline"] == "needs more"
    right = (precise & inside) | (more & (~inside | (people["cone95_deg"] > precision)))
    people.to_csv(out / f"verdicts-seed{args.seed}.csv", index=False)
    print(f"{len(people)} participants, precision {precision:g} deg; error: median "
          f"{people['error_deg'].median():.1f}, max {people['error_deg'].max():.1f} deg; cone: "
          f"median {people['cone95_deg'].median():.1f} deg; R-hat median {people['rhat'].median():.2f}")
    print(pd.crosstab(people["headline"], np.where(inside, "error within precision",
                                                   "error beyond precision")).to_string())
    print(f"verdict right: {right.mean():.3f} ({int(right.sum())} of {len(people)}); "
          f"'precise enough' with the error within the precision: "
          f"{(precise & inside).sum()} of {precise.sum()}")
    print(f"old headline: 'converged' (R-hat < 1.1) for {(people['rhat'] < 1.1).mean():.0%}")
    needed = people.loc[more, "needed"]
    if len(needed):
        print(f"'needs more': trials per chain asked for: median {needed.median():.0f}")
    group = table[table["participant"] == "all"]
    for row in group.itertuples():
        print(f"group {row.emotion}: {row.headline_words}")


if __name__ == "__main__":
    main()
