"""Named errors of the ODE core. Every message says what went wrong and what to try."""


class ODESolverError(RuntimeError):
    """Base class: something prevented the solve from finishing."""


class NonFiniteStateError(ODESolverError):
    """The state or its derivative became NaN or infinite."""


class StepSizeUnderflowError(ODESolverError):
    """The adaptive step shrank below what float64 time can resolve (or below ``min_step``)."""


class MaxStepsExceededError(ODESolverError):
    """More than ``max_num_steps`` steps were attempted before reaching the last output time."""


class TimeLimitError(ODESolverError):
    """The solve ran longer than ``options['max_seconds']`` of wall-clock time."""


def time_limit_error(max_seconds: float, where: str, steps: int, method: str) -> TimeLimitError:
    return TimeLimitError(f"stopped after options['max_seconds']={max_seconds:g} s of solving, at {where} after "
                          f"{steps} accepted steps (method {method}); raise max_seconds, loosen the tolerances, or "
                          "try a method for stiff problems (radau5)")


class InvalidTimeError(ODESolverError, ValueError):
    """``t`` is not a 1-D, finite, strictly monotone tensor."""


class StateMismatchError(ODESolverError, ValueError):
    """``func(t, y)`` returned a shape, dtype or device different from ``y``'s."""


class InvalidOptionError(ODESolverError, ValueError):
    """An unknown method, an unknown option name, or an option of the wrong value."""


class AdjointParamsError(ODESolverError, ValueError):
    """``odeint_adjoint`` could not tell which parameters to differentiate."""


# The messages of a stalled adaptive solve, one wording for the host and the batched loop.
def stalled_solve_error(where: str, steps: int, h: float, method: str, nonfinite: bool) -> ODESolverError:
    """The step size fell below what time can resolve at ``where`` after ``steps`` accepted steps:
    because the state went non-finite at every size tried (``nonfinite``), or the step underflowed."""
    if nonfinite:
        return NonFiniteStateError(
            f"the state or its derivative became non-finite (NaN/inf) at {where} after {steps} accepted steps, "
            f"for every step size down to {h:.3g}; check func for values that blow up (e.g. exploding "
            "activations) or lower the learning rate")
    return StepSizeUnderflowError(
        f"step size {h:.3g} underflowed at {where} after {steps} accepted steps (method {method}); the problem "
        "may be stiff or have a singularity here: loosen rtol/atol, set options['min_step'], or shorten the "
        "time span")
