"""Engines that run the stage kernels: in-process polars (local) or Spark (`mapInArrow`).

`nlp_assets.engines.spark` holds the Spark side; it calls the same kernel functions as the
local stages, on Arrow batches, so both engines give the same rows and values.
"""

from typing import Final

LOCAL: Final = "local"
SPARK: Final = "spark"
ENGINES = (LOCAL, SPARK)
