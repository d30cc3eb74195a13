"""Named errors of the ODE core. Every message says what went wrong and what to try."""


class ODESolverError(RuntimeError):
    """Base class: something prevented the solve from finishing."""


class NonFiniteStateError(ODESolverError):
    """The state or its derivative became NaN or infinite."""


class StepSizeUnderflowError(ODESolverError):
    """The adaptive step shrank below what float64 time can resolve (or below ``min_step``)."""


class MaxStepsExceededError(ODESolverError):
    """More than ``max_num_steps`` steps were attempted before reaching the last output time."""


class InvalidTimeError(ODESolverError, ValueError):
    """``t`` is not a 1-D, finite, strictly monotone tensor."""


class StateMismatchError(ODESolverError, ValueError):
    """``func(t, y)`` returned a shape, dtype or device different from ``y``'s."""


class InvalidOptionError(ODESolverError, ValueError):
    """An unknown method, an unknown option name, or an option of the wrong value."""


class AdjointParamsError(ODESolverError, ValueError):
    """``odeint_adjoint`` could not tell which parameters to differentiate."""
