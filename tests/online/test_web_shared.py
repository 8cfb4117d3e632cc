"""Two participants sharing one chain in a real browser (Debian's chromium driven by Playwright,
two browser contexts) against a real `python -m mcmcp.serve`: the second is told to wait while
the first holds the chain, and goes on by itself once it is handed back; the chain is one
unbroken line moved by both. Screenshots of the shared trial and of the wait page are kept in
the test's folder."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import async_playwright
from webserver import BROWSER_ARGS, CHROMIUM, Server, patient_context, side_for

from mcmcp.chainstore import ChainStore
from tests.online.test_serve import ONLINE, online_config
from tests.online.test_web_browser import NEXT, state

pytestmark = [pytest.mark.browser, pytest.mark.slow]
WAITED = ("() => { const a = document.getElementById('app');"
          " return a.dataset.kind !== 'wait' && a.dataset.ready === 'true'; }")


async def until(page, kind: str) -> dict:
    """Continue (SPACE, or agree) through message screens until a `kind` screen is on show."""
    while True:
        now = await state(page)
        if now["kind"] == kind:
            return now
        if now["kind"] == "consent":
            await page.click("#agree")
        else:
            await page.keyboard.press(" ")
        await page.wait_for_function(NEXT, arg=[now["screen"]])


async def answer_all(page, participant: str) -> list[str]:
    """Answer every trial with keys (`side_for`) until the end page; the sides chosen."""
    chosen = []
    while True:
        now = await state(page)
        if now["kind"] == "end":
            return chosen
        if now["kind"] == "trial":
            side = side_for(participant, now["progress"])
            chosen.append(side)
            await page.keyboard.press("ArrowLeft" if side == "left" else "ArrowRight")
        elif now["kind"] == "wait":  # the same screen id: the trial it waited for is due
            await page.wait_for_function(WAITED, timeout=60_000)
            continue
        else:
            await page.keyboard.press(" ")
        await page.wait_for_function(NEXT, arg=[now["screen"]])


def test_two_participants_share_a_chain_in_chromium(tmp_path):
    config = online_config(
        tmp_path, gate={"kind": "none"},
        chains={"across_participants": True, "per_emotion": 1, "lease_seconds": 60},
        trials={"per_chain": 40, "per_hold": 2, "per_participant": 2, "practice": 0,
                "catch_rate": 0.0, "repeat_rate": 0.0},
        online={**ONLINE, "redirect_url": None})
    url = f"sqlite:///{tmp_path / 'online.sqlite'}"

    async def study(base: str):
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            pages = {}
            for who in ("A", "B"):
                context = await patient_context(browser, viewport={"width": 1200, "height": 800})
                pages[who] = await context.new_page()
                pages[who].errors = []
                pages[who].on("pageerror", lambda err, w=who: pages[w].errors.append(str(err)))
            await pages["A"].goto(f"{base}/?participant=A")
            trial = await until(pages["A"], "trial")
            await pages["A"].screenshot(path=str(tmp_path / "shared-trial.png"))
            await pages["B"].goto(f"{base}/?participant=B")
            wait = await until(pages["B"], "wait")
            await pages["B"].screenshot(path=str(tmp_path / "wait.png"))
            continue_shown = await pages["B"].is_visible("#continue")
            a = await answer_all(pages["A"], "A")
            b = await answer_all(pages["B"], "B")  # goes on by itself once A hands it back
            errors = pages["A"].errors + pages["B"].errors
            await browser.close()
            return trial, wait, continue_shown, a, b, errors

    with Server(config, url, tmp_path / "server.log") as server:
        trial, wait, continue_shown, a, b, errors = asyncio.run(study(server.url))

    assert errors == []
    assert len(trial["images"]) == 2
    assert "next face is being prepared" in wait["text"] and not continue_shown
    assert len(a) == len(b) == 2
    store = ChainStore(url)
    assert store.check("small") == []
    steps = store._step_frame("small")
    assert steps["participant"].tolist() == ["A", "A", "B", "B"]
    assert steps["response"].tolist() == a + b
    leases = store.leases("small")
    assert leases["participant"].tolist() == ["A", "B"]
    assert (leases["end_reason"] == "released").all()
