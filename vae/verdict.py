"""Is a trained model good enough for a study? The checks, their thresholds, one screen of text.

`judge(metrics)` turns the metrics dict that `vae.train` computes into a verdict
{"passed": bool, "summary": one line naming the failed checks, "checks": [{"name", "metric",
"value", "op", "threshold", "passed", "what"}]}; a check
whose metric was not measured (no observer) fails with value None, so a model nobody could
judge never passes. The verdict is stored in the checkpoint (`LoadedModel.verdict`) and its
JSON; sessions warn loudly when it failed. `format_verdict` prints it, PASS/FAIL per line.
"""

from __future__ import annotations

from pathlib import Path

from vae.metrics import READABLE_P

MIN_CHILDREN = 5
"""Held-out children whose seven decoded centroids must all be readable (identity models)."""

# (name, metric path in the metrics dict, op, threshold, what it means)
CHECKS = (
    ("readable centroids", "readability.centroids.p_intended_min", ">=", READABLE_P,
     "lowest observer p(intended) of the 7 decoded emotion centroids (plain models)"),
    ("readable children", "readability.centroids.n_identities_all_readable", ">=", MIN_CHILDREN,
     "held-out children (of 8 rated) whose 7 decoded centroids all reach the readable p"),
    ("expression retention", "readability.retention.retention", ">=", 0.9,
     "observer accuracy on reconstructions / on the original held-out faces"),
    ("emotions separated", "latent.knn5_accuracy", ">=", 0.8,
     "5-nearest-neighbour emotion accuracy of held-out codes on the sphere"),
    ("classifier head", "latent.classifier_accuracy", ">=", 0.8,
     "the VAE's own emotion classifier on held-out codes"),
    ("paths change emotion", "readability.paths.frac_observer_label_goes_from_first_to_second",
     ">=", 0.8, "paths between two centroids whose observer label goes from one to the other"),
    ("paths keep the child", "readability.paths.frac_identity_is_the_child", ">=", 0.9,
     "faces along those paths that the identity observer matches to the child drawn"),
)


def _get(metrics: dict, dotted: str):
    value = metrics
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def judge(metrics: dict, kind: str) -> dict:
    """The verdict for a metrics dict of `vae.train` (see the module docstring).

    kind: the model's kind (`ModelConfig.kind`). Identity models are judged per child, as
    issue 11 asks (all 7 decoded centroids readable for at least MIN_CHILDREN held-out
    children; the weakest child is still printed); plain models draw one face per emotion, all
    7 of which must be readable, and have no child to keep.
    """
    per_child = ("readable children", "paths keep the child")
    checks = []
    for name, path, op, threshold, what in CHECKS:
        if (kind == "identity") != (name in per_child) and name in (*per_child,
                                                                     "readable centroids"):
            continue
        value = _get(metrics, path)
        ok = value is not None and value == value and (
            value >= threshold if op == ">=" else value <= threshold)
        checks.append({"name": name, "metric": path, "value": value, "op": op,
                       "threshold": threshold, "passed": bool(ok), "what": what})
    failed = [f"{c['name']} {'not measured' if c['value'] is None else format(c['value'], '.3g')}"
              f" (need {c['op']} {c['threshold']:g})" for c in checks if not c["passed"]]
    summary = "every check passed" if not failed else "failed: " + "; ".join(failed)
    return {"passed": not failed, "summary": summary, "checks": checks}


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
        lines.append(f"  {'PASS' if c['passed'] else 'FAIL'}  {c['name']:<21} {value:>12}  "
                     f"(need {c['op']} {c['threshold']:g})")
    readability = metrics.get("readability", {}).get("centroids")
    if readability:
        worst = min(readability["p_intended_min_per_emotion"].items(), key=lambda kv: kv[1])
        lines.append(f"        weakest emotion: {worst[0]} (p {worst[1]:.2f} for its worst child)")
    lines += [
        "",
        "(what each line measures: the \"verdict\" section of the metrics JSON)",
        "VERDICT: PASS, good enough for a study" if verdict["passed"] else
        "VERDICT: FAIL, not good enough for a study (see the FAIL lines; sessions will warn)",
        f"checkpoint: {out}   metrics: {Path(out).with_suffix('.json')}",
    ]
    return "\n".join(lines)
