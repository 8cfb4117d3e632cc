"""Screening, the recruitment site's ends and the experimenter's release in a real browser
(Debian's chromium via Playwright) against a real `python -m mcmcp.serve`: a phone screened
out with its code, a small window asked to grow, full screen left and recorded, a decline sent
back with its code, and a session released from the experimenter page and resumed in another
browser. Screenshots of each page go to the test's folder."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import async_playwright
from webserver import BROWSER_ARGS, CHROMIUM, Server, free_port, patient_context

from mcmcp.online.database import Database
from tests.online.test_screening import POLICY
from tests.online.test_serve import online_config
from tests.online.test_web_browser import NEXT, READY

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def kind_is(page, kind: str) -> None:
    await page.wait_for_selector(f"#app[data-kind='{kind}'][data-ready='true']")


async def go_on(page) -> None:
    """Agree, continue or answer (left) the screen on show; wait for the next one."""
    await page.wait_for_selector(READY)
    screen, kind = await page.evaluate(
        "() => [document.getElementById('app').dataset.screen,"
        " document.getElementById('app').dataset.kind]")
    if kind == "consent":
        await page.click("#agree")
    else:
        await page.keyboard.press("ArrowLeft" if kind == "trial" else " ")
    await page.wait_for_function(NEXT, arg=[screen])


def events(url: str, participant: str) -> list[str]:
    db = Database(url)
    record = db.latest("small", participant)
    return [] if record is None else [e["kind"] for e in db.events(record.id)]


def test_screening_fullscreen_decline_and_release_in_chromium(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = online_config(
        tmp_path, emotions=["happy"], chains={"per_emotion": 2}, gate={"kind": "none"},
        trials={"per_chain": 2, "practice": 0, "catch_rate": 0.0, "repeat_rate": 0.0,
                "break_every": 0},
        online={**POLICY, "min_window": [900, 600],
                "decline_url": f"{base}/experimenter?from=declined"})
    url = f"sqlite:///{tmp_path / 'online.sqlite'}"

    async def study(token: str):
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)

            phone = await patient_context(browser, **p.devices["Pixel 5"])
            page = await phone.new_page()
            await page.goto(f"{base}/?participant=PH1")
            await kind_is(page, "screened_out")
            assert await page.text_content("#code-value") == "SCREENOUT1"
            assert "a phone" in await page.text_content("#message-text")
            await page.screenshot(path=str(tmp_path / "screened_out.png"))
            await phone.close()

            small = await patient_context(browser, viewport={"width": 800, "height": 500})
            page = await small.new_page()
            await page.goto(f"{base}/?participant=S1")
            await kind_is(page, "resize")
            assert "800 x 500" in await page.text_content("#message-text")
            await page.screenshot(path=str(tmp_path / "resize.png"))
            await page.set_viewport_size({"width": 1200, "height": 800})
            await kind_is(page, "consent")
            await page.screenshot(path=str(tmp_path / "consent.png"))
            await go_on(page)  # I agree: full screen
            await page.wait_for_function("document.fullscreenElement !== null")
            await go_on(page)  # instructions
            await go_on(page)  # the block's first screen
            await kind_is(page, "trial")
            screen = await page.get_attribute("#app", "data-screen")
            await page.evaluate("document.exitFullscreen()")
            await page.wait_for_selector("#app[data-blocked='true']")
            assert "full screen" in await page.text_content("#blocker-text")
            await page.screenshot(path=str(tmp_path / "fullscreen_left.png"))
            await page.keyboard.press("ArrowLeft")  # blocked: answers nothing
            assert await page.get_attribute("#app", "data-ready") == "true"
            await page.click("#fullscreen")
            await page.wait_for_selector("#app[data-blocked='false']")
            await page.set_viewport_size({"width": 700, "height": 500})  # window made smaller
            await page.wait_for_selector("#app[data-blocked='true']")
            assert "700 x 500" in await page.text_content("#blocker-text")
            await page.screenshot(path=str(tmp_path / "window_small.png"))
            await page.set_viewport_size({"width": 1200, "height": 800})
            await page.wait_for_selector("#app[data-blocked='false']")
            assert await page.get_attribute("#app", "data-screen") == screen  # still unanswered
            await go_on(page)  # the first trial answered; another browser will take over

            declined = await patient_context(browser, viewport={"width": 1200, "height": 800})
            other = await declined.new_page()
            await other.goto(f"{base}/?participant=D1")
            await kind_is(other, "consent")
            await other.click("#decline")
            await kind_is(other, "declined")
            assert await other.text_content("#code-value") == "NOCONSENT1"
            await other.screenshot(path=str(tmp_path / "declined.png"))
            await other.wait_for_url("**/experimenter?from=declined")
            await declined.close()

            # the participant lost their cookie: another browser, refused until released
            second = await patient_context(browser, viewport={"width": 1200, "height": 800})
            again = await second.new_page()
            await again.goto(f"{base}/?participant=S1")
            await kind_is(again, "error")
            boss_context = await patient_context(browser, viewport={"width": 1300, "height": 700})
            boss = await boss_context.new_page()
            boss.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await boss.goto(f"{base}/experimenter")
            await boss.fill("#token", token)
            await boss.click("#open")
            await boss.wait_for_selector("body[data-loaded='true']")
            await boss.screenshot(path=str(tmp_path / "experimenter.png"), full_page=True)
            uid = Database(url).latest("small", "S1").uid
            await boss.click(f"tr[data-uid='{uid}'] button.release")
            while "released" not in await asyncio.to_thread(events, url, "S1"):
                await asyncio.sleep(0.05)
            await again.reload()
            await kind_is(again, "trial")
            assert await again.get_attribute("#app", "data-screen") != screen
            while await again.get_attribute("#app", "data-kind") != "end":
                await go_on(again)
            assert await again.text_content("#code-value") == "CODE-123"
            await again.screenshot(path=str(tmp_path / "end.png"))
            await browser.close()

    with Server(config, url, tmp_path / "server.log", port=port) as server:
        asyncio.run(study(server.token))

    db = Database(url)
    assert db.latest("small", "PH1") is None  # screened out before anything was stored
    record = db.latest("small", "S1")
    assert record.status == "complete" and record.meta["online"]["client"]["device"] == "desktop"
    assert events(url, "S1") == ["fullscreen_exit", "fullscreen_enter", "released", "resumed"]
    assert db.latest("small", "D1").status == "declined"
