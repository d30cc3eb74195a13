"""Every table and figure of the paper that we reproduce: one row per artefact.

The command line (``python -m neuralode table|figure <name>``), ``make`` (one target per row,
written to ``mk/artefacts.mk`` by ``python3 neuralode/paper/registry.py make``) and the report
(``outputs/paper/REPORT.md``, in this order) all read :data:`ARTEFACTS`. A new figure is a module
``neuralode/paper/<name>.py`` with ``main(argv)`` and one row here.

This file imports nothing but the standard library: ``make`` runs it before anything is installed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

#: The scales of every target: ``smoke`` (CPU, minutes: the pipeline), ``cpu`` (the paper's claims
#: on a 2-core CPU, hours) and ``paper`` (the full recipe, GPU). Their training recipes are
#: ``configs/recipe/<scale>/``, everything else ``configs/paper_scales.yaml``.
SCALES = ("smoke", "cpu", "paper")


@dataclass(frozen=True)
class Artefact:
    name: str  # the module neuralode.paper.<name>, the make target and the file stem under outputs/paper/
    kind: str  # "table" or "figure" (the subcommand that makes it), or "diagram" (nothing to reproduce)
    family: str  # mnist, latent, flows, sde: the experiments whose runs it reads
    title: str
    paper: str  # what the paper shows, with its numbers
    make: str = ""  # what `make help` says the target does and writes
    options: str = ""  # what the make target passes besides --scale (make variables allowed)
    scales: tuple[str, ...] = SCALES

    @property
    def module(self) -> str:
        return f"neuralode.paper.{self.name}"


ARTEFACTS = (
    Artefact("fig1", "figure", "mnist", "Figure 1: ResNet against ODE network",
             "A residual network's discrete steps against an ODE network's continuous vector field; circles "
             "mark where f is evaluated (fixed layers against the adaptive solver's choice). A toy model.",
             make="Figure 1: a toy ResNet's steps vs an ODE-Net's vector field -> outputs/paper/fig1.png"),
    Artefact("fig2", "figure", "mnist", "Figure 2: reverse-mode differentiation of an ODE solution",
             "The state solved forward; the adjoint a(t) = dL/dz(t) solved backward, jumping by dL/dz(t_i) at "
             "each observation time.",
             make="Figure 2: one adjoint solve, state forward and adjoint backward with its jumps -> outputs/paper/fig2.png"),
    Artefact("table1", "table", "mnist", "Table 1: MNIST",
             "Test error 1.60% (1-layer MLP, quoted), 0.41% (ResNet, 0.60M parameters), 0.47% (RK-Net, 0.22M), "
             "0.42% (ODE-Net, 0.22M). Memory O(L) for ResNet, O(L~) for RK-Net, O(1) for ODE-Net; time O(L) "
             "and O(L~).",
             make="Table 1 (MNIST: MLP, ResNet, RK-Net, ODE-Net), training what is missing -> outputs/paper/table1.md",
             options="--train"),
    Artefact("memory", "table", "mnist", "Memory against depth (Table 1's memory column, measured)",
             "ResNet O(L), RK-Net O(L~), ODE-Net O(1): the adjoint's memory does not grow with the number of "
             "solver steps.",
             make="Table 1's memory column: training-step memory vs depth: ResNet O(L), RK-Net O(L~), ODE-Net O(1) -> outputs/paper/memory.md, .png"),
    Artefact("fig3", "figure", "mnist", "Figure 3: statistics of a trained ODE-Net",
             "(a) NFE against numerical error, set by the tolerance; (b) forward time proportional to forward "
             "NFE; (c) backward NFE about half the forward NFE; (d) forward NFE grows over training.",
             make="Figure 3: NFE statistics of the ODE-Net run (trained or reused) -> outputs/paper/fig3.png"),
    Artefact("fig4", "figure", "flows", "Figure 4: density matching, planar NF against planar CNF",
             "KL(q||p) to three 2-D energies for a planar NF with K layers and a planar CNF with M units, "
             "K = M in {2, 8, 32}; the CNF reaches lower loss.",
             make="Figure 4: density matching, planar NF (K layers) vs CNF (M units), K=M in {2,8,32} -> outputs/paper/fig4.png, .md, .csv"),
    Artefact("fig5", "figure", "flows", "Figure 5: noise to data, Two Circles and Two Moons",
             "Maximum likelihood: CNF with 64 units against NF with 64 layers; densities and samples along "
             "the flow. The NF has difficulty with Two Moons.",
             make="Figure 5: noise to data on Two Circles / Two Moons, CNF vs NF at 5..100% of the flow -> outputs/paper/fig5.png"),
    Artefact("fig6", "diagram", "latent", "Figure 6: the latent ODE model", "A diagram of the model's computation graph.",
             scales=()),
    Artefact("fig7", "figure", "latent", "Figure 7: latent ODE with a Poisson process likelihood",
             "Events and the learned intensity lambda(z(t)) on toy data.",
             make="Figure 7: Poisson process latent ODE, events and learned intensity -> outputs/paper/fig7.png"),
    Artefact("fig8", "figure", "latent", "Figure 8: spirals, RNN against latent ODE",
             "Reconstructions and extrapolations of the RNN and the latent ODE; latent trajectories.",
             make="Figure 8: spirals, RNN vs latent ODE and the latent trajectories (Table 2's n = 30 runs) -> outputs/paper/fig8.png"),
    Artefact("fig9", "figure", "latent", "Figure 9: varying one dimension of z0",
             "Data-space trajectories decoded while one latent dimension of z0 varies.",
             make="Figure 9: trajectories decoded while one dimension of z0 varies -> outputs/paper/fig9.png"),
    Artefact("table2", "table", "latent", "Table 2: predictive RMSE on spirals",
             "RNN 0.3937 / 0.3202 / 0.1813 and latent ODE 0.1642 / 0.1502 / 0.1346 for n = 30 / 50 / 100 "
             "observed points.",
             make="Table 2 (spirals: the paper's two RNNs and the latent ODE, n = 30, 50, 100), training what is missing "
                  "-> outputs/paper/table2.md",
             options="--train"),
    Artefact("ffjord2d", "figure", "flows", "FFJORD: learned densities on 2-D toy data",
             "Grathwohl et al. (2019): free-form CNFs with Hutchinson's trace estimator fit multi-modal and "
             "discontinuous 2-D densities; about 70-100 function evaluations per solve.",
             make="FFJORD on the eight 2-D toys: learned densities, NFE per solve -> outputs/paper/ffjord2d.png, .md"),
    Artefact("sdenet", "table", "sde", "SDE-Net: uncertainty on MNIST",
             "Kong et al. (2020): an SDE block whose diffusion is trained to be small on the training data and "
             "large off it; out-of-distribution detection (SVHN) TNR at 95% TPR 99.4 against ResNet's 88.8, "
             "AUROC 99.8 against 95.9, at the same accuracy (one run of the authors' code).",
             make="SDE-Net vs ResNet and ODE-Net: error, misclassification and OOD detection "
                  "(OOD=animal_mnist|svhn) -> outputs/paper/sdenet.md",
             options="--train --ood $(OOD)"),
)

BY_NAME = {artefact.name: artefact for artefact in ARTEFACTS}


def made(kind: str | None = None) -> list[Artefact]:
    """The artefacts a command makes (of ``kind``, "table" or "figure"; None: both), in report order."""
    return [a for a in ARTEFACTS if a.kind != "diagram" and kind in (None, a.kind)]


def makefile() -> str:
    """``mk/artefacts.mk``: one target per artefact, each timed (mk/paper.mk's ``timed``)."""
    lines = ["# Written by `python3 neuralode/paper/registry.py make` from neuralode/paper/registry.py; do not edit.",
             "PAPER_TARGETS := " + " ".join(a.name for a in made()),
             ".PHONY: $(PAPER_TARGETS)", ""]
    for a in made():
        command = " ".join(part for part in ("$(PY) -m", a.module, a.options, "--scale $(SCALE) $(ARGS)") if part)
        lines += [f"{a.name}: install  ## {a.make} (SCALE={'|'.join(a.scales)})",
                  f"\t$(call timed,{command})", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] != ["make"]:
        sys.exit("usage: python3 neuralode/paper/registry.py make   (prints mk/artefacts.mk)")
    print(makefile(), end="")
