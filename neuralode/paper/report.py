"""``outputs/paper/REPORT.md``: every table and figure of the paper, ours beside the paper's.

It reads what the artefact targets left in ``outputs/paper/``: ``<name>.md`` (a table, included
as is) and ``<name>.png`` (a figure, embedded), for the names in :data:`ARTEFACTS`, and the
wall time of each target from ``timings/<target>.json`` (written by ``make paper``). An
artefact that is missing is listed with the command that makes it.

    python -m neuralode.paper.report --scale smoke
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from dataclasses import dataclass
from pathlib import Path

from neuralode.paper.common import SCALES, git_commit, markdown_table, out_dir


@dataclass(frozen=True)
class Artefact:
    name: str  # file stem under outputs/paper/ and the make target
    title: str
    paper: str  # what the paper shows, with its numbers
    diagram: bool = False  # nothing to reproduce: the paper's figure is a drawing


ARTEFACTS = (
    Artefact("fig1", "Figure 1: ResNet against ODE network",
             "A residual network's discrete steps against an ODE network's continuous vector field; circles "
             "mark where f is evaluated (fixed layers against the adaptive solver's choice). A toy model."),
    Artefact("fig2", "Figure 2: reverse-mode differentiation of an ODE solution",
             "The state solved forward; the adjoint a(t) = dL/dz(t) solved backward, jumping by dL/dz(t_i) at "
             "each observation time."),
    Artefact("table1", "Table 1: MNIST",
             "Test error 1.60% (1-layer MLP, quoted), 0.41% (ResNet, 0.60M parameters), 0.47% (RK-Net, 0.22M), "
             "0.42% (ODE-Net, 0.22M). Memory O(L) for ResNet, O(L~) for RK-Net, O(1) for ODE-Net; time O(L) "
             "and O(L~)."),
    Artefact("memory", "Memory against depth (Table 1's memory column, measured)",
             "ResNet O(L), RK-Net O(L~), ODE-Net O(1): the adjoint's memory does not grow with the number of "
             "solver steps."),
    Artefact("fig3", "Figure 3: statistics of a trained ODE-Net",
             "(a) NFE against numerical error, set by the tolerance; (b) forward time proportional to forward "
             "NFE; (c) backward NFE about half the forward NFE; (d) forward NFE grows over training."),
    Artefact("fig4", "Figure 4: density matching, planar NF against planar CNF",
             "KL(q||p) to three 2-D energies for a planar NF with K layers and a planar CNF with M units, "
             "K = M in {2, 8, 32}; the CNF reaches lower loss."),
    Artefact("fig5", "Figure 5: noise to data, Two Circles and Two Moons",
             "Maximum likelihood: CNF with 64 units against NF with 64 layers; densities and samples along "
             "the flow. The NF has difficulty with Two Moons."),
    Artefact("fig6", "Figure 6: the latent ODE model", "A diagram of the model's computation graph.", diagram=True),
    Artefact("fig7", "Figure 7: latent ODE with a Poisson process likelihood",
             "Events and the learned intensity lambda(z(t)) on toy data."),
    Artefact("fig8", "Figure 8: spirals, RNN against latent ODE",
             "Reconstructions and extrapolations of the RNN and the latent ODE; latent trajectories."),
    Artefact("fig9", "Figure 9: varying one dimension of z0",
             "Data-space trajectories decoded while one latent dimension of z0 varies."),
    Artefact("table2", "Table 2: predictive RMSE on spirals",
             "RNN 0.3937 / 0.3202 / 0.1813 and latent ODE 0.1642 / 0.1502 / 0.1346 for n = 30 / 50 / 100 "
             "observed points."),
    Artefact("ffjord2d", "FFJORD: learned densities on 2-D toy data",
             "Grathwohl et al. (2019): free-form CNFs with Hutchinson's trace estimator fit multi-modal and "
             "discontinuous 2-D densities; about 70-100 function evaluations per solve."),
)


def read_timings(folder: Path) -> dict[str, dict]:
    timings = {}
    for path in sorted((folder / "timings").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        timings[record.get("target", path.stem)] = record
    return timings


def wall_s(record: dict) -> float | None:
    try:
        return float(record["end"]) - float(record["start"])
    except (KeyError, TypeError, ValueError):
        return None


def artefact_section(artefact: Artefact, folder: Path) -> str:
    lines = [f"## {artefact.title}", "", f"**Paper.** {artefact.paper}", ""]
    if artefact.diagram:
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

    timings = read_timings(folder)
    names = [a.name for a in ARTEFACTS]
    rows = []
    for target in names + sorted(set(timings) - set(names)):
        record = timings.get(target)
        if record is None:
            continue
        seconds = wall_s(record)
        rows.append([f"`make {target}`", record.get("scale", "-"), "-" if seconds is None else f"{seconds:.0f} s",
                     record.get("status", "-")])
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})"
    lines = [
        "# Neural Ordinary Differential Equations: our reproduction beside the paper",
        "",
        f"Scale: **{scale}** ({'CPU, minutes: short runs, numbers far from converged' if scale == 'smoke' else 'the full recipe'}). "
        f"Commit `{commit}`, torch {torch.__version__}, {device}, written {now or datetime.datetime.now().isoformat(timespec='seconds')}. "
        "Each table states the scale that produced it; paper values from Chen et al. (2018).",
        "",
        "Wall time of each target (from `make paper`):",
        "",
        markdown_table(["target", "scale", "wall time", "status"], rows) if rows else "No timings recorded (run `make paper`).\n",
    ]
    for artefact in ARTEFACTS:
        lines.append(artefact_section(artefact, folder))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m neuralode.paper.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="smoke", choices=SCALES, help="the scale the artefacts were made at")
    parser.add_argument("--out", type=Path, default=None, help="the artefacts' folder (default: outputs/paper)")
    args = parser.parse_args(argv)
    folder = out_dir(args.out)
    path = folder / "REPORT.md"
    path.write_text(render(folder, args.scale, git_commit()))
    present = [a.name for a in ARTEFACTS if (folder / f"{a.name}.md").is_file() or (folder / f"{a.name}.png").is_file()]
    print(f"wrote {path}: {len(present)} artefacts present ({', '.join(present) or 'none'})")


if __name__ == "__main__":
    main()
