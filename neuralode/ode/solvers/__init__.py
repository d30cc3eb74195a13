"""The solvers, one family a file, on the interface of ``base.py`` (``Solver``):

    base.py              the Solver base class: abstract steps, defaults for the optional parts
    tableaux.py          explicit Butcher tableaux as data
    runge_kutta.py       the generic explicit Runge-Kutta solver, dense output, Hermite basis
    implicit_tableaux.py implicit Runge-Kutta tableaux as data
    implicit.py          the generic implicit Runge-Kutta solver (Newton, torch.func Jacobians)
    adams.py             Adams multistep: torchdiffeq's fixed-grid ones, adaptive ``adams``
    scipy_solver.py      scipy.integrate.solve_ivp as a method
    stochastic.py        Euler-Maruyama and Milstein steps of an SDE (``sdeint``)

``neuralode.ode.methods`` names them.
"""
