"""Analysis of MCMCP data: files -> tidy tables -> diagnostics -> prototypes -> report.

Reads what `mcmcp` writes (never imports its session code); `mcmcp` never imports this package.
The names below are imported on first use, so `python -m analysis.report --help` starts fast.
"""

__all__ = ["load_trials", "load_sessions", "chain_states", "to_draws"]


def __getattr__(name: str):
    if name in __all__:
        from analysis import load

        return getattr(load, name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
