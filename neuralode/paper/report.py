"""``outputs/paper/REPORT.md``: every table and figure of the paper, ours beside the paper's.

It reads what the artefact targets left in ``outputs/paper/``: ``<name>.md`` (a table, included
as is) and ``<name>.png`` (a figure, embedded), for the rows of :data:`neuralode.paper.registry.ARTEFACTS`, and the
wall time and commit of each target from ``timings/<target>-<scale>.json`` (written by ``make
paper``), with the commits that trained its runs (their ``summary.json``, the runs listed in
``timings/<target>-<scale>.runs``). An
artefact that is missing is listed with the command that makes it. The claims tables of all
artefacts (header ``claim | ours | paper | verdict``) are gathered into one table at the top.

    python -m neuralode.paper.report --scale smoke
    python -m neuralode.paper.report --scale cpu --publish docs/results/cpu   # the files a reader needs

``--publish`` copies REPORT.md and every artefact's ``.md``, ``.csv`` and ``.png`` (shrunk to at
most 300 KB) into a folder meant to be committed, with the wall-time records (``timings.json``).
``--restore`` does the reverse for what ``outputs/paper/`` lacks, so that a fresh checkout that
re-makes a few targets can render the whole report (the other targets as they were published)::

    python -m neuralode.paper.report --scale cpu --restore docs/results/cpu --publish docs/results/cpu
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
from pathlib import Path

from neuralode.paper.common import CLAIM_HEADERS, markdown_table, out_dir
from neuralode.paper.registry import ARTEFACTS, SCALES, Artefact
from neuralode.source import source_commit

#: What each scale is, for the report's first line.
SCALE_TEXT = {"smoke": "CPU, minutes: short runs that check the pipeline, numbers far from converged",
              "cpu": "the paper's claims on a 2-core CPU: each table says what was shortened",
              "paper": "the full recipe"}
#: Largest PNG that --publish copies as is.
MAX_PNG_BYTES = 300_000


def read_timings(folder: Path, scale: str) -> dict[str, dict]:
    """The targets' wall-time records at ``scale`` (``timings/<target>-<scale>.json``)."""
    timings = {}
    for path in sorted((folder / "timings").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        target = record.get("target", path.stem)
        # A record named <target>-<scale>.json wins over an older one named <target>.json.
        if record.get("scale") == scale and (target not in timings or path.stem == f"{target}-{scale}"):
            timings[target] = record
    return timings


def wall_s(record: dict) -> float | None:
    try:
        return float(record["end"]) - float(record["start"])
    except (KeyError, TypeError, ValueError):
        return None


def runs_cell(record: dict) -> str:
    """How many training runs the target trained and reused ("-" in records from before they were counted)."""
    trained, reused = record.get("runs_trained"), record.get("runs_reused")
    if trained is None or reused is None:
        return "-"
    return ", ".join([f"{trained} trained"] + ([f"{reused} reused"] if reused else [])) if trained or reused else "none"


def run_commits(folder: Path, record: dict) -> list[str] | None:
    """The commits that trained the runs a target used, from each run's summary.json: "unknown"
    for a run trained before runs recorded them, "missing" for one whose summary is gone; None
    when the target recorded no run list. A record restored from a published folder carries them."""
    if "run_commits" in record:
        return list(record["run_commits"])
    listing = folder / "timings" / f"{record.get('target')}-{record.get('scale')}.runs"
    commits: list[str] = []
    try:
        lines = listing.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        run_dir = Path(line.partition(" ")[2])
        if not run_dir.is_dir():  # listed from another checkout: the same place under this folder's runs/
            parts = run_dir.parts
            anchors = [i for i in range(1, len(parts)) if parts[i] == "runs" and parts[i - 1] == "paper"]
            if anchors:
                run_dir = folder / Path(*parts[anchors[-1]:])
        try:
            found = json.loads((run_dir / "summary.json").read_text()).get("commits") or ["unknown"]
        except (OSError, json.JSONDecodeError):
            found = ["missing"]
        commits += [c for c in found if c not in commits]
    return commits


def runs_commits(folder: Path, record: dict) -> str:
    """:func:`run_commits` as a table cell ("-": none)."""
    commits = run_commits(folder, record) or []
    return ", ".join(c if c in ("unknown", "missing") else f"`{c}`" for c in commits) or "-"


def read_claims(text: str) -> list[list[str]]:
    """The rows of every claims table in an artefact's markdown."""
    header = "| " + " | ".join(CLAIM_HEADERS) + " |"
    rows, inside = [], False
    for line in text.splitlines():
        if line == header:
            inside = True
        elif inside and line.startswith("|"):
            if not line.startswith("|---"):
                rows.append(line.strip()[2:-2].split(" | "))  # cells never hold " | "
        else:
            inside = False
    return rows


def claims_summary(folder: Path) -> list[list[str]]:
    """Every artefact's claims, prefixed with the artefact."""
    rows = []
    for artefact in ARTEFACTS:
        table = folder / f"{artefact.name}.md"
        if table.is_file():
            rows += [[f"`{artefact.name}`", *row] for row in read_claims(table.read_text())]
    return rows


def machine() -> str:
    """The machine in words: CPU model and cores (or the GPU), memory."""
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    model = platform.processor() or platform.machine()
    memory = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
        memory = f", {kib / 2**20:.0f} GiB memory"
    except (OSError, StopIteration, ValueError):
        pass
    return f"CPU {model}, {os.cpu_count()} cores{memory}"


def artefact_section(artefact: Artefact, folder: Path) -> str:
    lines = [f"## {artefact.title}", "", f"**Paper.** {artefact.paper}", ""]
    if artefact.kind == "diagram":
        lines += ["**Ours.** Nothing to reproduce: the paper's figure is a diagram of the model, not a result.", ""]
        return "\n".join(lines)
    table, figure, data = folder / f"{artefact.name}.md", folder / f"{artefact.name}.png", folder / f"{artefact.name}.csv"
    if not table.is_file() and not figure.is_file():
        return "\n".join(lines + [f"**Ours.** Not produced yet: `make {artefact.name} SCALE=...`.", ""])
    lines += ["**Ours.**", ""]
    if table.is_file():
        text = table.read_text().strip()
        # The table's own title would break the report's heading levels: demote it.
        lines += ["##" + line if line.startswith("#") else line for line in text.splitlines()] + [""]
    if figure.is_file():
        lines += [f"![{artefact.title}]({figure.name})", ""]
    if data.is_file():
        lines += [f"Data: [`{data.name}`]({data.name}).", ""]
    return "\n".join(lines)


def render(folder: Path, scale: str, commit: str, now: str | None = None) -> str:
    """The report's markdown for the artefacts in ``folder``."""
    import torch

    timings = read_timings(folder, scale)
    names = [a.name for a in ARTEFACTS]
    rows = []
    for target in names + sorted(set(timings) - set(names)):
        record = timings.get(target)
        if record is None:
            continue
        seconds = wall_s(record)
        ran_at = record.get("commit")
        rows.append([f"`make {target}`", record.get("scale", "-"), "-" if seconds is None else f"{seconds:.0f} s",
                     runs_cell(record), record.get("status", "-"), f"`{ran_at}`" if ran_at else "-",
                     runs_commits(folder, record)])
    claims = claims_summary(folder)
    lines = [
        "# Neural Ordinary Differential Equations: our reproduction beside the paper",
        "",
        f"Scale: **{scale}** ({SCALE_TEXT[scale]}). "
        f"Written at commit `{commit}` (each target's own is in the wall-time table), torch {torch.__version__}, "
        f"{machine()}, {now or datetime.datetime.now().isoformat(timespec='seconds')}. "
        "Each table states the scale that produced it; paper values from Chen et al. (2018) and Grathwohl et al. (2019).",
        "",
        "## Claims",
        "",
        (f"{sum(row[-1] == 'yes' for row in claims)} of {len(claims)} claims hold at this scale; each artefact's "
         "section below has the details.\n\n" + markdown_table(["artefact", *CLAIM_HEADERS], claims))
        if claims else "No claims judged yet.\n",
        "Wall time of each target (from `make paper`):",
        "",
        markdown_table(["target", "scale", "wall time", "training runs", "status", "commit", "runs trained at"], rows)
        if rows
        else "No timings recorded (run `make paper`).\n",
        "A target's wall time includes training only for the runs it trained; one that reused "
        "finished runs took less than a fresh `make paper` would. Commit: the code the target ran; runs "
        "trained at: the code that trained the runs it used (a resumed run can name several).\n" if rows else "",
    ]
    for artefact in ARTEFACTS:
        lines.append(artefact_section(artefact, folder))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m neuralode.paper.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="smoke", choices=SCALES, help="the scale the artefacts were made at")
    parser.add_argument("--out", type=Path, default=None, help="the artefacts' folder (default: outputs/paper)")
    parser.add_argument("--publish", type=Path, default=None, metavar="DIR",
                        help="also copy the report, the artefacts' md/csv/png and the wall-time records into DIR "
                             "(e.g. docs/results/cpu)")
    parser.add_argument("--restore", type=Path, default=None, metavar="DIR",
                        help="first fill in what the artefacts' folder lacks (artefacts, wall-time records) from a "
                             "folder --publish wrote, so that a checkout that re-made some targets reports them all")
    args = parser.parse_args(argv)
    folder = out_dir(args.out)
    if args.restore is not None:
        restored = restore(args.restore, folder, args.scale)
        print(f"restored {len(restored)} files from {args.restore}: {', '.join(p.name for p in restored) or 'none'}")
    path = folder / "REPORT.md"
    path.write_text(render(folder, args.scale, source_commit()))
    present = [a.name for a in ARTEFACTS if (folder / f"{a.name}.md").is_file() or (folder / f"{a.name}.png").is_file()]
    print(f"wrote {path}: {len(present)} artefacts present ({', '.join(present) or 'none'})")
    if args.publish is not None:
        copied = publish(folder, args.publish, args.scale)
        print(f"published {len(copied)} files to {args.publish}")


