"""The simulation wing: studies answered by synthetic agents, and the planner.

- `chains`: the vectorised simulator (many chains of one emotion in lockstep);
- `study`: simulated participants and studies, written like lab data;
- `layout`: one simulated participant's rows in the order a session would have written them;
- `sweeps`: many independent simulations on Dask;
- `planner`: a grid of designs, simulated and judged as the report would judge them.

Commands: `python -m mcmcp.simulate` and `python -m mcmcp.plan`. It never imports another wing.
"""
