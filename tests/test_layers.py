"""The layers of docs/ARCHITECTURE.md, enforced: a module imports only its own layer or lower.

Every import statement counts, including those inside functions (a lazy import is still a
dependency). A module is placed by the longest prefix that names it in LAYERS.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("recsys", "spark_jobs", "dags", "plugins")

# Lowest first; keep in step with docs/ARCHITECTURE.md, "Layers".
LAYERS: tuple[tuple[str, ...], ...] = (
    # core: settings, names, errors, paths (and a lake in a bucket), devices, printing, and the
    # stage results' shapes (data only, read by the store's run log and the report as well as by the pipeline)
    ("recsys", "recsys.errors", "recsys.schema", "recsys.config", "recsys.runtime", "recsys.device",
     "recsys.tables", "recsys.lake", "recsys.objectstore", "recsys.pipeline.results"),
    # data: the log and its shapes, the ranking protocol and metrics, item text
    ("recsys.data", "recsys.importers", "recsys.text", "recsys.evaluate.protocol", "recsys.evaluate.metrics",
     "spark_jobs"),
    # models: what learns and ranks
    ("recsys.models", "recsys.scoring"),
    # services: judging, serving and storing what models produce (the Spark score job runs the serving code)
    ("recsys.evaluate", "recsys.serve", "recsys.store", "spark_jobs.score"),
    # the night: stages wired in order
    ("recsys.pipeline",),
    # entry points: commands, benchmarks, local Airflow, the DAG, the explorer and its Airflow plugin
    ("recsys.cli", "recsys.demo", "recsys.benchmark", "recsys.bench", "recsys.airflow_local", "recsys.__main__",
     "recsys.explorer", "dags", "plugins"),
)


def layer_of(module: str) -> int:
    best, level = "", None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, level = name, i
    assert level is not None, f"{module} is in no layer: add it to LAYERS and docs/ARCHITECTURE.md"
    return level


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from recsys import schema` imports recsys.schema, not the package root.
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


def violations() -> list[str]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            here = module_name(path)
            for line, target in imports(path):
                if layer_of(target) > layer_of(here):
                    out.append(f"{path.relative_to(ROOT)}:{line}: {here} (layer {layer_of(here)}) imports {target} "
                               f"(layer {layer_of(target)})")
    return out


def test_every_import_goes_to_the_same_layer_or_below():
    assert violations() == []


def test_the_check_catches_an_upward_import(tmp_path):
    # A model that reached for the store would be caught, naming the file and line.
    assert layer_of("recsys.models.mtrl.train") < layer_of("recsys.store.publish")
    assert layer_of("recsys.evaluate.protocol") < layer_of("recsys.models.base") < layer_of("recsys.evaluate.offline")
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from recsys.store import publish\n")
    assert imports(source) == [(2, "recsys.store.publish")]
