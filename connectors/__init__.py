"""Sources, sinks and formats: MQTT, CSV replay, file sinks, Prometheus.

Some modules here import numba: ``pipeline`` is imported first, to pick the build of
the compiled kernels (``pipeline.kernels``).
"""

import pipeline  # noqa: F401
