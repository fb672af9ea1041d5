"""Names of the files a training run keeps in its folder (read by eval and report too)."""

CONFIG_FILE = "config.yaml"
"""The run's resolved config, written into the run directory before training starts."""

METRICS_FILE = "metrics.json"
"""Written into the run directory when training ends (read by ``hdrunet-report``)."""

FAILED_FILE = "failed.txt"
"""Written into the run directory (with the error) when a started run fails."""
