"""The maths every way of running a study shares, as pure, vectorised functions.

- `sphere`: geometry and von Mises-Fisher sampling on S^(d-1);
- `chain`: the MCMCP step (propose, step, Barker acceptance, proposal adaptation);
- `gsp`: the GSP step (a great circle through the state, the slider's choice);
- `gate`: the gatekeeper of guided MCMCP (screen a proposal by Barker on g^gamma);
- `densities`: category densities of agents and gatekeepers, and fitting them to faces;
- `seeds`: the counter-based random streams every session and simulation draws from.

Nothing here does I/O, keeps global state, or imports anything else of `mcmcp` or `analysis`.
"""
