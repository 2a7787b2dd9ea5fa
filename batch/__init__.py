"""scenario-batch: bulk Flux Kontext image edits on Scenario, from a YAML manifest."""

__version__ = "0.1.0"