#: The published wall-time records: each target's record with the commits that trained its runs.
TIMINGS_FILE = "timings.json"


def artefact_files(artefact: Artefact | None = None) -> list[str]:
    """The files of one artefact (all artefacts: None) that publishing copies."""
    return [f"{a.name}{suffix}" for a in ([artefact] if artefact else ARTEFACTS) for suffix in (".md", ".csv", ".png")]


def publish(folder: Path, target: Path, scale: str) -> list[Path]:
    """Copy REPORT.md and each artefact's .md, .csv and .png from ``folder`` to ``target``;
    a PNG over :data:`MAX_PNG_BYTES` is resampled smaller until it fits. The wall-time records
    at ``scale`` go to :data:`TIMINGS_FILE`, each with its runs' commits, since the runs
    themselves are not published."""
    from PIL import Image  # matplotlib's own dependency

    target.mkdir(parents=True, exist_ok=True)
    copied = []
    records = {name: dict(record, run_commits=run_commits(folder, record) or [])
               for name, record in read_timings(folder, scale).items()}
    if records:
        (target / TIMINGS_FILE).write_text(json.dumps(records, indent=1) + "\n")
        copied.append(target / TIMINGS_FILE)
    for name in ["REPORT.md"] + artefact_files():
        source = folder / name
        if not source.is_file():
            continue
        shutil.copyfile(source, target / name)
        scale = 1.0
        while name.endswith(".png") and (target / name).stat().st_size > MAX_PNG_BYTES and scale > 0.2:
            scale *= 0.8
            with Image.open(source) as picture:
                size = (round(picture.width * scale), round(picture.height * scale))
                picture.resize(size, Image.LANCZOS).save(target / name, optimize=True)
        copied.append(target / name)
    return copied



