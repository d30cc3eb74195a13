"""Butcher tableaux as data. One generic stepper (``runge_kutta.py``) runs them all.

Each tableau lists the nodes ``c``, the lower-triangular stage matrix ``a``, the solution
weights ``b`` and, for adaptive methods, the error weights ``b_err`` (``b`` minus the
embedded lower-order weights). Dense output comes from ``dense(theta)``, the weights
``b_i(theta)`` with ``y(t0 + theta h) = y0 + h sum_i b_i(theta) k_i`` (DOP853's needs three
extra stages); methods without one are interpolated by a cubic Hermite polynomial from the
step's end points and slopes.

Coefficients are those published by the methods' authors: Dormand and Prince (1980) with
Hairer's dense output, Bogacki and Shampine (1989), Tsitouras (2011), and DOP853 (Hairer,
Norsett and Wanner, "Solving ODEs I").
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as F
from typing import Callable, Sequence

from numpy.polynomial import Polynomial


@dataclass(frozen=True)
class ButcherTableau:
    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]  # a[i] holds the i coefficients of stage i on stages 0..i-1
    b: tuple[float, ...]
    b_err: tuple[float, ...] | None = None  # None: fixed-step method
    # DOP853 blends two embedded estimates (orders 3 and 5); this is the order-3 one.
    b_err_low: tuple[float, ...] | None = None
    error_order: int = 0  # exponent of the step-size controller: 1/(error_order)
    fsal: bool = False  # the last stage is f(t + h, y1): it is the next step's first stage
    dense: Callable[[float], Sequence[float]] | None = None
    # Extra stages that only the dense output needs, as (c, a-row) over the step's stages
    # followed by f(t + h, y1); computed once per step that has an output inside it.
    dense_stages: tuple[tuple[float, tuple[float, ...]], ...] = ()

    @property
    def adaptive(self) -> bool:
        return self.b_err is not None

    @property
    def num_stages(self) -> int:
        return len(self.c)

    @property
    def last_stage_at_y1(self) -> bool:
        """Whether the last stage's input is y1 itself (the FSAL tableaux: last row of a = b)."""
        return self.b[-1] == 0 and tuple(self.a[-1]) == tuple(self.b[:-1]) and self.c[-1] == 1


def dense_coefficients(tab: "ButcherTableau") -> tuple[tuple[float, ...], ...]:
    """The dense output's weights as a (degree + 1, stages) matrix, ``b_i(theta) = sum_k C[k][i]
    theta^k``: ``dense`` run once on the polynomial theta, so that many output times are one product."""
    weights = [w if isinstance(w, Polynomial) else Polynomial([w]) for w in tab.dense(Polynomial([0.0, 1.0]))]
    degree = max(len(w.coef) for w in weights) - 1
    return tuple(tuple(float(w.coef[k]) if k < len(w.coef) else 0.0 for w in weights) for k in range(degree + 1))


def _floats(xs) -> tuple[float, ...]:
    return tuple(float(x) for x in xs)


def _rows(rows) -> tuple[tuple[float, ...], ...]:
    return tuple(_floats(r) for r in rows)


EULER = ButcherTableau("euler", 1, c=(0.0,), a=((),), b=(1.0,))
MIDPOINT = ButcherTableau("midpoint", 2, c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))
HEUN2 = ButcherTableau("heun2", 2, c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5))
HEUN3 = ButcherTableau("heun3", 3, c=_floats([0, F(1, 3), F(2, 3)]), a=_rows([[], [F(1, 3)], [0, F(2, 3)]]),
                       b=_floats([F(1, 4), 0, F(3, 4)]))
# Heun 2(1): Heun's solution, Euler's as the embedded estimate.
ADAPTIVE_HEUN = ButcherTableau("adaptive_heun", 2, c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5),
                               b_err=(-0.5, 0.5), error_order=2)
# Fehlberg's RKF 2(1) (NASA TR R-315, 1969): the third stage is the first-order solution's slope.
_fehlberg2_b = [F(1, 512), F(255, 256), F(1, 512)]
_fehlberg2_bhat = [F(1, 256), F(255, 256), F(0)]
FEHLBERG2 = ButcherTableau(
    "fehlberg2", 2, c=_floats([0, F(1, 2), 1]), a=_rows([[], [F(1, 2)], [F(1, 256), F(255, 256)]]),
    b=_floats(_fehlberg2_b), b_err=_floats(x - y for x, y in zip(_fehlberg2_b, _fehlberg2_bhat)), error_order=2,
)
RK4 = ButcherTableau(
    "rk4",
    4,
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=_floats([F(1, 6), F(1, 3), F(1, 3), F(1, 6)]),
)

