"""Implicit Runge-Kutta: one generic solver for the tableaux of ``implicit_tableaux.py``; adaptive
with an error estimate: ``radau5`` (Radau IIA 5, Hairer's estimate) and ``kvaerno5`` (ESDIRK 5(4)).

A step solves for the stage increments ``Z_i = Y_i - y0`` of the implicit stages,

    G(Z) = Z - h (A (x) I) F(y0 + Z) - h a_0 f(t0, y0) = 0,

by simplified Newton iterations (Hairer and Wanner II, IV.8): the matrix
``M = I - h (A (x) J)`` uses one Jacobian ``J`` of the field, kept across iterations and across
steps while Newton converges fast, and its LU factorisation is kept while ``h`` does not change.
Diagonally implicit tableaux (one diagonal value ``gamma``) are solved stage by stage with the
``n x n`` matrix ``I - h gamma J`` instead. A Newton solve that fails with an old ``J`` is
retried with a fresh one. After that, an adaptive method rejects the step (the controller halves
``h``); a fixed-step one tries full Newton (Jacobians at the current iterate) and then raises
``NewtonError``, naming the method, the time and the step.

Options: ``newton_tol`` (the stopping test ``eta |dZ| <= newton_tol`` in the error norm;
default Hairer's ``max(10 eps / rtol, min(0.03, rtol^0.5))`` for adaptive methods, and ``1e-12``
(float64) or ``1e-5`` (float32) relative to ``1 + |y|`` for fixed steps), ``newton_max_iter``
(default 7 adaptive, 10 fixed) and ``jacobian``.

The Jacobian. ``jacobian="auto"`` (the default) takes it from ``torch.func.jacrev`` (exact, all
columns in one vectorised pass) and falls back, for the rest of the solve, to forward
differences (``n`` evaluations of ``f``) when ``func`` cannot be transformed.
``jacobian="autograd"`` or ``"finite_difference"`` forces one. A problem that knows its
Jacobian exactly says so (``Problem.user_jacobian``), and "auto"/"autograd" use that: the
adjoint's augmented field is such a case. It calls ``torch.autograd.grad`` inside, which
``jacrev`` refuses (and ``torch.autograd.functional.jacobian`` silently answers with zeros), so
``adjoint.py`` builds its Jacobian from two batched backward passes instead of the
``2 n_state + n_params`` evaluations of a difference Jacobian. Jacobians are dense: the cost is
``O(n^2)`` memory and ``O((s n)^3)`` per LU, meant for small stiff systems.

Gradients. Newton runs without a graph. When autograd is on (``gradient="direct"``, and the
checkpointed replay) one more Newton step is taken with a graph, with the exact matrix
``dG/dZ`` at the converged stages (a Jacobian per stage): its derivative is the implicit
function theorem's ``dZ/dp = -(dG/dZ)^-1 dG/dp``, so the gradient is that of the converged
solve and the graph holds one evaluation per stage, whatever the number of iterations.

Counts: ``SolveStats.n_jacobian`` and ``n_lu``; ``nfe`` includes the one evaluation each
``jacrev`` Jacobian traces (or the ``n`` of a difference Jacobian).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from neuralode.ode.errors import InvalidOptionError, ODESolverError
from neuralode.ode.solvers.base import TableauSolver
from neuralode.ode.solvers.implicit_tableaux import ImplicitTableau
from neuralode.ode.solvers.runge_kutta import HermiteInterpolant, Interpolant

JACOBIANS = ("auto", "autograd", "finite_difference")
# Radau IIA 5's embedded estimate (Hairer and Wanner II, IV.8): gamma0 = 1 / MU and weights E.
_MU = 3 + 3 ** (2 / 3) - 3 ** (1 / 3)
_S6 = math.sqrt(6)
_RADAU_E = ((-13 - 7 * _S6) / 3, (-13 + 7 * _S6) / 3, -1 / 3)
# The error ratio a step whose Newton solve failed answers: (0.9 / 0.5)^error_order, which the
# default controller (safety 0.9) turns into halving the step, as Hairer's radau5 does; shrinking
# by min_factor (0.2) instead lets the step grow back past the failing size and fail again.
_FAILED_FACTOR = 0.5
_SMALL = 64  # systems up to this size are solved by an explicit inverse (see ``_factor``)


class NewtonError(ODESolverError):
    """Newton's iteration for a fixed step of an implicit method did not converge."""


