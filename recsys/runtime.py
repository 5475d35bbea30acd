"""Process environment the real components need, set once before they start.

Kept here (not in a shell wrapper) so the CLI, Airflow tasks and tests behave alike.
"""

import os

_DEFAULTS = {
    # Spark binds its driver to loopback: no exposure, no reverse-DNS stalls on a laptop.
    "SPARK_LOCAL_IP": "127.0.0.1",
    # Models load from a package folder or a local path; never reach for a hub at run time.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYSPARK_PYTHON": "python3",
}


def configure() -> None:
    """Fill in defaults without overriding what a user exported."""
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)
    # Spark workers must run the same interpreter as the driver (the project's venv).
    import sys

    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # A progress bar is for a person at a terminal; in a task log its carriage returns are a
    # wall of text (transformers' weight loading reads this before it draws one).
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ["PYSPARK_PYTHON"] = os.environ.get("PYSPARK_PYTHON_OVERRIDE", sys.executable)
