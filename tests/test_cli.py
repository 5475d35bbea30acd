"""The command line's shape: one benchmark family, the old name kept, options per benchmark."""

from __future__ import annotations

import pytest

from recsys.cli import build_parser, cmd_bench, cmd_benchmark


def test_bench_quality_and_benchmark_are_one_command():
    args = ["--format", "synthetic", "--path", "users=50", "--protocol", "temporal", "--set", "dropout=0.2"]
    new = vars(build_parser().parse_args(["bench", "quality", *args]))
    old = vars(build_parser().parse_args(["benchmark", *args]))
    assert new.pop("func") is old.pop("func") is cmd_benchmark
    assert new.pop("action") == "quality" and new.pop("command") == "bench" and old.pop("command") == "benchmark"
    assert new == old and new["set"] == ["dropout=0.2"] and new["progress"] is True


def test_each_speed_benchmark_has_only_its_own_options(capsys):
    args = build_parser().parse_args(["bench", "score", "--users", "300"])
    assert args.func is cmd_bench and (args.users, args.items, args.device) == (300, 20_000, "cpu")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "publish", "--users", "300"])  # publish has no users
    assert "unrecognized arguments: --users" in capsys.readouterr().err
