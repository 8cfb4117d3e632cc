"""Is a trained model good enough for a study? The checks, their thresholds, one screen of text.

`judge(metrics)` turns the metrics dict that `vae.train` computes into a verdict
{"passed": bool, "summary": one line naming the failed checks, "checks": [{"name", "metric",
"value", "op", "threshold", "passed", "what"}], "advice": [lines]}; a check
whose metric was not measured (no observer) fails with value None, so a model nobody could
judge never passes. The verdict is stored in the checkpoint (`LoadedModel.verdict`) and its
JSON; sessions warn loudly when it failed. `format_verdict` prints it, PASS/FAIL per line,
then the advice: which emotions and which children failed, and what to add.

Every emotion's retention is measured by an expression reader independent of the model and of
our faces (`vae.reader`, trained on photographs): "every emotion kept" takes the lowest
per-emotion retention among the emotions the reader reads on the originals (at least
JUDGEABLE of them right). It is an AIM, printed and advised on like a check but not yet
required for a pass (`AIMS`): no recipe meets it on most seeds yet (the default model keeps
0.89 of happy on its held-out children, and 0.85 of angry on 320 new ones; one of its recipe's
two seeds keeps every emotion held out, none on the new children), and a check every model
fails would only teach labs to ignore the verdict. The observer's overall retention stays a required check.

Thresholds scale with the set: the readable-children check asks for a SHARE of the held-out
children rated (READABLE_SHARE), not a count, so a set of 24 children (5 held out) is judged
as a set of 160 is; below MIN_RATED rated children there are too few to judge at all.
"""

from __future__ import annotations

from pathlib import Path

from vae.metrics import READABLE_P

READABLE_SHARE = 0.6
"""Share of the rated held-out children whose seven decoded centroids must all be readable
(identity models); 5 of 8 before it scaled with the set."""
MIN_RATED = 3
"""Fewer rated held-out children than this cannot show that expressions carry over to new
children: the readable-children check fails, whatever their share."""
RETENTION = 0.9
JUDGEABLE = 0.25
"""The independent reader judges an emotion's retention only where it reads at least this share
of the held-out originals right (below it, a ratio of a few faces is noise); the emotions it
cannot judge are named in the check (`not_judged`) and the advice."""

# (name, metric path in the metrics dict, op, threshold, what it means)
CHECKS = (
    ("readable centroids", "readability.centroids.p_intended_min", ">=", READABLE_P,
     "lowest observer p(intended) of the 7 decoded emotion centroids (plain models)"),
    ("readable children", "readability.centroids.n_identities_all_readable / identities", ">=",
     READABLE_SHARE,
     f"share of the rated held-out children (at least {MIN_RATED}) whose 7 decoded centroids "
     f"all reach the readable p"),
    ("expression retention", "readability.retention.retention", ">=", RETENTION,
     "observer accuracy on reconstructions / on the original held-out faces"),
    ("every emotion kept", "readability.reader_retention.per_emotion", ">=", RETENTION,
     "lowest retention of any emotion, by an expression reader trained on photographs "
     "(vae.reader), among the emotions it reads on the originals"),
    ("emotions separated", "latent.knn5_accuracy", ">=", 0.8,
     "5-nearest-neighbour emotion accuracy of held-out codes on the sphere"),
    ("classifier head", "latent.classifier_accuracy", ">=", 0.8,
     "the VAE's own emotion classifier on held-out codes"),
    ("paths change emotion", "readability.paths.frac_observer_label_goes_from_first_to_second",
     ">=", 0.8, "paths between two centroids whose observer label goes from one to the other"),
    ("paths keep the child", "readability.paths.frac_identity_is_the_child", ">=", 0.9,
     "faces along those paths that the identity observer matches to the child drawn"),
)


AIMS = frozenset({"every emotion kept"})
"""Checks reported (MET/MISS) and advised on, but not required for the verdict to pass."""