@lru_cache(maxsize=64)
def _coefficients(tab: ImplicitTableau, dtype: torch.dtype, device: torch.device):
    """The implicit block of the tableau, its column on the explicit first stage, and the
    weights ``d, d0`` with ``y1 = y0 + sum_i d_i Z_i + h d0 f(t0, y0)`` (no extra evaluation)."""
    e = 1 if tab.explicit_first else 0
    a = torch.tensor(tab.a, dtype=torch.float64)
    b = torch.tensor(tab.b, dtype=torch.float64)
    a_imp, a0, b_imp = a[e:, e:], a[e:, 0] if e else None, b[e:]
    if tuple(tab.a[-1]) == tuple(tab.b):  # stiffly accurate: y1 is the last stage, exactly
        d = torch.zeros(len(b_imp), dtype=torch.float64)
        d[-1] = 1.0
        d0 = 0.0
    else:  # K = A^-1 (Z / h - a0 f0), y1 = y0 + h b.K
        d = torch.linalg.solve(a_imp.T, b_imp)
        d0 = float(b[0] - d @ a0) if e else 0.0
    as_t = lambda x: x.to(dtype=dtype, device=device) if x is not None else None  # noqa: E731
    return as_t(a_imp), as_t(a0), as_t(d), d0, tab.c[e:]


def _end(c: float, perturb_end: bool) -> int:
    """The ``perturb`` of a stage at ``t + c h``: just before the step's end when it ends on a
    boundary that must not be evaluated (options["perturb"], or a jump_t)."""
    return -1 if perturb_end and c == 1 else 0


def _rms(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x)) / math.sqrt(max(x.numel(), 1))


@dataclass
class ImplicitStep:
    y1: torch.Tensor
    stages: torch.Tensor  # f(t0, y0) as a one-row stack: what the fixed-step cubic interpolant reads
    z: torch.Tensor | None  # converged stage increments (m, n); None when Newton failed
    f0: torch.Tensor
    t: float
    y0: torch.Tensor
    field: object
    iterations: int = 0
    failed: str | None = None


