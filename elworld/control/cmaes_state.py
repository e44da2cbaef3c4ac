"""CMA-ES (the ``cmaes`` package) with a state that a checkpoint can hold without pickle.

``cmaes.CMA`` keeps its whole state in numpy arrays and numbers (besides its
random generator); :func:`cma_state` turns them into tensors and plain numbers
that ``torch.load(weights_only=True)`` accepts, bit for bit, and
:func:`restore_cma` rebuilds the optimizer from them. The generator is reseeded
every generation from the run's seed (:func:`ask_population`), so it need not be
saved and a resumed run samples what the uninterrupted run would have.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from elworld.checkpoint import CheckpointError

_EXTRA_HINT = "pip install 'elworld[rl]'"


def import_cmaes() -> Any:
    """Import ``cmaes``, or raise ``ImportError`` naming the extra to install."""
    try:
        import cmaes
    except ImportError as error:
        raise ImportError(
            f"`elworld train control` needs the cmaes package, which is not installed: {_EXTRA_HINT}"
        ) from error
    return cmaes


def new_cma(
    dim: int, sigma: float, population: int | None, seed: int, mean: np.ndarray | None = None
) -> Any:
    """A CMA-ES over ``dim`` parameters starting at ``mean`` (zero) with step size ``sigma``."""
    cmaes = import_cmaes()
    start = np.zeros(dim) if mean is None else np.asarray(mean, dtype=np.float64)
    if start.shape != (dim,):
        raise ValueError(f"the CMA-ES start has shape {start.shape}, expected ({dim},)")
    return cmaes.CMA(mean=start, sigma=sigma, population_size=population, seed=seed)


def ask_population(cma: Any, seed: int, generation: int) -> np.ndarray:
    """The generation's candidates ``(popsize, dim)``, drawn from a generator seeded by (seed, generation)."""
    cma.reseed_rng(int(np.random.SeedSequence([seed, generation]).generate_state(1)[0]))
    return np.stack([cma.ask() for _ in range(cma.population_size)])


def cma_state(cma: Any) -> dict[str, Any]:
    """The optimizer's state as tensors and plain numbers (``weights_only``-loadable)."""
    cmaes = import_cmaes()
    arrays, values = {}, {}
    attrs = {name: value for name, value in vars(cma).items() if name != "_rng"}
    for name, value in attrs.items():  # not __getstate__: it keeps only C's upper triangle
        if isinstance(value, np.ndarray):
            arrays[name] = torch.from_numpy(np.ascontiguousarray(value))
        elif isinstance(value, np.generic):
            values[name] = value.item()
        elif value is None or isinstance(value, bool | int | float | str):
            values[name] = value
        else:
            raise TypeError(f"cannot store CMA-ES attribute {name} of type {type(value).__name__}")
    return {"cmaes_version": cmaes.__version__, "arrays": arrays, "values": values}


def restore_cma(state: dict[str, Any], source: str) -> Any:
    """Rebuild a ``cmaes.CMA`` from :func:`cma_state` output (``CheckpointError`` if it cannot)."""
    cmaes = import_cmaes()
    try:
        attrs = {name: tensor.numpy().copy() for name, tensor in state["arrays"].items()}
        attrs.update(state["values"])
        cma = cmaes.CMA.__new__(cmaes.CMA)
        cma.__dict__.update(attrs)
        cma._rng = np.random.RandomState()  # reseeded before every ask (ask_population)
        missing = set(vars(cmaes.CMA(mean=np.zeros(2), sigma=1.0)).keys()) - set(vars(cma))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{source}: the CMA-ES state cannot be restored: {error}") from error
    if missing:
        raise CheckpointError(
            f"{source}: the CMA-ES state was saved by cmaes {state.get('cmaes_version')} and lacks "
            f"{sorted(missing)} that cmaes {cmaes.__version__} needs; install the version it was "
            "saved with or train afresh"
        )
    return cma
