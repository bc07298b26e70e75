"""The errors that weights and the Hub raise, below both (``nailseg.weights`` re-exports them)."""


class WeightsError(RuntimeError):
    """Weights that cannot be found or loaded; the message says which and why."""


class HubUnreachable(WeightsError):
    """The Hub could not be contacted (offline); callers may fall back to the bundled model."""
