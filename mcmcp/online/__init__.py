"""The online wing: the same sessions in participants' browsers (`python -m mcmcp.serve`).

- `app`: the HTTP routes and request checks (Starlette), and the uvicorn worker factory;
- `study`: the session flow one request at a time, on the shared ask/tell engine;
- `database`: sessions and trial rows in SQLite or PostgreSQL, one transaction per answer;
- `monitor`: the experimenter page's numbers;
- `export`: the database out to the lab's `sub-*/ses-*/trials.csv` (`python -m mcmcp.export`);
- `web/`: the participant and experimenter pages.

`monitor` is this wing's one dependency on `analysis` (documented there): the live page shows
the numbers the report will show. It never imports another wing.
"""
