"""A sweep's report: SWEEP_DIR/summary.csv (one row per job) and a static SWEEP_DIR/index.html gallery.

Reads what each job left in its run directory (run.json, metrics.csv, eval.json, save/, export/),
so it works on a finished sweep, a half-finished one and one whose jobs failed. The gallery uses
paths relative to SWEEP_DIR, so it opens from disk (or a copied folder) without a server.
`SweepSummary` runs it when a Hydra multirun ends (`hydra.callbacks` in conf/config.yaml);
`scripts/summarize.py` runs it by hand.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from framework.utils.atomic import atomic_path
from framework.utils.run_record import RECORD_NAME, read_record

FIXED_COLUMNS = ["job", "status", "error", "sweep_values", "overrides", "final_step", "wall_seconds"]
STEP = re.compile(r"step(\d+)")
COLOUR_VERDICT = ("dominant_colour", "colour_right")  # eval.json's non-numbers that still score a run


def find_jobs(sweep_dir: str | os.PathLike) -> list[Path]:
    """The run directories under SWEEP_DIR (those with a run.json or a .hydra folder), in job order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a directory: pass a multirun sweep folder")
    found = {p.parent for p in sweep_dir.rglob(RECORD_NAME)} | {p.parent for p in sweep_dir.rglob(".hydra") if p.is_dir()}
    jobs = [d for d in found if not any(part.startswith(".") for part in d.relative_to(sweep_dir).parts)]

    def job_order(job: Path) -> tuple[int, str]:
        number = re.match(r"\d+", job.name)
        return (int(number.group()) if number else -1, str(job))

    return sorted(jobs, key=job_order)


def _metrics_file(job_dir: Path) -> Path | None:
    """The CSV logger's metrics.csv: at the top of the run directory, or in a logger subfolder."""
    if (job_dir / "metrics.csv").is_file():
        return job_dir / "metrics.csv"
    return next(iter(sorted(job_dir.rglob("metrics.csv"))), None)


def final_losses(job_dir: Path) -> dict[str, str]:
    """The last logged value of every column whose name holds "loss"."""
    path = _metrics_file(job_dir)
    if path is None:
        return {}
    last: dict[str, str] = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            last.update({key: value for key, value in row.items() if key and "loss" in key and value not in (None, "")})
    return last


def eval_metrics(job_dir: Path) -> dict[str, Any]:
    """The scores at the top of eval.json (scripts/evaluate.py), as `eval/<name>`: its numbers and
    its colour verdict (`dominant_colour`, `colour_right`)."""
    path = job_dir / "eval.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {f"eval/{k}": v for k, v in data.items() if k in COLOUR_VERDICT or (isinstance(v, (int, float)) and not isinstance(v, bool))}


def latest_stills(job_dir: Path) -> list[Path]:
    """The newest validation image of each series in save/ (file names differ only in `step<N>`)."""
    newest: dict[str, tuple[int, Path]] = {}
    for path in (job_dir / "save").glob("*.png"):
        match = STEP.search(path.name)
        key, step = (STEP.sub("step", path.name), int(match.group(1))) if match else (path.name, -1)
        if key not in newest or step > newest[key][0]:
            newest[key] = (step, path)
    return [path for _, path in sorted(newest.values(), key=lambda item: item[1].name)]


def _overrides(job_dir: Path, record: dict[str, Any]) -> list[str]:
    if "overrides" in record:
        return [str(o) for o in record["overrides"]]
    path = job_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def job_row(sweep_dir: Path, job_dir: Path) -> dict[str, Any]:
    """One job's summary: its record, final losses and eval metrics, plus the media the gallery shows."""
    try:
        record = read_record(job_dir)
        status = record.get("status", "not started")
        error = record.get("error")
    except ValueError as broken:
        record, status, error = {}, "unreadable", str(broken)
    overrides = _overrides(job_dir, record)
    media = {
        "turntable": job_dir / "save" / "turntable.mp4",
        "models": sorted(job_dir.glob("export/*.glb")),
        "stills": latest_stills(job_dir),
    }
    return {
        "job": job_dir.relative_to(sweep_dir).as_posix(),
        "status": status,
        "error": error or "",
        "overrides": " ".join(overrides),
        "_overrides": overrides,
        "final_step": record.get("final_step", ""),
        "wall_seconds": record.get("wall_seconds", ""),
        **final_losses(job_dir),
        **eval_metrics(job_dir),
        "_media": media,
    }


def _href(sweep_dir: Path, path: Path) -> str:
    return quote(path.relative_to(sweep_dir).as_posix())