class ImplicitRungeKutta(TableauSolver):
    """Any implicit Runge-Kutta tableau; adaptive when the tableau names an error estimate."""

    extra_options = ("newton_tol", "newton_max_iter", "jacobian")

    def __init__(self, tableau: ImplicitTableau):
        super().__init__(tableau)
        self._stiffly_accurate = tuple(tableau.a[-1]) == tuple(tableau.b)  # y1 is the last stage
        self.newton_tol: float | None = None  # None: the defaults of the module docstring
        self.newton_max_iter = 7 if self.adaptive else 10
        self.jacobian = "auto"
        self._tolerances = None  # (rtol, atol) of the solve, from ``prepare``
        self._exact_jacobian = None  # the problem's own Jacobian, from ``prepare``
        self._user_time = lambda s: s  # solver time -> the user's, from ``prepare``
        self._reset()

    def prepare(self, controller, rtol, atol, problem):
        """The solve's tolerances (Newton's stopping test is relative to them, adaptive only), and
        the problem's exact Jacobian where it has one."""
        self._tolerances = (rtol, atol) if self.adaptive else None
        self._exact_jacobian = problem.jacobian if problem.user_jacobian is not None else None
        self._user_time = problem.user_time  # for messages
        return controller

    def configure(self, options: dict, prefix: str = "") -> None:
        tol = options.get("newton_tol")
        if tol is not None and not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and 0 < tol < 1):
            raise InvalidOptionError(f"{prefix}option 'newton_tol' must be a number in (0, 1), got {tol!r}")
        iters = options.get("newton_max_iter")
        if iters is not None and not (isinstance(iters, int) and not isinstance(iters, bool) and iters >= 1):
            raise InvalidOptionError(f"{prefix}option 'newton_max_iter' must be a positive integer, got {iters!r}")
        jac = options.get("jacobian")
        if jac is not None and jac not in JACOBIANS:
            raise InvalidOptionError(f"{prefix}option 'jacobian' must be one of {', '.join(JACOBIANS)}, got {jac!r}")
        self.newton_tol = tol if tol is not None else self.newton_tol
        self.newton_max_iter = iters or self.newton_max_iter
        self.jacobian = jac or self.jacobian

    def _reset(self) -> None:
        """Forget the Jacobian and factorisations: a new solve (maybe of another field)."""
        self._J = None
        self._jac_t = None  # the time the Jacobian was taken at (it is "fresh" there)
        self._refresh = False  # Newton converged slowly: take a new Jacobian at the next step
        self._lu = None  # (h, solve) for M = I - h (A (x) J)
        self._lu_err = None  # (h, solve) for MU / h - J (radau5 error estimate)
        self._poly = None  # (t, h, y0, z) of the last accepted step: its collocation polynomial
        self._last = None  # the same of the last attempted step
        self._scale = None  # the controller's error scale, for Newton's stopping test
        self._jac_mode = self.jacobian
        self._retry = True  # radau: refine the error estimate on the first step and after a rejection
        self.n_jacobian = self.n_lu = 0

    def count_into(self, stats) -> None:
        stats.n_jacobian += self.n_jacobian
        stats.n_lu += self.n_lu

    def init(self, field, t: float, y: torch.Tensor, perturb: int = 0) -> torch.Tensor:
        self._reset()
        return field(t, y, perturb)

    def next_init(self, field, t1: float, step: ImplicitStep, perturb: int = 0) -> torch.Tensor:
        return field(t1, step.y1, perturb)

    # ------------------------------------------------------------------ Jacobian and LU
    def _jacobian(self, field, t: float, y: torch.Tensor, f0: torch.Tensor | None = None,
                  perturb: int = 0) -> torch.Tensor:
        """``df/dy`` at ``(t, y)`` as an (n, n) matrix, without a graph; ``perturb`` as ``field``'s:
        just after (+1) or before (-1) ``t``, so that with options["perturb"] (or at a jump_t)
        no evaluation falls on a step's boundary."""
        self.n_jacobian += 1
        if self._exact_jacobian is not None and self._jac_mode != "finite_difference":
            return self._exact_jacobian(t, y, perturb).detach().contiguous()
        shape, n = y.shape, y.numel()
        if self._jac_mode in ("auto", "autograd"):
            try:
                with torch.no_grad():
                    J = torch.func.jacrev(lambda v: field(t, v.view(shape), perturb).reshape(-1))(y.reshape(-1))
                return J.detach().contiguous()  # torch.kron needs it contiguous
            except (RuntimeError, NotImplementedError) as err:
                if self._jac_mode == "autograd":
                    raise ODESolverError(f"method {self.name!r}: torch.func.jacrev cannot differentiate func ({err}); "
                                         "use options['jacobian']='finite_difference' (or 'auto')") from err
                self._jac_mode = "finite_difference"
        with torch.no_grad():
            flat = y.reshape(-1)
            base = (f0 if f0 is not None else field(t, y, perturb)).reshape(-1)
            eps = torch.finfo(y.dtype).eps
            delta = math.sqrt(eps) * flat.abs().clamp(min=1.0)
            J = torch.empty((n, n), dtype=y.dtype, device=y.device)
            for j in range(n):
                v = flat.clone()
                v[j] += delta[j]
                J[:, j] = (field(t, v.view(shape), perturb).reshape(-1) - base) / delta[j]
            return J

    def _factor(self, matrix: torch.Tensor):
        """A solver for ``matrix x = rhs`` (rhs a column). Small systems keep the explicit inverse:
        one matmul per solve is ~7x faster than ``lu_solve``'s dispatch there (CPU, n <= 64)."""
        self.n_lu += 1
        if matrix.shape[0] <= _SMALL:
            inverse, info = torch.linalg.inv_ex(matrix)
            return (lambda rhs: inverse @ rhs) if int(info) == 0 else None  # None: singular
        lu, pivots, info = torch.linalg.lu_factor_ex(matrix)
        return (lambda rhs: torch.linalg.lu_solve(lu, pivots, rhs)) if int(info) == 0 else None

    def _newton_matrix(self, h: float, a_imp: torch.Tensor, jacobians) -> torch.Tensor:
        """``I - h (A (x) J)``, or with one Jacobian per stage (``jacobians`` a list): block (i, j)
        is ``a_ij J_j``."""
        m = a_imp.shape[0]
        if not isinstance(jacobians, list):
            kron = torch.kron(a_imp, jacobians)
        else:
            n = jacobians[0].shape[0]
            kron = (a_imp[:, :, None, None] * torch.stack(jacobians)[None]).permute(0, 2, 1, 3).reshape(m * n, m * n)
        return torch.eye(kron.shape[0], dtype=kron.dtype, device=kron.device) - h * kron

    # ------------------------------------------------------------------ one step
    def _stage_slopes(self, field, t, y, z, h, c, perturb_end):
        shape = y.shape
        return torch.stack([field(t + ci * h, (y.reshape(-1) + zi).view(shape), _end(ci, perturb_end))
                            .reshape(-1) for ci, zi in zip(c, z.unbind(0))])

    def _scale_and_tol(self, y: torch.Tensor, f0: torch.Tensor):
        eps = torch.finfo(y.dtype).eps
        if not self.adaptive:
            tol = self.newton_tol or (1e-12 if y.dtype == torch.float64 else max(1e-5, 100 * eps))
            return 1.0 + y.reshape(-1).abs(), tol
        rtol, atol = self._tolerances or (None, None)
        if self.newton_tol is not None:
            tol = self.newton_tol
        elif isinstance(rtol, float) and rtol > 0:  # Hairer's radau5 default
            tol = max(10 * eps / rtol, min(0.03, rtol ** 0.5))
        else:
            tol = 0.03
        if self._scale is not None and self._scale.shape == y.shape:
            return self._scale.reshape(-1), tol
        if rtol is not None:  # before the controller's first scale
            return (atol + rtol * y.reshape(-1).abs()) + 1e-300, tol
        return math.sqrt(eps) * (1.0 + y.reshape(-1).abs()), tol

    def _starting_guess(self, t, y, h, c):
        """Adaptive methods: the last accepted step's collocation polynomial, extrapolated to this
        step's stages (Hairer and Wanner IV.8); it saves Newton iterations on smooth stretches."""
        if not self.adaptive:
            return None
        def ends_at(step) -> bool:  # up to the rounding of a step shortened onto an output time
            return step is not None and abs(step[0] + step[1] - t) <= 1e-12 * max(abs(t), abs(step[1]))

        if ends_at(self._last):  # that attempt was accepted
            self._poly = self._last
        if not ends_at(self._poly) or self._poly[2].shape != y.shape:
            return None
        t0, h0, y0, z0 = self._poly
        thetas = [(t + ci * h - t0) / h0 for ci in c]
        return _collocation(thetas, self._coefficients_c(), z0) + (y0 - y).reshape(1, -1)

    def _coefficients_c(self):
        return list(_coefficients(self.tableau, torch.float64, torch.device("cpu"))[4])

    def _newton(self, field, t, y, h, f0, perturb_end):
        """Converged stage increments (m, n) and the iterations taken, or (None, reason).

        Tries the kept Jacobian, then a fresh one at (t, y); a fixed step then tries full Newton
        (Jacobians at the current stages, every iteration): a Jacobian at y0 can miss the stiffness
        a step runs into (Robertson from t = 0, where the fast reactions are still switched off).
        Diagonally implicit tableaux are solved stage by stage with the n x n matrix
        ``I - h gamma J``; the others for all stages at once with ``I - h (A (x) J)``.
        """
        scale, tol = self._scale_and_tol(y, f0)
        eps = torch.finfo(y.dtype).eps
        # Below this, an update is rounding noise: converged, whatever the rate says.
        # (Fixed steps scale by 1 + |y|, so |y| / scale < 1 there.)
        floor = 16 * eps * (_rms(y.reshape(-1) / scale) if self.adaptive else 1.0) + 1e-300
        reason = ""
        for attempt in ("kept", "fresh") if self.adaptive else ("kept", "fresh", "full"):
            fresh = self._jac_t == t
            if attempt == "fresh" and fresh:
                continue  # the kept Jacobian was taken here: nothing new to try
            if self._J is None or (self._refresh and not fresh) or attempt == "fresh":
                self._J, self._jac_t, self._refresh = self._jacobian(field, t, y, f0, 1 if perturb_end else 0), t, False
                self._lu = self._lu_err = None
            solve = self._dirk_stages if self.tableau.dirk else self._coupled_stages
            z, info = solve(field, t, y, h, f0, perturb_end, attempt, scale, tol, floor)
            if z is not None:
                return z, info
            reason = info
        return None, reason

    def _kept_solver(self, h: float, matrix_of_J):
        """The factorisation of the Newton matrix for the kept Jacobian at step ``h`` (steps that
        differ by rounding, as on a grid, share it)."""
        if self._lu is None or abs(self._lu[0] - h) > 1e-10 * abs(h):
            self._lu = (h, self._factor(matrix_of_J(self._J)))
        return self._lu[1]

    def _coupled_stages(self, field, t, y, h, f0, perturb_end, attempt, scale, tol, floor):
        a_imp, a0, _, _, c = _coefficients(self.tableau, y.dtype, y.device)
        m, n = a_imp.shape[0], y.numel()
        known = h * a0[:, None] * f0.reshape(1, -1) if a0 is not None else 0.0
        z = self._starting_guess(t, y, h, c) if attempt == "kept" else None
        if z is None:
            z = torch.zeros((m, n), dtype=y.dtype, device=y.device)

        def residual(z):
            return known + h * (a_imp @ self._stage_slopes(field, t, y, z, h, c, perturb_end)) - z

        def solver(z):
            if attempt != "full":
                return self._kept_solver(h, lambda J: self._newton_matrix(h, a_imp, J))
            jacobians = [self._jacobian(field, t + ci * h, (y.reshape(-1) + zi).view(y.shape),
                                        perturb=_end(ci, perturb_end)) for ci, zi in zip(c, z.unbind(0))]
            return self._factor(self._newton_matrix(h, a_imp, jacobians))

        return self._iterate(residual, solver, z, attempt, scale, tol, floor)

    def _dirk_stages(self, field, t, y, h, f0, perturb_end, attempt, scale, tol, floor):
        """Stage by stage: ``z_i = known_i + h gamma f(t + c_i h, y + z_i)``, where ``known_i``
        holds the explicit first stage and the stages before ``i``; their slopes are recovered
        from their increments, with no extra evaluation."""
        tab = self.tableau
        e = 1 if tab.explicit_first else 0
        rows = [row[:i + e] for i, row in enumerate(tab.a[e:])]  # python floats: cheaper than 0-dim tensors
        gamma, c = tab.a[e][e], tab.c[e:]
        flat_y, flat_f0 = y.reshape(-1), f0.reshape(-1)
        zs, slopes, total = [], [flat_f0] if e else [], 0
        for i, row in enumerate(rows):
            known = 0.0
            for a_ij, slope in zip(row, slopes):
                if a_ij:
                    known = known + (h * a_ij) * slope
            ci, perturb = c[i], _end(c[i], perturb_end)

            def residual(z, known=known, ci=ci, perturb=perturb):
                return known + (h * gamma) * field(t + ci * h, (flat_y + z).view(y.shape), perturb).reshape(-1) - z

            def solver(z, ci=ci):
                eye = lambda: torch.eye(z.numel(), dtype=z.dtype, device=z.device)  # noqa: E731
                if attempt != "full":
                    return self._kept_solver(h, lambda J: eye() - (h * gamma) * J)
                J = self._jacobian(field, t + ci * h, (flat_y + z).view(y.shape), perturb=perturb)
                return self._factor(eye() - (h * gamma) * J)

            z, info = self._iterate(residual, solver, zs[-1] if zs else torch.zeros_like(flat_y), attempt,
                                    scale, tol, floor)
            if z is None:
                return None, f"{info} (stage {i + 1 + e})"
            zs.append(z)
            if i + 1 < len(rows):
                slopes.append((z - known) / (h * gamma))
            total += info
        return torch.stack(zs), total

    def _iterate(self, residual, solver, z, attempt, scale, tol, floor):
        """Simplified (or, with attempt "full", full) Newton from ``z``: ``z += M^-1 residual(z)``
        until Hairer's test ``eta |dz| <= tol`` (``eta = rate / (1 - rate)``) passes."""
        # Every step waits for a rate measured on its own iterations (or an update below rounding)
        # before it stops. Hairer and Wanner (IV.8) let a step stop after one iteration on the last
        # solve's rate, max(eta_old, eps)^0.8; but after a solve that converged exactly (rate 0)
        # that accepts the first iterate of any field: on f = a + (y - (a t + b))^5 a fixed
        # implicit Euler step then kept an error of 7e-5 against a Newton tolerance of 1e-12, and
        # the forward solve's derivative (1.0023) no longer matched its adjoint's (1). Adaptive
        # steps waited already, as scipy's Radau does: stopping earlier cost accuracy on HIRES.
        eta = math.inf
        prev, rate = None, 0.0
        # Full Newton may need a run of linear (halving) iterations before it turns quadratic:
        # more of them, and no giving up on a merely slow rate.
        max_iter = max(4 * self.newton_max_iter, 40) if attempt == "full" else self.newton_max_iter
        for k in range(max_iter):
            solve = solver(z)
            if solve is None:
                return None, "its matrix I - h A J is singular"
            dz = solve(residual(z).reshape(-1, 1)).view(z.shape)
            size = _rms(dz / scale)
            if not math.isfinite(size):
                return None, "the stage values became non-finite"
            if prev is not None:
                rate = size / prev
                slow = attempt != "full" and rate ** (max_iter - k) / (1 - rate) * size > tol
                if size > floor and (rate >= 1 or slow):
                    return None, f"it converged too slowly (contraction rate {rate:.3g})"
                eta = rate / (1 - rate) if rate < 1 else 1.0
            z = z + dz
            if size <= floor or eta * size <= tol:
                self._refresh = self._refresh or (k + 1 > 2 and rate > 1e-3)
                return z, k + 1
            prev = size
        return None, f"it did not converge in newton_max_iter={self.newton_max_iter} iterations"

    def step(self, field, t: float, y: torch.Tensor, h: float, f0: torch.Tensor,
             perturb_end: bool = False) -> ImplicitStep:
        with torch.no_grad():
            z, info = self._newton(field, t, y.detach(), h, f0.detach(), perturb_end)
        if z is None:
            if not self.adaptive:
                where = self._user_time
                raise NewtonError(
                    f"method {self.name!r}: Newton's iteration for the step from t={where(t):.6g} with step size "
                    f"{h:.3g} failed: {info}, even with a fresh Jacobian and full Newton. The step is too large for the implicit "
                    "equations (or func is not smooth there): use a smaller options['step_size'], an adaptive "
                    "implicit method (method='radau5'), or raise options['newton_max_iter']")
            return ImplicitStep(y, f0.unsqueeze(0), None, f0, t, y, field, failed=info)
        self._last = (t, h, y.detach(), z)
        a_imp, a0, d, d0, c = _coefficients(self.tableau, y.dtype, y.device)
        # Only when something upstream wants a gradient: y0 or func's parameters (seen in f0).
        if torch.is_grad_enabled() and (y.requires_grad or f0.requires_grad):
            z = self._implicit_function_step(field, t, y, h, f0, z, perturb_end)
        y1 = y + (z[-1] if self._stiffly_accurate else d @ z).view(y.shape)
        if d0:
            y1 = y1 + (h * d0) * f0
        return ImplicitStep(y1, f0.unsqueeze(0), z, f0, t, y, field, iterations=info)

    def _implicit_function_step(self, field, t, y, h, f0, z, perturb_end):
        """One Newton step with a graph from the converged ``z``, with the exact ``dG/dZ``: its
        derivative is the implicit function theorem's (see the module docstring)."""
        a_imp, a0, _, _, c = _coefficients(self.tableau, y.dtype, y.device)
        m, n = z.shape
        with torch.no_grad():
            shape = y.shape
            jacobians = [self._jacobian(field, t + ci * h, (y.detach().reshape(-1) + zi).view(shape),
                                        perturb=_end(ci, perturb_end)) for ci, zi in zip(c, z.unbind(0))]
            solve = self._factor(self._newton_matrix(h, a_imp, jacobians))
        if solve is None:
            raise ODESolverError(
                f"method {self.name!r}: the implicit equations of the step from t={t:.6g} (solver time) with step "
                f"size {h:.3g} have a singular Jacobian at their solution, so their gradient is undefined there; "
                "use a smaller step, or gradient='adjoint'")
        slopes = self._stage_slopes(field, t, y, z, h, c, perturb_end)
        residual = h * (a_imp @ slopes) - z
        if a0 is not None:
            residual = residual + h * a0[:, None] * f0.reshape(1, -1)
        return z + solve(residual.reshape(-1, 1)).view(m, n)

    # ------------------------------------------------------------------ error and dense output
    def error_norm(self, step: ImplicitStep, h: float, scale, norm) -> torch.Tensor:
        """Hairer's estimate for Radau IIA 5: ``(I - h gamma0 J)^-1 (h gamma0 f0 + gamma0 sum E_i Z_i)``,
        filtered through the same kind of matrix as Newton's, so it stays bounded on stiff components.
        A failed Newton solve answers a large ratio: the step is rejected and shrunk."""
        self._scale = scale.clone()
        if step.failed is not None:
            return torch.tensor((0.9 / _FAILED_FACTOR) ** max(self.error_order, 1))
        if not self.adaptive:
            return torch.zeros(())
        if self.tableau.error == "last_stages":  # ESDIRK: y1 minus the embedded solution
            return norm((step.z[-1] - step.z[-2]).detach().view(step.y1.shape) / scale)
        y0, f0, z = step.y0.detach(), step.f0.detach().reshape(-1), step.z.detach()
        if self._lu_err is None or abs(self._lu_err[0] - h) > 1e-10 * abs(h):
            eye = torch.eye(y0.numel(), dtype=y0.dtype, device=y0.device)
            self._lu_err = (h, self._factor(_MU / h * eye - self._J))
        solve = self._lu_err[1]
        if solve is None:
            return torch.tensor((0.9 / _FAILED_FACTOR) ** self.error_order)
        e = torch.tensor(_RADAU_E, dtype=y0.dtype, device=y0.device)
        ze = (e @ z) / h
        err = solve((f0 + ze).reshape(-1, 1)).view(y0.shape)
        ratio = norm(err / scale)
        if self._retry and ratio > 1:  # Hairer: the estimate may be too pessimistic on stiff parts
            f_err = step.field(step.t, y0 + err).reshape(-1)
            err = solve((f_err + ze).reshape(-1, 1)).view(y0.shape)
            ratio = norm(err / scale)
        self._retry = bool(ratio > 1)
        return ratio

    def interpolant(self, field, t: float, h: float, y0: torch.Tensor, step: ImplicitStep, f1=None):
        """Radau: the collocation polynomial. ESDIRK (stages outside [0, 1]): cubic Hermite."""
        if self.tableau.error == "last_stages":
            return HermiteInterpolant(t, h, y0, step.y1, step.f0, f1 if f1 is not None else field(t + h, step.y1, -1))
        return CollocationInterpolant(t, h, y0, step, _coefficients(self.tableau, y0.dtype, y0.device)[4])


class CollocationInterpolant(Interpolant):
    """The collocation polynomial through ``y0`` at 0 and the stages at ``c_i`` (Radau IIA: order 3
    inside the step, exact at both ends)."""

    def __init__(self, t: float, h: float, y0: torch.Tensor, step: ImplicitStep, c):
        self.t, self.h, self.y0, self.y1, self.z, self.c = t, h, y0, step.y1, step.z, list(c)

    def _between(self, thetas: list[float]) -> torch.Tensor:
        return self.y0.unsqueeze(0) + _collocation(thetas, self.c, self.z).view(len(thetas), *self.y0.shape)


def _collocation(thetas: list[float], c: list[float], z: torch.Tensor) -> torch.Tensor:
    """The polynomial through 0 at 0 and ``z[i]`` at ``c[i]``, at each theta: (len(thetas), n)."""
    nodes = [0.0] + list(c)
    weights = []
    for th in thetas:
        row = []
        for i in range(1, len(nodes)):
            w = 1.0
            for j, xj in enumerate(nodes):
                if j != i:
                    w *= (th - xj) / (nodes[i] - xj)
            row.append(w)
        weights.append(row)
    return torch.tensor(weights, dtype=z.dtype, device=z.device) @ z
