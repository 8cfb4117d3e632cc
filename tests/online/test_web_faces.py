"""Faces drawn by the participant's browser (`online.faces: browser`): the page's decoder
(web/decoder.js) in Debian's chromium gives the model's own pixels, for the committed model and
for every kind of decoder it runs; a study served that way sends no PNG, its pages show the
model's faces from consent to the end, and the decoder's bundles go only to a session's page,
only for the study's children. Bad settings are refused at start with a clear line."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx2
import numpy as np
import pytest
import torch
from playwright.async_api import async_playwright
from webserver import BROWSER_ARGS, CHROMIUM, ROOT, Server, free_port, patient_context

from mcmcp.config import ConfigError, load_config
from mcmcp.identities import reference_codes
from mcmcp.online.database import Database
from mcmcp.online.faces import child_bundle, decoder_bundle
from mcmcp.online.study import OnlineStudy
from tests.online.test_serve import ONLINE, online_config
from tests.online.test_web_browser import NEXT, READY
from tests.online.test_web_slider import gsp_config
from tests.online.test_web_slider import take_part as take_part_gsp
from vae.checkpoint import load_checkpoint, save_checkpoint
from vae.model import ModelConfig, build_model
from vae.procedural.faces import generate_faces
from vae.store import read_store, write_store

DECODER_JS = (ROOT / "mcmcp/online/web/decoder.js").read_text()
DEFAULT = ROOT / "vae/checkpoints/default.pt"
# the page's decoder, loaded as a plain script: every code decoded by `decode`, 8-bit pixels back
DECODE_ALL = """([model, child, codes]) => {
    const prep = (b) => {
        const tensors = {};
        for (const [name, t] of Object.entries(b.tensors)) tensors[name] = tensor(t);
        return {...b, tensors};
    };
    const m = prep(model), c = prep(child);
    return codes.map((code) => Array.from(decode(m, c, code).pixels));
}"""
# the faces on screen: each <img>'s key and its pixels as the page holds them (red channel)
ON_SCREEN = """() => [...document.querySelectorAll('#faces img')].map((img) => {
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
    const grey = [];
    for (let i = 0; i < rgba.length; i += 4) grey.push(rgba[i]);
    return {key: img.dataset.key, pixels: grey};
})"""


def pixels(model, codes: np.ndarray, identity: torch.Tensor | None) -> np.ndarray:
    """(n, H*W) 8-bit pixels of `model.decode` as the server's PNGs hold them."""
    with torch.no_grad():
        z = torch.as_tensor(codes, dtype=torch.float32)
        images = model.decode(z, None if identity is None else identity.expand(len(z), -1))
    return np.rint(images[:, 0].numpy().astype(np.float64) * 255).reshape(len(z), -1)


def random_model(**changes):
    """An untrained decoder of the given kind with random weights (scaled to keep pixels
    away from black and white) and a random child."""
    config = ModelConfig(**{"image_size": (16, 16), "channels": (4, 8), "hidden": 8,
                            "identity_channels": (3, 5), **changes})
    model = build_model(config, seed=0).eval()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.copy_(0.4 * torch.randn(p.shape, generator=generator))
        if config.kind == "identity":
            reference = torch.rand(1, 1, *config.image_size, generator=generator)
            return model, model.identity_code(reference)
    return model, None


def codes(n: int, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).normal(size=(n, 3))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


async def browser_pixels(cases) -> list[np.ndarray]:
    """Each (model, identity, codes) decoded by web/decoder.js in chromium."""
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = await (await patient_context(browser)).new_page()
        await page.set_content("<html><body></body></html>")
        await page.add_script_tag(content=DECODER_JS)
        out = []
        for model, identity, z in cases:
            got = await page.evaluate(DECODE_ALL, [decoder_bundle(model),
                                                   child_bundle(model, identity), z.tolist()])
            out.append(np.asarray(got, dtype=np.float64))
        await browser.close()
    return out