def _short(value: Any) -> str:
    """Numbers to 4 significant digits for reading (summary.csv keeps them whole)."""
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def render_html(sweep_dir: Path, rows: list[dict[str, Any]], columns: list[str]) -> str:
    """The gallery: one table row per job with its turntable, latest stills, metrics and GLB link."""
    esc = html.escape
    counts = Counter(row["status"] for row in rows)
    metric_columns = [c for c in columns if c not in ("job", "status", "error", "sweep_values", "overrides")]
    body = []
    for row in rows:
        media = row["_media"]
        video = (
            f'<video src="{_href(sweep_dir, media["turntable"])}" controls loop muted preload="metadata" width="384"></video>'
            if media["turntable"].is_file()
            else "no turntable"
        )
        stills = "".join(f'<img src="{_href(sweep_dir, p)}" alt="{esc(p.name)}" title="{esc(p.name)}">' for p in media["stills"]) or "no stills"
        models = " ".join(f'<a href="{_href(sweep_dir, p)}">{esc(p.name)}</a>' for p in media["models"]) or "no GLB"
        metrics = "".join(f"<tr><th>{esc(c)}</th><td>{esc(_short(row[c]))}</td></tr>" for c in metric_columns if row.get(c) not in (None, ""))
        error = f'<div class="error">{esc(row["error"])}</div>' if row["error"] else ""
        body.append(
            f'<tr class="job {esc(row["status"])}" id="{esc(row["job"])}">'
            f'<td><b>{esc(row["job"])}</b><div class="status">{esc(row["status"])}</div>{error}<code>{esc(row["sweep_values"])}</code>'
            f'<details><summary>all overrides</summary><code>{esc(row["overrides"])}</code></details></td>'
            f"<td>{video}</td><td class=\"stills\">{stills}</td><td><table class=\"metrics\">{metrics}</table></td><td>{models}</td></tr>"
        )
    totals = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Sweep {esc(sweep_dir.name)}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
table.jobs {{ border-collapse: collapse; }}
table.jobs > tbody > tr > td {{ border-top: 1px solid #ccc; padding: 6px; vertical-align: top; }}
tr.failed .status, .error {{ color: #b00; }}
tr.completed .status {{ color: #070; }}
.stills img {{ max-width: 384px; display: block; margin-bottom: 4px; image-rendering: pixelated; }}
table.metrics th {{ text-align: left; font-weight: normal; color: #555; padding-right: 1em; }}
code {{ display: block; white-space: pre-wrap; max-width: 24em; }}
</style>
</head>
<body>
<h1>Sweep {esc(sweep_dir.name)}</h1>
<p>{len(rows)} jobs: {esc(totals)}. Table: <a href="summary.csv">summary.csv</a>.</p>
<table class="jobs">
<thead><tr><th>job</th><th>turntable</th><th>latest validation</th><th>metrics</th><th>model</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
</body>
</html>
"""


def summarize(sweep_dir: str | os.PathLike) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Write SWEEP_DIR/summary.csv and SWEEP_DIR/index.html.

    Returns:
        The two paths and the rows (one per job, with the `_media` paths the gallery used).

    Raises:
        FileNotFoundError: SWEEP_DIR is not a directory or holds no run directory.
    """
    sweep_dir = Path(sweep_dir).resolve()
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"{sweep_dir} holds no run directory (none has a run.json or .hydra/)")
    rows = [job_row(sweep_dir, job) for job in jobs]
    shared = set.intersection(*(set(row["_overrides"]) for row in rows))
    for row in rows:  # what tells the jobs apart: the overrides not shared by every job
        row["sweep_values"] = " ".join(o for o in row["_overrides"] if o not in shared)
    extra = sorted({key for row in rows for key in row if key not in FIXED_COLUMNS and not key.startswith("_")}, key=lambda k: (k.startswith("eval/"), k))
    columns = FIXED_COLUMNS + extra
    csv_path, html_path = sweep_dir / "summary.csv", sweep_dir / "index.html"
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(html_path) as tmp:
        tmp.write_text(render_html(sweep_dir, rows, columns))
    return csv_path, html_path, rows


class SweepSummary(Callback):
    """Hydra callback: writes the sweep report when a multirun ends and logs the jobs' outcomes."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        log = logging.getLogger(__name__)
        try:
            csv_path, html_path, rows = summarize(config.hydra.sweep.dir)
        except (OSError, ValueError) as error:
            log.error("sweep report not written: %s", error)
            return
        counts = Counter(row["status"] for row in rows)
        log.info("%d jobs (%s); report: %s and %s", len(rows), ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), csv_path, html_path)
        for row in rows:
            if row["status"] == "failed":
                log.error("failed: %s (%s): %s", row["job"], row["overrides"], row["error"])
