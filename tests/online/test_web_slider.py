"""A GSP study in a real browser (Debian's chromium via Playwright) against a real `python -m
mcmcp.serve`: the slider page moved by keys, by mouse drag and by touch drag, reloads that come
back to the same trial, the completion code, the handle's path in the export, and the export
read by `analysis.report` unchanged."""

from __future__ import annotations

import asyncio
import hashlib

import pandas as pd
import pytest
from playwright.async_api import async_playwright
from webserver import BROWSER_ARGS, CHROMIUM, Server, free_port, patient_context

from mcmcp.online.database import Database
from mcmcp.online.export import export
from mcmcp.online.slider import MAX_MOVES
from mcmcp.store import read_trials
from tests.online.test_serve import ONLINE, online_config
from tests.online.test_web_browser import NEXT, READY

pytestmark = [pytest.mark.browser, pytest.mark.slow]
K = 16
# 2100 key presses away from the start and back, as keydown events (Playwright's own presses
# would take a minute); returns how many
JIGGLE = """(start) => {
    const [away, back] = start < 15 ? ['ArrowRight', 'ArrowLeft'] : ['ArrowLeft', 'ArrowRight'];
    for (let i = 0; i < 2100; i++) {
        document.dispatchEvent(new KeyboardEvent('keydown', {key: i % 2 ? back : away}));
    }
    return 2100;
}"""


def gsp_config(tmp_path, port: int, faces: str = "server", **changes):
    return online_config(
        tmp_path, name="gsp_small", paradigm="gsp", emotions=["happy"], gsp={"points": K},
        chains={"per_emotion": 2, "adapt": None}, gate={"kind": "none"},
        trials={"per_chain": 3, "practice": 1, "catch_rate": 0.0, "repeat_rate": 0.0,
                "break_every": 0},
        online={**ONLINE, "redirect_url": f"http://127.0.0.1:{port}/experimenter?from=study",
                "faces": faces},
        **changes)


def target(participant: str, progress: str) -> int:
    """The slider position a simulated person settles on (fixed by who and which trial)."""
    return hashlib.sha256(f"{participant}|{progress}".encode()).digest()[0] % K


async def slider_state(page) -> dict:
    await page.wait_for_selector(READY)
    return await page.evaluate("""async () => {
        const a = document.getElementById('app');
        const out = {kind: a.dataset.kind, screen: a.dataset.screen};
        if (a.dataset.kind !== 'trial') return out;
        const view = await (await fetch('api/state', {cache: 'no-store'})).json();
        return {...out, progress: document.getElementById('progress').textContent,
                keys: view.screen.images, start: view.screen.slider.start,
                position: Number(document.getElementById('handle').dataset.position),
                shown: document.querySelector('#faces img').dataset.key};
    }""")


async def drag(page, cdp, position: int, touch: bool) -> None:
    """Press on the handle, move in small steps to `position`'s cell, release."""
    track = await page.eval_on_selector("#track", "t => { const b = t.getBoundingClientRect();"
                                                  " return [b.left, b.top, b.width, b.height]; }")
    handle = await page.eval_on_selector("#handle", "h => { const b = h.getBoundingClientRect();"
                                                    " return [b.left + b.width / 2,"
                                                    " b.top + b.height / 2]; }")
    left, top, width, height = track
    x1, y = left + width * (position + 0.5) / K, top + height / 2
    points = [(handle[0] + (x1 - handle[0]) * i / 8, y) for i in range(9)]
    if touch:
        def event(kind, pts):
            return cdp.send("Input.dispatchTouchEvent", {
                "type": kind, "touchPoints": [{"x": x, "y": yy} for x, yy in pts]})
        await event("touchStart", [(handle[0], handle[1])])
        for p in points:
            await event("touchMove", [p])
        await event("touchEnd", [])
    else:
        await page.mouse.move(*handle)
        await page.mouse.down()
        for p in points:
            await page.mouse.move(*p)
        await page.mouse.up()