@pytest.mark.browser
@pytest.mark.slow
def test_the_browsers_decoder_draws_the_models_pixels_for_every_decoder_it_runs():
    """200 random faces of the committed model (its default child and a mirrored one) and 100
    of random-weight decoders of each other kind (identity skip with nearest resizes and
    radius 2, plain, warp with nearest resizes, warp with templates, placed by the flow or by
    the finer flow, mixed linearly or by bumps on the sphere, the last stage seeing the
    reference unmoved too or not): every 8-bit pixel equals the
    model's own but for float rounding on the other side of a half (at most 1 grey level, at
    most 1 pixel in 2,000)."""
    committed = load_checkpoint(DEFAULT).model.eval()
    with torch.no_grad():
        mirrored = committed.identity_code(committed.default_reference.flip(-1))
    cases = [(committed, None, codes(100, 0)), (committed, mirrored, codes(100, 1))]
    for changes in ({"decoder": "skip", "upsample": "nearest", "radius": 2.0},
                    {"kind": "plain", "upsample": "bilinear"},
                    {"decoder": "warp", "upsample": "nearest", "max_shift": 3.0},
                    {"decoder": "warp", "upsample": "bilinear", "templates": 3},
                    {"decoder": "warp", "upsample": "bilinear", "templates": 3,
                     "templates_fine": True},
                    {"decoder": "warp", "upsample": "bilinear", "templates": 3,
                     "templates_fine": True, "templates_mix": "vmf"},
                    {"decoder": "warp", "upsample": "bilinear", "templates": 3,
                     "templates_fine": True, "templates_mix": "vmf", "still_reference": True}):
        model, identity = random_model(**changes)
        cases.append((model, identity, codes(100, 2)))
    for (model, identity, z), got in zip(cases, asyncio.run(browser_pixels(cases)), strict=True):
        want = pixels(model, z, identity)
        differ = np.abs(got - want)
        assert want.std() > 20  # the faces are not flat: the comparison has something to miss
        assert differ.max() <= 1 and (differ > 0).mean() <= 5e-4, (
            model.config.decoder, differ.max(), (differ > 0).sum())


def test_a_transposed_decoder_is_refused_for_the_browser_with_the_fix(tmp_path):
    config = ModelConfig(kind="plain", upsample="transposed", image_size=(16, 16),
                         channels=(4, 8), hidden=8)
    ckpt = save_checkpoint(tmp_path / "legacy.pt", build_model(config, seed=0), config, {},
                           "none", {})
    path = online_config(tmp_path, online={**ONLINE, "faces": "browser"})
    cfg = load_config(path)
    cfg = replace(cfg, model=replace(cfg.model, checkpoint=ckpt))
    with pytest.raises(ConfigError, match="online.faces.*'server'.*transposed"):
        OnlineStudy.open(cfg, Database(f"sqlite:///{tmp_path / 'db.sqlite'}"), str(path))
    with pytest.raises(ConfigError, match="online.faces.*'gpu'.*server, browser"):
        load_config(online_config(tmp_path, online={**ONLINE, "faces": "gpu"}))


def study_config(tmp_path, port: int):
    """The committed model on three procedural children, two of them shown (by chain)."""
    faces = write_store(generate_faces(3, 1), tmp_path / "kids.h5")
    return online_config(
        tmp_path, name="browser_faces", model={"checkpoint": str(DEFAULT), "faces": str(faces)},
        emotions=["happy"], chains={"per_emotion": 2}, gate={"kind": "none"},
        stimuli={"identity": ["syn0001", "syn0002"], "assign": "chain"},
        trials={"per_chain": 3, "practice": 1, "catch_rate": 0.0, "repeat_rate": 0.0,
                "break_every": 0},
        online={**ONLINE, "faces": "browser",
                "redirect_url": f"http://127.0.0.1:{port}/experimenter?from=study"})


