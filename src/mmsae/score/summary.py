"""The summary of a scored explanation set: means per metric overall and per concept class, and the
model / random ratios the paper reports (IoU ~40x random, CLIP +5.4 points)."""

from __future__ import annotations

from collections import defaultdict

from .stats import mean_se, ratio

METRICS = ("iou", "iou_random", "clip", "clip_random", "detection_bacc", "iou_random_expl", "iou_random_images")
PAIRS = (("iou", "iou_random_images"), ("iou", "iou_random_expl"), ("iou", "iou_random"), ("clip", "clip_random"))
CLASS_ORDER = ("scene", "object", "part", "material", "texture", "colour", "size", "position", "other")


def summarise(rows: list[tuple[int, str, float, str | None, str, dict]], models: dict[str, str]) -> dict:
    """rows: (feature, metric, value, concept_class, model, details) of one explanation set; only the rows
    made with `models[metric]` count (another segmenter's or CLIP model's rows are other experiments)."""
    kept = [r for r in rows if models.get(r[1]) == r[4]]
    by_metric: dict[str, list[float]] = defaultdict(list)
    by_class: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    trials: dict[str, set[int]] = defaultdict(set)
    for _, metric, value, cls, _, details in kept:
        by_metric[metric].append(value)
        by_class[cls or "none"][metric].append(value)
        if "trials" in details:
            trials[metric].add(int(details["trials"]))
    overall = {m: mean_se(by_metric[m]) for m in METRICS if by_metric.get(m)}
    per_class = {c: {m: mean_se(v) for m, v in sorted(ms.items())} for c, ms in _ordered(by_class)}

    def ratios(stats: dict) -> dict:
        out = {}
        for model, rand in PAIRS:
            if model in stats and rand in stats:
                out[f"{model}/{rand}"] = ratio(stats[model]["mean"], stats[rand]["mean"])
                if stats[model]["mean"] is not None and stats[rand]["mean"] is not None:
                    out[f"{model}-{rand}"] = stats[model]["mean"] - stats[rand]["mean"]
        return out

    return {
        "metrics": overall,
        "per_class": per_class,
        "ratios": ratios(overall),
        "per_class_ratios": {c: ratios(s) for c, s in per_class.items()},
        "trials": {m: sorted(t) for m, t in trials.items()},
        "models": {m: models[m] for m in METRICS if m in models},
        "features_scored": len({r[0] for r in kept}),
    }


def _ordered(by_class: dict) -> list:
    rank = {c: i for i, c in enumerate(CLASS_ORDER)}
    return sorted(by_class.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


def table_rows(summary: dict) -> list[list[str]]:
    """The printed table: one row per concept class and a total row, a column per metric (mean +- se)."""
    metrics = [m for m in METRICS if m in summary["metrics"]]

    def cell(stats: dict | None) -> str:
        if not stats or stats["mean"] is None:
            return "-"
        se = f" ± {stats['se']:.3g}" if stats.get("se") is not None else ""
        return f"{stats['mean']:.3g}{se} (n={stats['n']})"

    rows = [[cls] + [cell(stats.get(m)) for m in metrics] for cls, stats in summary["per_class"].items()]
    rows.append(["total"] + [cell(summary["metrics"].get(m)) for m in metrics])
    return [["concept"] + metrics] + rows


def format_score(summary: dict, cfg=None) -> str:
    """`mmsae score`'s printout: the table of table_rows, the ratios, what happened to each requested feature."""
    import io

    from rich.console import Console
    from rich.table import Table

    console = Console(file=io.StringIO(), width=200, color_system=None)
    header, *rows = table_rows(summary)
    table = Table(title=f"scores of {summary['explainer']}/{summary['prompt_version']} explanations "
                        f"({summary['index']})")
    for h in header:
        table.add_column(h)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    for name, value in summary["ratios"].items():
        console.print(f"{name}: {value:.3g}" if value is not None else f"{name}: -")
    run = summary["run"]
    console.print(f"features: {run['requested']} requested, {run['scored']} scored now, {run['already_scored']} "
                  f"already scored, {run['uninterpretable']} uninterpretable, {run['failed_explanation']} failed "
                  f"explanations, {run['no_explanation']} without explanation, {run['no_images']} without top "
                  f"images, {run['out_of_range']} out of range; {run['empty_segmentations']} empty segmentations "
                  f"this run (IoU 0)")
    trials_used = ", ".join(f"{m}: {t}" for m, t in summary["trials"].items())
    if trials_used:
        console.print(f"random-baseline trials per feature: {trials_used}")
    for e in summary["run_errors"][:20]:
        console.print(f"feature {e['feature']} {e['metric']}: {e['reason']}", markup=False)
    if len(summary["run_errors"]) > 20:
        console.print(f"... {len(summary['run_errors']) - 20} more errors in {summary['index']}/score-summary.json")
    return console.file.getvalue().rstrip("\n")
