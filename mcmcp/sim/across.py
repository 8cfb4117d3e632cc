"""Within- or across-participant chains for the same participant time: the group prototype
each design gives when every person answers the same number of trials of an emotion.

People differ: person j's category is vMF(mu_j, kappa_person), mu_j ~ vMF(group_mean,
kappa_between) (`mcmcp.sim.relay.individual_prototypes`), with lapses. Both designs answer
through the simulator every simulated chain uses (`mcmcp.sim.chains.simulate_chains`).

- within: each person runs `chains` chains of their own for trials / chains trials (from a
  randomly turned Fibonacci lattice, as a session starts them); their prototype is the mean
  direction of the second half of their chains' states; the group prototype is the mean
  direction of the people's prototypes.
- across: the study runs `chains` shared chains; people arrive one after another and each
  holds trials / per_hold chains for per_hold trials (the holds of one person fill
  consecutive places of the rounds, so a person holds two or more chains at once, as in a
  session); the group prototype is the mean direction of the second half of the shared chains'
  states.

`group_error` returns one simulated study's error (degrees from the group mean); the planner
and `benchmarks/bench_across.py` repeat it over seeds. Pure: every draw from the Generator.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import special_ortho_group

from mcmcp.sampling import sphere
from mcmcp.sim.chains import simulate_chains
from mcmcp.sim.relay import PeopleAgent, individual_prototypes, simulate_relay

DESIGNS = ("within", "across")


def group_error(design: str, people: int, trials: int, chains: int, group_mean: np.ndarray,
                kappa_between: float, kappa_person: float, rng: np.random.Generator,
                per_hold: int = 10, kappa_proposal: float = 5.0, lapse: float = 0.05) -> float:
    """Degrees between one simulated study's group prototype and `group_mean` (d,): `people`
    people give `trials` trials each of the emotion, in the `design` within (each their own
    `chains` chains) or across (`chains` shared chains, holds of `per_hold` trials; trials must
    be a multiple of per_hold)."""
    d = len(group_mean)
    mine = individual_prototypes(group_mean, kappa_between, people, rng)
    if design == "within":
        per_chain = trials // chains
        starts = np.concatenate([sphere.fibonacci_sphere(chains, d)
                                 @ special_ortho_group.rvs(d, random_state=rng).T
                                 for _ in range(people)])
        agent = PeopleAgent(mine, kappa_person, lapse=lapse)
        trace = simulate_chains(starts, per_chain, kappa_proposal, agent,
                                np.repeat(np.arange(people), chains), None, rng)
        kept = np.concatenate([trace.current[1:], trace.final.position[None]])[per_chain // 2:]
        each = sphere.spherical_mean(kept.reshape(len(kept), people, chains, d)
                                     .transpose(1, 0, 2, 3).reshape(people, -1, d), axis=1)
        estimate = sphere.spherical_mean(each)
    else:
        holds = np.repeat(mine, trials // per_hold, axis=0)  # each person's holds in turn
        rounds = len(holds) // chains
        starts = sphere.fibonacci_sphere(chains, d) @ special_ortho_group.rvs(
            d, random_state=rng).T
        relay = simulate_relay(starts, holds[:rounds * chains].reshape(rounds, chains, d),
                               per_hold, kappa_person, rng, kappa_proposal, lapse)
        kept = relay.states[len(relay.states) // 2 + 1:]
        estimate = sphere.spherical_mean(kept.reshape(-1, d))
    return float(np.degrees(sphere.geodesic(estimate, group_mean)))


def people_needed(errors: dict[int, list[float]], target_deg: float, share: float = 0.8
                  ) -> int | None:
    """The fewest people (a key of `errors`: people -> simulated studies' errors in degrees)
    whose studies reach `target_deg` in at least `share` of the seeds, with every larger
    study too; None if none does."""
    ok = [p for p in sorted(errors)
          if np.mean(np.asarray(errors[p]) <= target_deg) >= share]
    for p in ok:
        if all(q in ok for q in errors if q >= p):
            return p
    return None


def compare(trials: int, shared: int, per_hold: int, d: int, kappa_between: float,
            kappa_person: float, people: list[int], seeds: int, target_deg: float,
            share: float = 0.8, seed: int = 0, within: tuple[int, ...] = (1, 2, 4)
            ) -> list[dict]:
    """Within against across for the same participant time: every person gives `trials`
    trials of an emotion. Designs: within, each person's own c chains of trials / c trials (c
    in `within`, where it divides); across, `shared` shared chains, holds of `per_hold`. For
    each design and number of people, `seeds` simulated studies (`group_error`, group mean a
    fixed point of S^(d-1)). One row per design: design, chains, label, errors (people ->
    degrees per study), people_needed (`people_needed` at target_deg and share; None: more
    than the largest number tried)."""
    mean = np.zeros(d)
    mean[-1] = 1.0
    designs = [("within", c) for c in within if trials % c == 0] + [("across", shared)]
    out = []
    for design, chains in designs:
        errors = {n: [group_error(design, n, trials, chains, mean, kappa_between, kappa_person,
                                  np.random.default_rng([seed, s, n, chains,
                                                         design == "across"]),
                                  per_hold=per_hold)
                      for s in range(seeds)] for n in people}
        label = (f"within, {chains} own chain(s) x {trials // chains} trials"
                 if design == "within"
                 else f"across, {chains} shared chains, holds of {per_hold}")
        out.append({"design": design, "chains": chains, "label": label, "errors": errors,
                    "people_needed": people_needed(errors, target_deg, share)})
    return out
