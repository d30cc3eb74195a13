"""Implicit Runge-Kutta tableaux as data; one generic stepper (``implicit.py``) runs them all.

Unlike ``tableaux.py`` the stage matrix ``a`` is full (s x s rows). A first stage with a zero
row and ``c = 0`` is explicit (its slope is ``f(t0, y0)``); every other stage is solved for.
Coefficients from Hairer and Wanner, "Solving ODEs II" (Gauss-Legendre, Radau IIA, SDIRK),
Alexander (1977) for the two-stage L-stable SDIRK, Hosea and Shampine (1996) for TR-BDF2, and
Kvaerno (2004, BIT 44) for the ESDIRK 5(4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ImplicitTableau:
    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]  # full s x s
    b: tuple[float, ...]
    l_stable: bool = False  # stiffly accurate and L-stable: y' = -lambda y is damped for any step
    # Adaptive methods name their error estimate: "radau" (Hairer's embedded one for Radau IIA 5) or
    # "last_stages" (stiffly accurate ESDIRK whose second-last stage is the embedded solution).
    error: str | None = None
    error_order: int = 0  # exponent of the step-size controller: 1/(error_order)

    @property
    def adaptive(self) -> bool:
        return self.error is not None

    @property
    def num_stages(self) -> int:
        return len(self.c)

    @property
    def dirk(self) -> bool:
        """Diagonally implicit with one diagonal value on the implicit stages: solved stage by stage."""
        e = 1 if self.explicit_first else 0
        s = self.num_stages
        lower = all(self.a[i][j] == 0.0 for i in range(e, s) for j in range(i + 1, s))
        return lower and len({self.a[i][i] for i in range(e, s)}) == 1

    @property
    def explicit_first(self) -> bool:
        return self.c[0] == 0.0 and all(x == 0.0 for x in self.a[0])


_s2, _s3, _s6, _s15 = math.sqrt(2), math.sqrt(3), math.sqrt(6), math.sqrt(15)

IMPLICIT_EULER = ImplicitTableau("implicit_euler", 1, c=(1.0,), a=((1.0,),), b=(1.0,), l_stable=True)
IMPLICIT_MIDPOINT = ImplicitTableau("implicit_midpoint", 2, c=(0.5,), a=((0.5,),), b=(1.0,))
TRAPEZOID = ImplicitTableau("trapezoid", 2, c=(0.0, 1.0), a=((0.0, 0.0), (0.5, 0.5)), b=(0.5, 0.5))
_g = 1 - _s2 / 2  # Alexander's L-stable two-stage SDIRK
SDIRK2 = ImplicitTableau("sdirk2", 2, c=(_g, 1.0), a=((_g, 0.0), (1 - _g, _g)), b=(1 - _g, _g), l_stable=True)
_gt = 2 - _s2  # TR-BDF2: a trapezoidal stage to t + gamma h, then BDF2 to t + h
_d, _w = _gt / 2, _s2 / 4
TRBDF2 = ImplicitTableau("trbdf2", 2, c=(0.0, _gt, 1.0), a=((0.0, 0.0, 0.0), (_d, _d, 0.0), (_w, _w, _d)),
                         b=(_w, _w, _d), l_stable=True)
GL4 = ImplicitTableau("gl4", 4, c=(0.5 - _s3 / 6, 0.5 + _s3 / 6),
                      a=((0.25, 0.25 - _s3 / 6), (0.25 + _s3 / 6, 0.25)), b=(0.5, 0.5))
GL6 = ImplicitTableau(
    "gl6", 6, c=(0.5 - _s15 / 10, 0.5, 0.5 + _s15 / 10),
    a=((5 / 36, 2 / 9 - _s15 / 15, 5 / 36 - _s15 / 30),
       (5 / 36 + _s15 / 24, 2 / 9, 5 / 36 - _s15 / 24),
       (5 / 36 + _s15 / 30, 2 / 9 + _s15 / 15, 5 / 36)),
    b=(5 / 18, 4 / 9, 5 / 18))
RADAU_IIA3 = ImplicitTableau("radauIIA3", 3, c=(1 / 3, 1.0), a=((5 / 12, -1 / 12), (0.75, 0.25)), b=(0.75, 0.25),
                             l_stable=True)
_radau5_a = ((88 / 360 - 7 * _s6 / 360, 296 / 1800 - 169 * _s6 / 1800, -2 / 225 + 3 * _s6 / 225),
             (296 / 1800 + 169 * _s6 / 1800, 88 / 360 + 7 * _s6 / 360, -2 / 225 - 3 * _s6 / 225),
             (16 / 36 - _s6 / 36, 16 / 36 + _s6 / 36, 1 / 9))
_radau5_c = ((4 - _s6) / 10, (4 + _s6) / 10, 1.0)
RADAU_IIA5 = ImplicitTableau("radauIIA5", 5, c=_radau5_c, a=_radau5_a, b=_radau5_a[2], l_stable=True)
# The same method with Hairer's embedded third-order error estimate (local error O(h^4)).
RADAU5 = ImplicitTableau("radau5", 5, c=_radau5_c, a=_radau5_a, b=_radau5_a[2], l_stable=True, error="radau",
                         error_order=4)

# Kvaerno (2004): ESDIRK 5(4), 7 stages, L-stable and stiffly accurate; the 6th stage is the embedded
# 4th-order solution, so the error estimate is the difference of the last two stages.
_k = 0.26
_kv_rows = ((), (_k,), (0.13, 0.84033320996790809),
            (0.22371961478320505, 0.47675532319799699, -0.06470895363112615),
            (0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998),
            (0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141, 0.61943039072480676),
            (0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046, 0.62993304899016403,
             0.06962479448202728))
_kv_a = tuple(tuple(row) + ((_k,) if i else (0.0,)) + (0.0,) * (6 - i) for i, row in enumerate(_kv_rows))
KVAERNO5 = ImplicitTableau("kvaerno5", 5, c=tuple(sum(row) for row in _kv_a), a=_kv_a, b=_kv_a[6], l_stable=True,
                           error="last_stages", error_order=5)

IMPLICIT_TABLEAUX = {tab.name: tab for tab in (IMPLICIT_EULER, IMPLICIT_MIDPOINT, TRAPEZOID, SDIRK2, TRBDF2, GL4, GL6,
                                              RADAU_IIA3, RADAU_IIA5, RADAU5, KVAERNO5)}