_bosh3_b = [F(2, 9), F(1, 3), F(4, 9), F(0)]
_bosh3_bhat = [F(7, 24), F(1, 4), F(1, 3), F(1, 8)]
BOSH3 = ButcherTableau(
    "bosh3",
    3,
    c=_floats([0, F(1, 2), F(3, 4), 1]),
    a=_rows([[], [F(1, 2)], [0, F(3, 4)], _bosh3_b[:3]]),
    b=_floats(_bosh3_b),
    b_err=_floats(x - y for x, y in zip(_bosh3_b, _bosh3_bhat)),
    error_order=3,
    fsal=True,
)

_dopri5_b = [F(35, 384), F(0), F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), F(0)]
# The embedded 4th-order solution is Shampine's (1986), as torchdiffeq's dopri5, so that a solve
# takes torchdiffeq's steps. Hairer's dopri5.f and scipy's RK45 use Dormand and Prince's own,
# [5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40]. Both are order 4, and
# b - bhat here is exactly 2/3 of theirs: the same estimate, scaled by 2/3, so a solve at tolerance
# tol takes the steps theirs takes at 1.5 tol (the MNIST ODE block's adjoint at 1e-3, batch 32,
# float64: 206 backward evaluations against 260).
_dopri5_bhat = [F(1951, 21600), F(0), F(22642, 50085), F(451, 720), F(-12231, 42400), F(649, 6300), F(1, 60)]
# Hairer's continuous extension of order 4 (the "d" coefficients of dopri5.f).
_dopri5_d = _floats([
    F(-12715105075, 11282082432), 0, F(87487479700, 32700410799), F(-10690763975, 1880347072),
    F(701980252875, 199316789632), F(-1453857185, 822651844), F(69997945, 29380423),
])


_dopri5_b_floats = _floats(_dopri5_b)  # the interpolant runs at every output time: no Fractions there


def _dopri5_dense(theta: float) -> list[float]:
    # y(theta) = y0 + theta*(dy + (1-theta)*(h k1 - dy + theta*(2 dy - h k1 - h k7 + (1-theta) h d.k)))
    # with dy = h b.k, written out as weights on k.
    s = 1.0 - theta
    w = []
    for i, (b, d) in enumerate(zip(_dopri5_b_floats, _dopri5_d)):
        e1 = 1.0 if i == 0 else 0.0
        e7 = 1.0 if i == 6 else 0.0
        w.append(theta * (b + s * (e1 - b + theta * (2 * b - e1 - e7 + s * d))))
    return w


