"""The one table printer: alignment by column kind, missing values, caller-formatted numbers."""

from __future__ import annotations

import math

from recsys.tables import metric_table, text_table


def test_numbers_right_text_left_missing_as_dash():
    out = text_table([["copy", "1,234", 0.5, None], ["to_sql", "12", math.nan, "slow"]], ["method", "rows", "secs", "note"])
    assert out.splitlines() == [
        "method      rows    secs  note",
        "--------  ------  ------  ------",
        "copy       1,234  0.5000  -",
        "to_sql        12       -  slow",
    ]


def test_metric_table_one_row_per_model_in_order():
    out = metric_table({"popularity": {"ndcg@10": 0.09041}, "full": {"ndcg@10": 0.104, "hr@10": 0.2}}, ["ndcg@10", "hr@10"])
    rows = [line.split() for line in out.splitlines()[2:]]
    assert rows == [["popularity", "0.0904", "-"], ["full", "0.1040", "0.2000"]]