def _get(metrics: dict, dotted: str):
    value = metrics
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _share_readable(metrics: dict) -> float | None:
    """Share of the rated held-out children with all 7 centroids readable; None when not
    measured; 0 when fewer than MIN_RATED children were rated (too few to judge)."""
    centroids = _get(metrics, "readability.centroids") or {}
    rated = centroids.get("identities")
    readable = centroids.get("n_identities_all_readable")
    if not rated or readable is None:
        return None
    return readable / len(rated) if len(rated) >= MIN_RATED else 0.0


def _judgeable(metrics: dict) -> tuple[dict[str, float], list[str]]:
    """({emotion: reader retention} of the emotions the reader can judge, [the others])."""
    per_emotion = _get(metrics, "readability.reader_retention.per_emotion") or {}
    judged = {e: r["retention"] for e, r in per_emotion.items()
              if r["observer_accuracy_originals"] >= JUDGEABLE}
    return judged, sorted(set(per_emotion) - set(judged))


def judge(metrics: dict, kind: str) -> dict:
    """The verdict for a metrics dict of `vae.train` (see the module docstring).

    kind: the model's kind (`ModelConfig.kind`). Identity models are judged per child, as
    issue 11 asks (all 7 decoded centroids readable for at least READABLE_SHARE of the rated
    held-out children, at least MIN_RATED of them; the weakest child is still printed); plain
    models draw one face per emotion, all 7 of which must be readable, and have no child to
    keep.
    """
    per_child = ("readable children", "paths keep the child")
    checks = []
    for name, path, op, threshold, what in CHECKS:
        if (kind == "identity") != (name in per_child) and name in (*per_child,
                                                                     "readable centroids"):
            continue
        extra = {}
        if name == "readable children":
            value = _share_readable(metrics)
        elif name == "every emotion kept":
            judged, extra["not_judged"] = _judgeable(metrics)
            value = min(judged.values()) if judged else None
        else:
            value = _get(metrics, path)
        ok = value is not None and value == value and (
            value >= threshold if op == ">=" else value <= threshold)
        checks.append({"name": name, "metric": path, "value": value, "op": op,
                       "threshold": threshold, "passed": bool(ok), "what": what,
                       "required": name not in AIMS, **extra})
    failed = [f"{c['name']} {'not measured' if c['value'] is None else format(c['value'], '.3g')}"
              f" (need {c['op']} {c['threshold']:g})" for c in checks
              if not c["passed"] and c["required"]]
    summary = "every check passed" if not failed else "failed: " + "; ".join(failed)
    return {"passed": not failed, "summary": summary, "checks": checks,
            "advice": advise(metrics, checks)}


