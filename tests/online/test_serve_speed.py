"""What makes an answer cheap must not change what it shows or counts: a server process keeps
each child's part of decoding (`cache_identities`) and draws the same faces; the experimenter
page counts catch answers instead of reading them, with the report's numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.diagnostics import catch_accuracy
from mcmcp.online.monitor import _catch
from vae.model import ModelConfig, build_model


def test_cached_identities_decode_the_same_faces():
    torch.manual_seed(0)
    model = build_model(ModelConfig(image_size=(16, 16)), seed=0).eval()
    torch.nn.init.normal_(model.decoder.out.weight, std=0.3)  # else the skips are unused
    refs = torch.rand(3, 1, 16, 16)
    model.set_default_identity(refs[0], "A")
    children = model.identity_code(refs[1:])
    z = torch.nn.functional.normalize(torch.randn(5, 3), dim=1)
    with torch.no_grad():
        full_default = model.decode(z)
        full_mixed = model.decode(z[:4], children[[0, 1, 1, 0]])
    model.cache_identities()
    for _ in range(2):  # computing the cache, then reading it
        with torch.inference_mode():
            default = model.decode(z)
            mixed = model.decode(z[:4], children[[0, 1, 1, 0]])
            one = model.decode(z[2:3], children[1])
        assert torch.allclose(default, full_default, atol=1e-6)
        assert torch.allclose(mixed, full_mixed, atol=1e-6)
        assert torch.allclose(one, full_mixed[2:3], atol=1e-6)
    assert len(model._identity_cache) == 4  # the default's code, three references' features
    model.set_default_identity(refs[2], "B")  # another default child: not the cached one
    with torch.inference_mode():
        other = model.decode(z)
    with torch.no_grad():  # the cache is never used with gradients (training)
        assert torch.allclose(other, model.decode(z, model.identity_code(refs[2:3])), atol=1e-6)


@pytest.mark.parametrize("answers", [[], [None], [True, True, True, True, False],
                                     [True, False, False, None], [True] * 9])
def test_catch_numbers_from_counts_equal_the_reports(answers):
    rows = pd.DataFrame({"participant": "P1", "kind": ["catch"] * len(answers) + ["chain"],
                         "correct": pd.array([*answers, None], dtype="boolean")})
    report = catch_accuracy(rows).iloc[0]
    scored = [a for a in answers if a is not None]
    got = _catch(len(scored), sum(scored))
    assert got["catch_n"] == report["n_catch"]
    assert got["catch_flagged"] == report["flagged"]
    if np.isnan(report["accuracy"]):
        assert got["catch_accuracy"] is None
    else:
        assert got["catch_accuracy"] == pytest.approx(report["accuracy"])


def test_page_recomputes_r_hats_only_within_its_cpu_budget(tmp_path, monkeypatch):
    from sqlalchemy import event
    from starlette.testclient import TestClient

    from mcmcp.online import monitor as monitor_module
    from tests.online.test_serve import begin, finish, online_config, serve, step, to_trial

    config = online_config(tmp_path, trials={"per_chain": 4, "practice": 0, "catch_rate": 0.5,
                                             "break_every": 0})
    study, client = serve(config, f"sqlite:///{tmp_path / 'db.sqlite'}")
    view = to_trial(client, begin(client, participant="B1"))
    for _ in range(6):  # in progress: its R-hat waits for the page's CPU credit
        view = step(client, view)
    monkeypatch.setattr(monitor_module, "RHAT_CREDIT_S", 0.0)  # no CPU for R-hats at all
    page = monitor_module.Monitor(study.db, study.cfg.name, study.d, study.n_shown)
    statements = []
    event.listen(study.db.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *args: statements.append(statement))
    data = page.summary()
    assert not [s for s in statements if "FROM trials" in s and "count(" not in s]
    (b1,) = data["participants"]
    assert b1["rhat_time"] is None and b1["catch_n"] > 0  # counted, not read
    monkeypatch.setattr(monitor_module, "RHAT_CREDIT_S", 1.0)
    monkeypatch.setattr(monitor_module, "RHAT_SHARE", 1e6)  # the credit back at once
    other = TestClient(client.app)
    finish(other, begin(other, participant="B2"), np.random.default_rng(2))
    assert all(p["rhat_time"] is not None for p in page.summary()["participants"])
