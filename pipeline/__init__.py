"""The streaming pipeline: engine, state table, runner, daemon and the command line.

Importing it picks the build of the compiled kernels numba loads (``pipeline.kernels``),
before any module imports numba.
"""

from pipeline import kernels as _kernels

_kernels.choose()