def advise(metrics: dict, checks: list[dict]) -> list[str]:
    """Lines naming what failed or missed its aim (emotions, children), the emotions the reader
    could not judge, and what to add; [] when there is nothing to say."""
    failed = {c["name"] for c in checks if not c["passed"]}
    if not failed and not _judgeable(metrics)[1]:
        return []
    lines = []
    centroids = _get(metrics, "readability.centroids") or {}
    p = centroids.get("p_intended") or {}
    weak: dict[str, list[str]] = {}
    for child, row in p.items():
        for emotion, value in row.items():
            if value < READABLE_P:
                weak.setdefault(emotion, []).append(f"{child} p {value:.2f}")
    ranked = sorted(weak.items(), key=lambda kv: -len(kv[1]))
    if len(ranked) > 3:  # one line, so the verdict stays one screen
        lines.append("not readable for the held-out children: " + ", ".join(
            f"{emotion} ({len(where)} of {len(p)})" for emotion, where in ranked))
    for emotion, where in ranked if len(ranked) <= 3 else ():
        more = f" and {len(where) - 3} more" if len(where) > 3 else ""
        lines.append(f"{emotion} is not readable for {len(where)} of {len(p)} held-out "
                     f"children: {', '.join(where[:3])}{more}")
    judged, not_judged = _judgeable(metrics)
    if not judged and not not_judged:  # judged before the independent reader: the observer's
        retention = _get(metrics, "readability.retention.per_emotion") or {}
        judged = {e: r["retention"] for e, r in retention.items() if r["retention"] is not None}
    lost = {e: v for e, v in judged.items() if v < RETENTION}
    if lost:
        per_emotion = _get(metrics, "readability.reader_retention.per_emotion") or {}
        ses = {e: (per_emotion.get(e) or {}).get("retention_se") for e in lost}
        lines.append("expression lost in reconstruction (retention < "
                     f"{RETENTION:g}): " + ", ".join(
                         f"{e} {v:.2f}" + ("" if ses[e] is None else f" (se {ses[e]:.2f})")
                         for e, v in sorted(lost.items(), key=lambda kv: kv[1])))
        if any(se is not None for se in ses.values()):
            lines.append("(se: how far another set of held-out children could move a figure, "
                         "its standard error over the children resampled)")
    if not_judged:
        lines.append("the expression reader reads too few of the original faces to judge "
                     f"{', '.join(not_judged)} (under {JUDGEABLE:.0%}): pose them more clearly "
                     f"(the muscles a photograph shows, not only the outline)")
    rated = centroids.get("identities") or []
    n_train = metrics.get("n_train_children")
    size = f" (it trained on {n_train} children)" if n_train else ""
    if "readable children" in failed and rated and len(rated) < MIN_RATED:
        lines.append(f"only {len(rated)} held-out children were rated, fewer than the "
                     f"{MIN_RATED} needed to judge: add children (at a 0.2 held-out share, at "
                     f"least {5 * MIN_RATED} in all)")
    if failed & {"readable children", "expression retention", "every emotion kept",
                 "paths change emotion"}:
        emotions = sorted(set(weak) | set(lost))
        which = f" posing {', '.join(emotions)}" if emotions else ""
        lines.append(f"add children{which}{size}: the decoder learns an expression from the "
                     f"children who pose it, so more children help and more epochs do not; "
                     f"check those emotions' photos are posed clearly and labelled right")
    if failed & {"emotions separated", "classifier head"}:
        lines.append("the emotions overlap on the sphere: check the labels (a mislabelled "
                     "photo pulls its emotion towards another) and add faces of every emotion")
    if "paths keep the child" in failed:
        lines.append("faces between emotions drift to another child: add children, and check "
                     "each child's neutral closed-mouth reference photo")
    return lines


def format_verdict(metrics: dict, model_config, out: str | Path) -> str:
    """One screen: what was trained, a PASS/FAIL line per check, the overall verdict, files."""
    verdict = metrics.get("verdict") or judge(metrics, model_config.kind)
    cfg = model_config
    minutes = (metrics.get("train_seconds_this_run") or 0) / 60
    lines = [
        f"Trained {cfg.kind} {cfg.prior} VAE, d={cfg.latent_dim}"
        + (f", kappa {cfg.kappa:g}" if cfg.prior == "vmf" else "")
        + f", {cfg.image_size[0]}x{cfg.image_size[1]}, {metrics.get('epochs')} epochs in "
        f"{minutes:.1f} min ({metrics.get('images_per_second')} images/s)",
        "",
    ]
    for c in verdict["checks"]:
        value = "not measured" if c["value"] is None else (
            f"{c['value']:.3f}" if isinstance(c["value"], float) else str(c["value"]))
        required = c.get("required", True)
        mark = ("PASS" if c["passed"] else "FAIL") if required else (
            "MET " if c["passed"] else "MISS")
        lines.append(f"  {mark}  {c['name']:<21} {value:>12}  "
                     f"({'need' if required else 'aim'} {c['op']} {c['threshold']:g})")
    readability = metrics.get("readability", {}).get("centroids")
    if readability:
        worst = min(readability["p_intended_min_per_emotion"].items(), key=lambda kv: kv[1])
        lines.append(f"        weakest emotion: {worst[0]} (p {worst[1]:.2f} for its worst child)")
    advice = verdict.get("advice", advise(metrics, verdict["checks"]))
    if advice:
        lines += ["", "what failed or missed its aim, and what to add:", *(f"  - {line}" for line in advice)]
    lines += [
        "",
        "(what each line measures: the \"verdict\" section of the metrics JSON)",
        "VERDICT: PASS, good enough for a study" if verdict["passed"] else
        "VERDICT: FAIL, not good enough for a study (see the FAIL lines; sessions will warn)",
        f"checkpoint: {out}   metrics: {Path(out).with_suffix('.json')}",
    ]
    return "\n".join(lines)
