"""Where the heavy steps run: in this process (the default) or on a Dask cluster (:mod:`pprl.engine.dask`).

An engine gives the same results as the in-process code it replaces; only
where the work runs changes. ``pprl link --engine dask`` (with
``--scheduler ADDRESS`` for a running cluster, or a LocalCluster on this
machine without one) is the command-line way in.
"""

from __future__ import annotations

__all__ = ["ENGINES"]

#: The engines the commands accept.
ENGINES = ("local", "dask")