async def walk(base: str, shot) -> tuple[dict, dict, list, list]:
    """One participant from the link to the end, by keys: the faces every view sent (key ->
    what), the faces on screen at each trial (key -> pixels), the replies of the decoder's
    routes to this session's page for a child not in the study and a made-up one, and page
    errors. The first trial's page is saved to `shot` (PNG)."""
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        context = await patient_context(browser, viewport={"width": 1200, "height": 800})
        page = await context.new_page()
        sent, shown, errors = {}, {}, []
        views = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on("response", lambda r: views.append(r) if "/api/" in r.url
                and "decoder" not in r.url and r.request.method in ("GET", "POST") else None)
        await page.goto(f"{base}/?participant=P001")
        while True:
            await page.wait_for_selector(READY)
            kind, screen = await page.evaluate(
                "() => [document.getElementById('app').dataset.kind,"
                " document.getElementById('app').dataset.screen]")
            if kind == "end":
                break
            if kind == "consent":
                await page.click("#agree")
            elif kind == "trial":
                if not shown:
                    await page.screenshot(path=str(shot))
                for face in await page.evaluate(ON_SCREEN):
                    shown[face["key"]] = face["pixels"]
                await page.keyboard.press("ArrowLeft")
            else:
                await page.keyboard.press(" ")
            await page.wait_for_function(NEXT, arg=[screen])
        for reply in views:
            sent.update((await reply.json()).get("images", {}))
        statuses = [await page.evaluate(
            "async (c) => (await fetch('api/decoder?child=' + c)).status", child)
            for child in ("syn0000", "nobody")]
        await browser.close()
    return sent, shown, statuses, errors


@pytest.mark.browser
@pytest.mark.slow
def test_a_study_whose_browser_draws_the_faces_shows_the_models_faces(tmp_path):
    port = free_port()
    config = study_config(tmp_path, port)
    with Server(config, f"sqlite:///{tmp_path / 'online.sqlite'}", tmp_path / "server.log",
                port=port) as server:
        # the decoder's bundles go to a session's page only
        assert httpx2.get(f"{server.url}/api/decoder").status_code == 401
        sent, shown, statuses, errors = asyncio.run(walk(server.url, tmp_path / "pair.png"))
    assert errors == []
    assert statuses == [404, 404]  # a child of the store the study does not show; none at all
    # no view carried a PNG: every face went as its child and code
    assert sent and all(isinstance(v, dict) and set(v) == {"child", "code"}
                        for v in sent.values())
    assert {v["child"] for v in sent.values()} == {"syn0001", "syn0002"}
    assert len(shown) >= 2 * 4  # practice and 3 trials of 2 chains, 2 faces each, some shared
    loaded = load_checkpoint(DEFAULT)
    identities = reference_codes(loaded, read_store(tmp_path / "kids.h5"),
                                 ["syn0001", "syn0002"])
    differ = []
    for key, got in shown.items():
        face = sent[key]
        want = pixels(loaded.model, np.array([face["code"]]), identities.stack([face["child"]]))
        differ.append(np.abs(np.asarray(got) - want[0]))
    differ = np.concatenate(differ)
    assert differ.max() <= 1 and (differ > 0).mean() <= 5e-4, (differ.max(), (differ > 0).sum())
    sessions = Database(f"sqlite:///{tmp_path / 'online.sqlite'}").all_sessions("browser_faces")
    assert [s.status for s in sessions] == ["complete"]  # saved as any study's answers


@pytest.mark.browser
@pytest.mark.slow
def test_a_gsp_study_whose_browser_draws_the_slider_faces(tmp_path):
    """The slider's K faces drawn by the page (a server with `faces: browser` has no renderer:
    a face the page could not draw would never be shown): a participant by keys from consent
    to the code, the reload mid-trial back on the same trial and faces, every handle position
    showing its own face (`take_part` checks it)."""
    port = free_port()
    faces = write_store(generate_faces(3, 1), tmp_path / "kids.h5")
    config = gsp_config(tmp_path, port, faces="browser",
                        model={"checkpoint": str(DEFAULT), "faces": str(faces)})

    async def study(base: str):
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            result = await take_part_gsp(browser, base, "K1", "keys",
                                         shots=tmp_path / "slider.png")
            await browser.close()
            return result

    with Server(config, f"sqlite:///{tmp_path / 'online.sqlite'}", tmp_path / "server.log",
                port=port) as server:
        result = asyncio.run(study(server.url))
    assert result["errors"] == [] and result["code"] == "CODE-123"
    [(before, after)] = result["reloads"]
    assert after == before and len(result["confirmed"]) == 7
