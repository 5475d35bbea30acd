"""The nightly pipeline: stages keyed on the run date, and a runner that chains them."""