async def take_part(browser, base: str, participant: str, how: str, shots=None) -> dict:
    """One participant from the link to the redirect. how: keys | drag | touch. Returns the
    positions confirmed (with each trial's keys and start) and what reloads showed."""
    touch = how == "touch"
    context = await patient_context(browser, viewport={"width": 1200, "height": 800},
                                        has_touch=touch)
    page = await context.new_page()
    cdp = await context.new_cdp_session(page) if touch else None
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    await page.goto(f"{base}/?participant={participant}")
    confirmed, reloads, trials = [], [], 0
    while True:
        now = await slider_state(page)
        kind = now["kind"]
        if kind == "end":
            break
        if kind == "consent":
            await (page.tap("#agree") if touch else page.click("#agree"))
        elif kind != "trial":
            await page.keyboard.press(" ")
        else:
            trials += 1
            goal = target(participant, now["progress"])
            presses = abs(goal - now["start"])
            if how == "keys":
                if trials == 5:  # a restless participant: more moves than a path keeps
                    presses += await page.evaluate(JIGGLE, now["start"])
                step = "ArrowRight" if goal > now["start"] else "ArrowLeft"
                for _ in range(abs(goal - now["start"])):
                    await page.keyboard.press(step)
            else:
                await drag(page, cdp, goal, touch)
            moved = await slider_state(page)
            assert moved["position"] == goal, (moved, goal)
            assert moved["shown"] == now["keys"][goal]  # the face of the handle's position
            if trials == 3:  # a reload mid-trial: the same trial, the handle back at its start
                if shots:
                    await page.screenshot(path=str(shots))
                await page.reload()
                again = await slider_state(page)
                reloads.append((now, again))
                continue  # answer it afresh
            confirmed.append({"progress": now["progress"], "position": goal,
                              "start": now["start"], "moves": min(presses, MAX_MOVES)})
            if how == "keys":
                await page.keyboard.press(" ")
            elif touch:
                await page.tap("#ok")
            else:
                await page.click("#ok")
        await page.wait_for_function(NEXT, arg=[now["screen"]])
    code = await page.text_content("#code-value")
    await page.wait_for_url("**/experimenter?from=study")
    await context.close()
    return {"confirmed": confirmed, "code": code, "reloads": reloads, "errors": errors}


def test_gsp_study_in_chromium_by_keys_drag_and_touch(tmp_path):
    port = free_port()
    config = gsp_config(tmp_path, port)
    url = f"sqlite:///{tmp_path / 'online.sqlite'}"

    async def study(base: str):
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            results = await asyncio.gather(
                take_part(browser, base, "K1", "keys"),
                take_part(browser, base, "D1", "drag", shots=tmp_path / "slider.png"),
                take_part(browser, base, "T1", "touch"))
            await browser.close()
            return dict(zip(["K1", "D1", "T1"], results, strict=True))

    with Server(config, url, tmp_path / "server.log", port=port) as server:
        results = asyncio.run(study(server.url))

    folders = {f.parent.name: f for f in export(Database(url), tmp_path / "out")}
    device = {"K1": "keyboard", "D1": "mouse", "T1": "touch"}
    for pid, result in results.items():
        assert result["errors"] == [] and result["code"] == "CODE-123", result
        [(before, after)] = result["reloads"]
        assert after == before  # same screen, faces, start; handle back at the start
        df = read_trials(folders[f"sub-{pid}"] / "trials.csv")
        assert len(df) == len(result["confirmed"]) == 7 and (df["paradigm"] == "gsp").all()
        assert (df["device"] == device[pid]).all()
        assert (df["key"].isna() if pid != "K1" else df["key"] == "space").all()
        positions = [c["position"] for c in result["confirmed"]]
        shift, k = df["gsp_shift"].to_numpy(int), df["gsp_points"].to_numpy(int)
        # the server maps each confirmed position to its circle point with the trial's shift
        assert df["gsp_choice"].tolist() == ((pd.Series(positions) + shift) % k).tolist()
        assert [(c["start"] + s) % K for c, s in zip(result["confirmed"], shift,
                                                       strict=True)] == df["gsp_start"].tolist()
        moves = pd.read_csv(folders[f"sub-{pid}"] / "slider_moves.csv")
        last = moves.groupby("row").last()
        for row, c in enumerate(result["confirmed"]):
            if c["moves"] == 0:  # confirmed where it started: no path
                assert row not in last.index
                continue
            assert last.loc[row, "position"] == c["position"]
            assert last.loc[row, "point"] == df["gsp_choice"].iloc[row]
            if pid == "K1":  # one recorded move per key press, at most MAX_MOVES
                assert (moves["row"] == row).sum() == c["moves"]
        if pid == "K1":
            assert moves.groupby("row").size().max() == MAX_MOVES
        assert (moves["t"] > 0).all() and (moves.groupby("row")["t"].diff().dropna() >= 0).all()
        assert (moves["t"] <= df["rt"].iloc[moves["row"]].to_numpy()).all()

    from analysis.report import main as report

    assert report([str(tmp_path / "out"), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "index.html").is_file()
