"""Analysis of MCMCP data: files -> tidy tables -> diagnostics -> prototypes -> report.

Reads what `mcmcp` writes (never imports its session code); `mcmcp` never imports this package.
"""

from analysis.load import chain_states, load_sessions, load_trials, to_draws

__all__ = ["load_trials", "load_sessions", "chain_states", "to_draws"]