def restore(published: Path, folder: Path, scale: str) -> list[Path]:
    """Fill in ``folder`` from a folder that :func:`publish` wrote: the files of each artefact
    that ``folder`` has none of, and each target's wall-time record at ``scale`` that it lacks
    (what it has, it keeps, so a re-made artefact is never mixed with a published one).
    Returns the files written."""
    if not published.is_dir():
        raise SystemExit(f"error: --restore {published}: no such folder (one that --publish wrote, e.g. docs/results/cpu)")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for artefact in ARTEFACTS:
        names = artefact_files(artefact)
        if any((folder / name).exists() for name in names):
            continue
        for name in names:
            if (published / name).is_file():
                shutil.copyfile(published / name, folder / name)
                written.append(folder / name)
    records = {}
    if (published / TIMINGS_FILE).is_file():
        try:
            records = json.loads((published / TIMINGS_FILE).read_text())
        except json.JSONDecodeError as error:
            raise SystemExit(f"error: {published / TIMINGS_FILE} is not valid JSON ({error}); "
                             "publish again with --publish, or restore it from git") from None
    have = read_timings(folder, scale)
    (folder / "timings").mkdir(exist_ok=True)
    for name, record in records.items():
        if record.get("scale") == scale and name not in have:
            path = folder / "timings" / f"{name}-{scale}.json"
            path.write_text(json.dumps(record) + "\n")
            written.append(path)
    return written


if __name__ == "__main__":
    main()
