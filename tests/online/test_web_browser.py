"""Whole online sessions in a real browser (Debian's chromium driven by Playwright) against a
real `python -m mcmcp.serve`: keys, clicks, reloads, several participants at once, the
completion code and redirect, the experimenter page, and analysis of what was saved."""

from __future__ import annotations

import asyncio
import json

import pytest
from playwright.async_api import async_playwright
from webserver import BROWSER_ARGS, CHROMIUM, Server, free_port, patient_context, side_for

from mcmcp.online.database import Database
from mcmcp.online.export import export
from mcmcp.store import read_trials
from tests.online.test_serve import ONLINE, online_config

pytestmark = [pytest.mark.browser, pytest.mark.slow]
READY = "#app[data-ready='true']"
NEXT = ("([s]) => { const a = document.getElementById('app');"
        " return a.dataset.screen !== s && a.dataset.ready === 'true'; }")


async def state(page) -> dict:
    await page.wait_for_selector(READY)
    return await page.evaluate("""() => {
        const a = document.getElementById('app'), trial = a.dataset.kind === 'trial';
        return {kind: a.dataset.kind, screen: a.dataset.screen,
                text: trial ? '' : document.getElementById('message-text').textContent,
                progress: trial ? document.getElementById('progress').textContent : '',
                images: trial ? [...document.querySelectorAll('#faces img')]
                                .map(i => i.dataset.key) : []}; }""")


async def take_part(browser, base: str, participant: str, how: str, reload_at=()) -> dict:
    """One participant from the link to the redirect. how: 'keys' or 'clicks'. reload_at:
    (kind, count) pairs: reload when the count-th screen of that kind is on show and check
    the page comes back to exactly that screen. Returns what was chosen and seen."""
    context = await patient_context(browser, viewport={"width": 1200, "height": 800})
    page = await context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    await page.goto(f"{base}/?participant={participant}")
    chosen, seen, reloads = [], {}, []
    while True:
        now = await state(page)
        kind = now["kind"]
        seen[kind] = seen.get(kind, 0) + 1
        if (kind, seen[kind]) in reload_at:
            await page.reload()
            again = await state(page)
            reloads.append((now, again))
            now = again
        if kind == "end":
            break
        if kind == "consent":
            await page.click("#agree")
        elif kind == "trial":
            side = side_for(participant, now["progress"])
            chosen.append(side)
            if how == "keys":
                await page.keyboard.press("ArrowLeft" if side == "left" else "ArrowRight")
            else:
                await page.click(f"#faces img.{side}")
        elif how == "keys":
            await page.keyboard.press(" ")
        else:
            await page.click("#continue")
        await page.wait_for_function(NEXT, arg=[now["screen"]])
    code = await page.text_content("#code-value")
    await page.wait_for_url("**/experimenter?from=study")
    await context.close()
    return {"chosen": chosen, "code": code, "reloads": reloads, "errors": errors}


async def second_browser(browser, base: str, participant: str) -> str:
    context = await patient_context(browser)
    page = await context.new_page()
    await page.goto(f"{base}/?participant={participant}")
    await page.wait_for_selector("#app[data-kind='error']")
    text = await page.text_content("#message-text")
    await context.close()
    return text


async def experimenter_page(browser, base: str, token: str, shot) -> list[str]:
    context = await patient_context(browser, viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    await page.goto(f"{base}/experimenter")
    await page.fill("#token", token)
    await page.click("#open")
    await page.wait_for_selector("body[data-loaded='true']")
    await page.screenshot(path=str(shot), full_page=True)
    rows = await page.eval_on_selector_all("#participants tbody tr td:first-child",
                                           "cells => cells.map(c => c.textContent)")
    await context.close()
    return rows


def test_participants_at_once_with_keys_clicks_and_reloads(tmp_path):
    port = free_port()
    # unguided: analysis.prototypes cannot fit a vMF to PSIS weights piled on one state, which
    # chains of 4 trials give (an analysis issue, not an online one)
    config = online_config(tmp_path, gate={"kind": "none"}, online={
        **ONLINE, "redirect_url": f"http://127.0.0.1:{port}/experimenter?from=study"})
    url = f"sqlite:///{tmp_path / 'online.sqlite'}"

    async def study(base: str, token: str):
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            a = asyncio.create_task(take_part(browser, base, "A1", "keys"))
            b = asyncio.create_task(take_part(browser, base, "B1", "clicks"))
            c = asyncio.create_task(take_part(browser, base, "C1", "keys",
                                              reload_at={("trial", 4), ("block", 1)}))
            while not await asyncio.to_thread(_started, url, "A1"):
                await asyncio.sleep(0.05)
            elsewhere = await second_browser(browser, base, "A1")
            results = dict(zip(["A1", "B1", "C1"], await asyncio.gather(a, b, c), strict=True))
            names = await experimenter_page(browser, base, token, tmp_path / "experimenter.png")
            await browser.close()
            return results, elsewhere, names

    with Server(config, url, tmp_path / "server.log", port=port) as server:
        results, elsewhere, names = asyncio.run(study(server.url, server.token))

    assert "another browser" in elsewhere
    assert sorted(names) == ["A1", "B1", "C1"]
    c_reloads = results["C1"]["reloads"]
    assert len(c_reloads) == 2
    for before, after in c_reloads:  # exactly where they were: same screen, pair, progress
        assert after == before
    assert {before["kind"] for before, _ in c_reloads} == {"trial", "block"}
    db = Database(url)
    folders = {f.parent.name: f for f in export(db, tmp_path / "out")}
    n_shown = json.loads((folders["sub-A1"] / "session.json").read_text())["shown_trials"]
    for pid, result in results.items():
        assert result["errors"] == [] and result["code"] == "CODE-123"
        df = read_trials(folders[f"sub-{pid}"] / "trials.csv")
        shown = df[df["kind"] != "gate"]
        assert len(shown) == n_shown == len(result["chosen"])
        assert shown["response"].tolist() == result["chosen"]  # keys and clicks map to sides
        assert df["row"].tolist() == list(range(len(df)))
        assert ((shown["rt"] > 0) & (shown["rt"] < 30)).all() and (shown["onset"] > 0).all()
        gaps = shown["gap"].dropna()
        assert len(gaps) >= n_shown // 2 and (gaps >= 0.05).all()  # fixation 0.05 s at least

    from analysis.report import main as report

    assert report([str(tmp_path / "out"), "--out", str(tmp_path / "report")]) in (0, None)
    assert (tmp_path / "report" / "index.html").is_file()


def _started(url: str, participant: str) -> bool:
    return any(r.participant == participant and r.n_rows > 0
               for r in Database(url).all_sessions())
