"""Synthetic participants who break the Luce rule's assumptions, to test the checks that must
catch them: a side press (some answers follow the side of the screen, not the faces) and a
prototype that moves during the session. Benchmarks and tests only; like every agent they never
touch chains, files or global random state.
"""

from __future__ import annotations

import numpy as np

from mcmcp.agents import Choice, LuceAgent


class SidePress:
    """Wraps an agent: on a share `share` of trials (at random) the answer is `side` ('left' or
    'right') whatever the faces; otherwise the wrapped agent answers. RTs are the agent's."""

    def __init__(self, agent: LuceAgent, share: float, side: str = "left") -> None:
        if side not in ("left", "right") or not 0.0 <= share <= 1.0:
            raise ValueError(f"side must be left or right and share in [0, 1], got {side!r}, "
                             f"{share}")
        self.agent, self.share, self.side = agent, float(share), side
        self.name = f"{agent.name}+side"

    def reset(self) -> None:
        self.agent.reset()

    def choose(self, emotion, left: np.ndarray, right: np.ndarray, rng: np.random.Generator,
               identity=None) -> Choice:
        answer = self.agent.choose(emotion, left, right, rng, identity)
        pressed = rng.random(len(left)) < self.share
        return Choice(np.where(pressed, self.side == "right", answer.chose_right), answer.rt)


class Moving:
    """Two agents in turn: chain k's first `switch` shown trials are answered by `before`, the
    rest by `after` (e.g. LatentAgents whose categories differ by 30°). Chains are told apart by
    the key `simulate_chains` passes as `identity` (give it (n,) distinct keys, e.g.
    np.arange(n).astype(str)); an agent judging codes ignores the identity, so nothing else
    changes."""

    def __init__(self, before: LuceAgent, after: LuceAgent, switch: int) -> None:
        self.before, self.after, self.switch = before, after, int(switch)
        self.name = f"{before.name}+moving"
        self.seen: dict = {}

    def reset(self) -> None:
        self.seen = {}

    def choose(self, emotion, left: np.ndarray, right: np.ndarray, rng: np.random.Generator,
               identity=None) -> Choice:
        keys = np.asarray(identity).tolist()
        done = np.array([self.seen.get(k, 0) for k in keys])
        for k in keys:
            self.seen[k] = self.seen.get(k, 0) + 1
        late = done >= self.switch
        a = self.before.choose(emotion, left, right, rng)
        b = self.after.choose(emotion, left, right, rng)
        return Choice(np.where(late, b.chose_right, a.chose_right), np.where(late, b.rt, a.rt))


class Scattered(LuceAgent):
    """Participants whose categories differ: participant k's category is vMF(means[k], kappa).
    The participant of each pair is the key `simulate_chains` passes as `identity` (the index
    k as a string, one per chain: give every chain of participant k the key str(k))."""

    name = "scattered"

    def __init__(self, means: np.ndarray, kappa: float, **luce) -> None:
        super().__init__(**luce)
        self.means, self.kappa = np.asarray(means, float), float(kappa)

    def log_preference(self, emotion, x: np.ndarray, identity=None) -> np.ndarray:
        who = np.asarray(identity).astype(int)
        return self.kappa * np.einsum("nd,nd->n", x, self.means[who])
