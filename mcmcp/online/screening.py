"""Screening in the browser: what the page measured about the participant's device, checked,
and the YAML's policy applied to it (`online.min_window`, `online.devices`).

The page measures (window and screen size in CSS pixels, device pixel ratio, refresh-rate
estimate, pointer kind, touch points); the server bounds every number, adds the browser named by
its User-Agent, decides the kind of device and whether the study may go on. Everything measured
is stored per session (session.json `online.client`). A device the study does not allow ends
with the screen-out code or return link; a window too small only asks for a larger one (nothing
is stored until it fits), and the page keeps asking if it shrinks later (`mcmcp/online/web`).
"""

from __future__ import annotations

import re

from mcmcp.specs import OnlineSpec

_BROWSERS = (("Edge", r"Edg/(\d+)"), ("Opera", r"OPR/(\d+)"), ("Firefox", r"Firefox/(\d+)"),
             ("Chrome", r"(?:Chrome|CriOS)/(\d+)"), ("Safari", r"Version/(\d+)[.\d]* .*Safari/"))
DEVICE_TEXT = {
    "phone": "a phone",
    "tablet": "a tablet",
    "desktop": "a desktop or laptop computer",
}


def _size(value: object, name: str) -> list[int]:
    if not (isinstance(value, list) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 100_000
            for v in value)):
        raise ValueError(f"client.{name} must be [width, height] in CSS pixels")
    return value


def _number(value: object, name: str, lo: float, hi: float, nullable: bool = False
            ) -> float | None:
    if value is None and nullable:
        return None
    # comparisons only: a 400-digit integer is out of range, not an overflow
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and lo < value <= hi):
        raise ValueError(f"client.{name} must be a number in ({lo}, {hi}]"
                         f"{' or null' if nullable else ''}")
    return float(value)


def client_info(value: object, user_agent: str) -> dict:
    """The page's measurements, checked and bounded (ValueError names the field), with the
    browser and the kind of device added."""
    fields = {"viewport", "screen", "dpr", "refresh_hz", "pointer", "touch_points"}
    if not isinstance(value, dict) or set(value) - fields or "viewport" not in value:
        raise ValueError(f"client must be an object with viewport and any of {sorted(fields)}")
    pointer = value.get("pointer")
    if pointer not in (None, "fine", "coarse", "none"):
        raise ValueError("client.pointer must be 'fine', 'coarse' or 'none'")
    touch = value.get("touch_points", 0)
    if not (isinstance(touch, int) and not isinstance(touch, bool) and 0 <= touch <= 100):
        raise ValueError("client.touch_points must be an integer in [0, 100]")
    user_agent = user_agent[:300]
    client = {
        "viewport": _size(value["viewport"], "viewport"),
        "screen": None if value.get("screen") is None else _size(value["screen"], "screen"),
        "dpr": _number(value.get("dpr"), "dpr", 0.0, 20.0),
        "refresh_hz": _number(value.get("refresh_hz"), "refresh_hz", 0.999, 1000.0,
                              nullable=True),
        "pointer": pointer, "touch_points": touch, "user_agent": user_agent,
        "browser": browser(user_agent),
    }
    client["device"] = device_kind(client)
    return client


def browser(user_agent: str) -> str | None:
    """'Chrome 120', 'Firefox 121', ... from a User-Agent (None if none is recognised)."""
    for name, pattern in _BROWSERS:
        match = re.search(pattern, user_agent)
        if match:
            return f"{name} {match.group(1)}"
    return None


def device_kind(client: dict) -> str:
    """phone | tablet | desktop. A phone says 'Mobi' in its User-Agent (MDN's advice); a tablet
    is any other device whose main pointer is a finger (iPads claim to be Macs, but touch)."""
    agent = client["user_agent"]
    if "Mobi" in agent:
        return "phone"
    if client["pointer"] == "coarse" and client["touch_points"] > 0 or "iPad" in agent \
            or "Android" in agent:
        return "tablet"
    return "desktop"


def screen_out(spec: OnlineSpec, client: dict) -> str | None:
    """The reason the study cannot be done on this device (for the participant), or None."""
    if client["device"] in spec.devices:
        return None
    allowed = " or ".join(DEVICE_TEXT[d] for d in spec.devices)
    return (f"Sorry, this study cannot be done on {DEVICE_TEXT[client['device']]}: it needs "
            f"{allowed}, so you cannot take part from this device.")


def too_small(spec: OnlineSpec, client: dict) -> str | None:
    """What to ask when the window is smaller than `online.min_window`, or None."""
    if spec.min_window is None:
        return None
    (w, h), (min_w, min_h) = client["viewport"], spec.min_window
    if w >= min_w and h >= min_h:
        return None
    return (f"Please make this browser window larger (or maximise it): the study needs at "
            f"least {min_w} x {min_h} pixels, and it is {w} x {h}. The study starts as soon "
            f"as it fits.")
