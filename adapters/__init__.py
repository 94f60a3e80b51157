"""Framework adapters. This package is the only place that imports a framework.

``ADAPTERS`` maps each framework name accepted by ``--framework`` to the
module and class of its adapter; ``load_adapter`` imports it.
"""

from __future__ import annotations

import importlib
import warnings

from adapters.base import FrameworkUnavailable

ADAPTERS = {
    "mxnet": ("adapters.mxnet_adapter", "MXNetAdapter"),
    "torch": ("adapters.torch_adapter", "TorchAdapter"),
    "tensorflow": ("adapters.tensorflow_adapter", "TensorFlowAdapter"),
}


def load_adapter(name, device="cpu", dtype="float32"):
    """Import the adapter of framework ``name`` and create it.

    Raises ``ValueError`` for an unknown name and ``FrameworkUnavailable``
    when the framework or its adapter fails to import.
    """
    if name not in ADAPTERS:
        raise ValueError(f"unknown framework {name!r}: expected one of {', '.join(sorted(ADAPTERS))}")
    module_name, class_name = ADAPTERS[name]
    try:
        # MXNet 1.9 imports NumPy aliases that NumPy deprecated, with a
        # DeprecationWarning per alias at import time; they are not about the run.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = importlib.import_module(module_name)
    except ImportError as error:
        raise FrameworkUnavailable(f"framework {name!r} failed to import: {error}") from error
    return getattr(module, class_name)(device=device, dtype=dtype)