DOPRI5 = ButcherTableau(
    "dopri5",
    5,
    c=_floats([0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1]),
    a=_rows([
        [],
        [F(1, 5)],
        [F(3, 40), F(9, 40)],
        [F(44, 45), F(-56, 15), F(32, 9)],
        [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
        [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
        _dopri5_b[:6],
    ]),
    b=_floats(_dopri5_b),
    b_err=_floats(x - y for x, y in zip(_dopri5_b, _dopri5_bhat)),
    error_order=5,
    fsal=True,
    dense=_dopri5_dense,
)

_tsit5_b = (
    0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
    -3.290069515436081, 2.324710524099774, 0.0,
)


def _tsit5_dense(t: float) -> list[float]:
    # Tsitouras (2011), the interpolant's weights in factored form.
    return [
        -1.0530884977290216 * t * (t - 1.3299890189751412) * (t * t - 1.4364028541716351 * t + 0.7139816917074209),
        0.1017 * t * t * (t * t - 2.1966568338249754 * t + 1.2949852507374631),
        2.490627285651252793 * t * t * (t * t - 2.38535645472061657 * t + 1.57803468208092486),
        -16.54810288924490272 * (t - 1.21712927295533244) * (t - 0.61620406037800089) * t * t,
        47.37952196281928122 * (t - 1.203071208372362603) * (t - 0.658047292653547382) * t * t,
        -34.87065786149660974 * (t - 1.2) * (t - 0.666666666666666667) * t * t,
        2.5 * (t - 1.0) * (t - 0.6) * t * t,
    ]


TSIT5 = ButcherTableau(
    "tsit5",
    5,
    c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    a=(
        (),
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.897153057105493, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383),
        _tsit5_b[:6],
    ),
    b=_tsit5_b,
    b_err=(
        -0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995, -0.1447110071732629,
        0.5823571654525552, -0.45808210592918697, 0.015151515151515152,
    ),
    error_order=5,
    fsal=True,
    dense=_tsit5_dense,
)

# DOP853: 12 stages; the 13th evaluation of the published method is f(t + h, y1), which this
# stepper takes as the next step's first stage.
_dop853_c = (
    0.0, 0.526001519587677318785587544488e-01, 0.789002279381515978178381316732e-01,
    0.118350341907227396726757197510, 0.281649658092772603273242802490,
    0.333333333333333333333333333333, 0.25, 0.307692307692307692307692307692,
    0.651282051282051282051282051282, 0.6, 0.857142857142857142857142857142, 1.0,
)
_dop853_a = (
    (),
    (5.26001519587677318785587544488e-2,),
    (1.97250569845378994544595329183e-2, 5.91751709536136983633785987549e-2),
    (2.95875854768068491816892993775e-2, 0.0, 8.87627564304205475450678981324e-2),
    (2.41365134159266685502369798665e-1, 0.0, -8.84549479328286085344864962717e-1,
     9.24834003261792003115737966543e-1),
    (3.7037037037037037037037037037e-2, 0.0, 0.0, 1.70828608729473871279604482173e-1,
     1.25467687566822425016691814123e-1),
    (3.7109375e-2, 0.0, 0.0, 1.70252211019544039314978060272e-1,
     6.02165389804559606850219397283e-2, -1.7578125e-2),
    (3.70920001185047927108779319836e-2, 0.0, 0.0, 1.70383925712239993810214054705e-1,
     1.07262030446373284651809199168e-1, -1.53194377486244017527936158236e-2,
     8.27378916381402288758473766002e-3),
    (6.24110958716075717114429577812e-1, 0.0, 0.0, -3.36089262944694129406857109825,
     -8.68219346841726006818189891453e-1, 2.75920996994467083049415600797e1,
     2.01540675504778934086186788979e1, -4.34898841810699588477366255144e1),
    (4.77662536438264365890433908527e-1, 0.0, 0.0, -2.48811461997166764192642586468,
     -5.90290826836842996371446475743e-1, 2.12300514481811942347288949897e1,
     1.52792336328824235832596922938e1, -3.32882109689848629194453265587e1,
     -2.03312017085086261358222928593e-2),
    (-9.3714243008598732571704021658e-1, 0.0, 0.0, 5.18637242884406370830023853209,
     1.09143734899672957818500254654, -8.14978701074692612513997267357,
     -1.85200656599969598641566180701e1, 2.27394870993505042818970056734e1,
     2.49360555267965238987089396762, -3.0467644718982195003823669022),
    (2.27331014751653820792359768449, 0.0, 0.0, -1.05344954667372501984066689879e1,
     -2.00087205822486249909675718444, -1.79589318631187989172765950534e1,
     2.79488845294199600508499808837e1, -2.85899827713502369474065508674,
     -8.87285693353062954433549289258, 1.23605671757943030647266201528e1,
     6.43392746015763530355970484046e-1),
)
_dop853_b = (
    5.42937341165687622380535766363e-2, 0.0, 0.0, 0.0, 0.0, 4.45031289275240888144113950566,
    1.89151789931450038304281599044, -5.8012039600105847814672114227,
    3.1116436695781989440891606237e-1, -1.52160949662516078556178806805e-1,
    2.01365400804030348374776537501e-1, 4.47106157277725905176885569043e-2,
)
_dop853_err3 = tuple(
    b - d for b, d in zip(_dop853_b, (0.244094488188976377952755905512, 0, 0, 0, 0, 0, 0, 0,
                                        0.733846688281611857341361741547, 0, 0,
                                        0.220588235294117647058823529412e-1))
)
_dop853_err5 = (
    0.1312004499419488073250102996e-1, 0.0, 0.0, 0.0, 0.0, -0.1225156446376204440720569753e1,
    -0.4957589496572501915214079952, 0.1664377182454986536961530415e1,
    -0.3503288487499736816886487290, 0.3341791187130174790297318841,
    0.8192320648511571246570742613e-1, -0.2235530786388629525884427845e-1,
)
# The 7th-order continuous extension: three more stages and four coefficient rows over the
# extended stages [k0..k11, f(t+h, y1), k13, k14, k15].
_dop853_dense_stages = (
    (0.1, (5.61675022830479523392909219681e-2, 0.0, 0.0, 0.0, 0.0, 0.0, 2.53500210216624811088794765333e-1,
           -2.46239037470802489917441475441e-1, -1.24191423263816360469010140626e-1,
           1.5329179827876569731206322685e-1, 8.20105229563468988491666602057e-3,
           7.56789766054569976138603589584e-3, -8.298e-3)),
    (0.2, (3.18346481635021405060768473261e-2, 0.0, 0.0, 0.0, 0.0, 2.83009096723667755288322961402e-2,
           5.35419883074385676223797384372e-2, -5.49237485713909884646569340306e-2, 0.0, 0.0,
           -1.08347328697249322858509316994e-4, 3.82571090835658412954920192323e-4,
           -3.40465008687404560802977114492e-4, 1.41312443674632500278074618366e-1)),
    (0.777777777777777777777777777778,
     (-4.28896301583791923408573538692e-1, 0.0, 0.0, 0.0, 0.0, -4.69762141536116384314449447206,
      7.68342119606259904184240953878, 4.06898981839711007970213554331, 3.56727187455281109270669543021e-1,
      0.0, 0.0, 0.0, -1.39902416515901462129418009734e-3, 2.9475147891527723389556272149,
      -9.15095847217987001081870187138)),
)
_dop853_d = (
    (-0.84289382761090128651353491142e1, 0, 0, 0, 0, 0.56671495351937776962531783590,
     -0.30689499459498916912797304727e1, 0.23846676565120698287728149680e1, 0.21170345824450282767155149946e1,
     -0.87139158377797299206789907490, 0.22404374302607882758541771650e1, 0.63157877876946881815570249290,
     -0.88990336451333310820698117400e-1, 0.18148505520854727256656404962e2, -0.91946323924783554000451984436e1,
     -0.44360363875948939664310572000e1),
    (0.10427508642579134603413151009e2, 0, 0, 0, 0, 0.24228349177525818288430175319e3,
     0.16520045171727028198505394887e3, -0.37454675472269020279518312152e3, -0.22113666853125306036270938578e2,
     0.77334326684722638389603898808e1, -0.30674084731089398182061213626e2, -0.93321305264302278729567221706e1,
     0.15697238121770843886131091075e2, -0.31139403219565177677282850411e2, -0.93529243588444783865713862664e1,
     0.35816841486394083752465898540e2),
    (0.19985053242002433820987653617e2, 0, 0, 0, 0, -0.38703730874935176555105901742e3,
     -0.18917813819516756882830838328e3, 0.52780815920542364900561016686e3, -0.11573902539959630126141871134e2,
     0.68812326946963000169666922661e1, -0.10006050966910838403183860980e1, 0.77771377980534432092869265740,
     -0.27782057523535084065932004339e1, -0.60196695231264120758267380846e2, 0.84320405506677161018159903784e2,
     0.11992291136182789328035130030e2),
    (-0.25693933462703749003312586129e2, 0, 0, 0, 0, -0.15418974869023643374053993627e3,
     -0.23152937917604549567536039109e3, 0.35763911791061412378285349910e3, 0.93405324183624310003907691704e2,
     -0.37458323136451633156875139351e2, 0.10409964950896230045147246184e3, 0.29840293426660503123344363579e2,
     -0.43533456590011143754432175058e2, 0.96324553959188282948394950600e2, -0.39177261675615439165231486172e2,
     -0.14972683625798562581422125276e3),
)


def _dopri8_dense(x: float) -> list[float]:
    # y(x) = y0 + x*(F0 + (1-x)*(F1 + x*(F2 + (1-x)*(F3 + x*(F4 + (1-x)*(F5 + x*F6)))))) with
    # F0 = dy, F1 = h k0 - dy, F2 = 2 dy - h (k0 + f1), F3..F6 = h D.k: the weights on each stage.
    y = 1.0 - x
    powers = (x * x * y * y, x**3 * y * y, x**3 * y**3, x**4 * y**3)
    weights = []
    for i in range(16):
        b = _dop853_b[i] if i < 12 else 0.0
        e0, e12 = float(i == 0), float(i == 12)
        w = x * b + x * y * (e0 - b) + x * x * y * (2 * b - e0 - e12)
        weights.append(w + sum(p * d[i] for p, d in zip(powers, _dop853_d)))
    return weights


DOPRI8 = ButcherTableau(
    "dopri8",
    8,
    c=_dop853_c,
    a=_dop853_a,
    b=_dop853_b,
    b_err=_dop853_err5,
    b_err_low=_dop853_err3,
    error_order=8,
    dense=_dopri8_dense,
    dense_stages=_dop853_dense_stages,
)

TABLEAUX: dict[str, ButcherTableau] = {
    tab.name: tab for tab in (EULER, MIDPOINT, HEUN2, HEUN3, RK4, ADAPTIVE_HEUN, FEHLBERG2, BOSH3, DOPRI5, TSIT5,
                              DOPRI8)
}
