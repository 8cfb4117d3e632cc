"""The lab wing: a session in a PsychoPy window (`python -m mcmcp.run`).

- `screen`: the window, keys, mouse and frame timing (the ONLY module that imports PsychoPy);
- `launch`: opens a checked session's inputs, display and files, and runs the shared session loop.

It builds on the session core (`mcmcp.engine`, `mcmcp.session`, `mcmcp.store`, ...) and never
imports another wing or `analysis`.
"""
