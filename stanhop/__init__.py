"""stanhop: STanHop-Net forecasting with sparse and outlier-efficient Hopfield layers.

Importing the package is cheap: torch and lightning load only when a submodule needs them.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_run"]


def load_run(path):
    """Load a finished run directory (weights, config, scaler) for forecasting.

    See :func:`stanhop.runs.load_run`.
    """
    from stanhop.runs import load_run as _load_run

    return _load_run(path)
