"""`recsys import --format events` and the line-level robustness every importer shares.

Every file and expected row is written by hand here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.cli import main as cli_main
from recsys.errors import InputError
from recsys.importers import import_dataset
from tests.test_importers import D0, DAY, H, NOW, at, event_rows, item_rows, quarantine_rows, too_bad, write


def ordered(root: Path) -> list[tuple]:
    return [r[:4] for r in event_rows(root)]


def test_csv_with_column_and_event_maps_and_a_catalogue(tmp_path, lake_root):
    log = write(
        tmp_path, "log.csv",
        "visitor_id,sku,event_time,type,amount\n"
        f"u1,007,{D0 + H},pv,\n"
        f"u1,007,{D0 + H + 5},addtocart,9.5\n"
        f"u2,008,{D0 + DAY},buy,3\n"
        f"u2,007,{D0 + DAY + 1},purchase,8\n",
    )  # fmt: skip
    items = write(tmp_path, "items.csv", "sku,title,brand\n007,Red pen,Acme\n008,,\n009,Pad,\n")

    summary = import_dataset(
        "events", log, lake_root, items=items, text=["title", "brand"],
        columns={"user": "visitor_id", "item": "sku", "ts": "event_time", "event": "type", "price": "amount"},
        events={"pv": "view", "addtocart": "cart", "buy": "purchase"},
    )  # fmt: skip

    assert (summary["events"], summary["users"], summary["items"], summary["rows_quarantined"]) == (4, 2, 3, 0)
    assert (summary["start_date"], summary["end_date"], summary["items_without_text"]) == ("2018-09-22", "2018-09-23", 1)
    assert ordered(lake_root) == [
        ("u1", "007", "view", at(D0 + H)),
        ("u1", "007", "cart", at(D0 + H + 5)),
        ("u2", "008", "purchase", at(D0 + DAY)),
        ("u2", "007", "purchase", at(D0 + DAY + 1)),
    ]
    # The latest price in the log wins; 008 has no text: the placeholder, no made-up text.
    assert {i: (v[1], v[4]) for i, v in item_rows(lake_root).items()} == {
        "007": ("Red pen. Acme", 8.0), "008": ("item 008", 3.0), "009": ("Pad", None),
    }


def test_parquet_and_json_lines_in_a_folder_with_mixed_zones_and_epoch_units(tmp_path, lake_root):
    folder = tmp_path / "logs"
    folder.mkdir()
    ts = pa.array([D0 * 1_000_000], pa.timestamp("us", tz="Europe/Paris"))
    pq.write_table(pa.table({"user": [1], "item": [10], "ts": ts}), folder / "a.parquet")
    write(
        folder, "b.jsonl",
        '{"user": "2", "item": "10", "ts": "2018-09-22T03:00:00+02:00"}\n'
        '{"user": "2", "item": "11", "ts": "2018-09-22T01:30:00Z"}\n'
        f'{{"user": "3", "item": "11", "ts": {(D0 + 7200) * 1000}}}\n'
        f'{{"user": "3", "item": "10", "ts": {D0 + 10800}}}\n',
    )  # fmt: skip

    summary = import_dataset("events", folder, lake_root)

    assert summary["files"] == ["a.parquet", "b.jsonl"]
    assert ordered(lake_root) == [
        ("1", "10", "view", at(D0)),
        ("2", "10", "view", at(D0 + H)),
        ("2", "11", "view", at(D0 + H + 1800)),
        ("3", "11", "view", at(D0 + 2 * H)),
        ("3", "10", "view", at(D0 + 3 * H)),
    ]


def test_missing_column_names_the_file_and_the_column(tmp_path, lake_root):
    log = write(tmp_path, "log.csv", f"user,sku,ts\nu1,1,{D0}\n")
    with pytest.raises(InputError) as err:
        import_dataset("events", log, lake_root)
    assert str(err.value) == f"{log}: no column 'item' (columns: user, sku, ts)"
    with pytest.raises(InputError) as err:
        import_dataset("events", log, lake_root, columns={"item": "sku", "event": "type"})
    assert str(err.value) == f"{log}: no column 'type' (columns: user, sku, ts)"


def test_wrong_types_are_bad_rows_or_a_clear_error(tmp_path, lake_root):
    rows = "".join(f"u{k},i{k},{D0 + k},4\n" for k in range(40))
    log = write(tmp_path, "log.csv", f"user,item,ts,rating\n{rows}u9,i9,yesterday,4\nu9,i9,{D0},five\n")

    summary = import_dataset("events", log, lake_root)

    assert summary["events"] == 40 and summary["event_types"] == {"rating": 40}
    assert summary["quarantine_reasons"] == {"bad_rating": 1, "bad_timestamp": 1}
    pq.write_table(pa.table({"user": ["u"], "item": ["i"], "ts": [True]}), tmp_path / "flags.parquet")
    with pytest.raises(InputError) as err:
        import_dataset("events", tmp_path / "flags.parquet", lake_root)
    assert str(err.value) == f"{tmp_path / 'flags.parquet'}: column 'ts' is bool; expected epoch seconds, milliseconds or ISO 8601 text"


def test_unmapped_events_and_zoneless_times_under_the_threshold_import_and_report(tmp_path, lake_root):
    rows = "".join(f"u{k},i{k},{D0 + k},pv\n" for k in range(38))
    log = write(tmp_path, "log.csv", f"user,item,ts,event\n{rows}u1,i1,{D0},wishlist\nu2,i2,2018-09-22T10:00:00,pv\n")

    summary = import_dataset("events", log, lake_root, events={"pv": "view"}, max_bad_row_share=0.05, now=NOW)

    assert (summary["events"], summary["rows_quarantined"]) == (38, 2)
    assert summary["quarantine_reasons"] == {"timestamp_without_zone": 1, "unmapped_event": 1}
    assert quarantine_rows(lake_root, "events")[1:] == [
        [str(log), "40", "unmapped_event", "event 'wishlist' is not mapped (known: cart, click, purchase, pv, rating, view)", f"u1,i1,{D0},wishlist"],
        [str(log), "41", "timestamp_without_zone", "ts '2018-09-22T10:00:00' has no time zone", "u2,i2,2018-09-22T10:00:00,pv"],
    ]  # fmt: skip


def test_over_the_threshold_fails_naming_file_and_line(tmp_path, lake_root):
    log = write(tmp_path, "log.jsonl", f'{{"user": "u", "item": "i", "ts": {D0}}}\n{{"user": "u", "item": ""}}\nnot json\n')
    with pytest.raises(InputError) as err:
        import_dataset("events", log, lake_root, now=NOW)
    assert str(err.value) == too_bad(
        log, lake_root, "events", "2 of 3 rows bad (66.7%", "bad_json: 1, empty_field: 1",
        "line 3: not a JSON object (Expecting value: line 1 column 1 (char 0)); line 2: empty item (item)",
    )
    assert not (lake_root / "raw").exists()


def test_crlf_bom_and_equal_timestamps_keep_file_order(tmp_path, lake_root):
    log = write(tmp_path, "log.csv", f"\ufeffuser,item,ts\r\nu1,b,{D0}\r\nu1,a,{D0}\r\n\r\nu1,c,{D0}\r\n")
    import_dataset("events", log, lake_root)
    assert ordered(lake_root) == [("u1", "b", "view", at(D0)), ("u1", "a", "view", at(D0)), ("u1", "c", "view", at(D0))]


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_movielens_crlf_and_bom(tmp_path, lake_root, encoding):
    folder = tmp_path / "ml"
    # A byte-order mark makes the file UTF-8 whatever the layout's usual encoding.
    write(folder, "u.data", f"\ufeff196\t242\t3\t{D0}\r\n196\t302\t4\t{D0}\r\n")
    flags = "|".join(["0"] * 19)
    write(folder, "u.item", f"\ufeff242|Caf\u00e9 (1996)|||x|{flags}\r\n302|Heat (1995)|||x|{flags}\r\n")

    summary = import_dataset("movielens", folder, lake_root)

    assert (summary["events"], summary["rows_quarantined"]) == (2, 0)
    assert ordered(lake_root) == [("196", "242", "rating", at(D0)), ("196", "302", "rating", at(D0))]
    assert {i: v[1] for i, v in item_rows(lake_root).items()} == {"242": "Caf\u00e9 (1996)", "302": "Heat (1995)"}


def test_check_reports_and_writes_nothing(tmp_path, lake_root, capsys):
    log = write(tmp_path, "log.csv", f"uid,ts\nu1,{D0}\nu2,{D0 + DAY}\n,{D0}\n")
    args = ["--lake-root", str(lake_root), "import", "--format", "events", "--path", str(log), "--map", "user=uid,item=uid"]

    assert cli_main([*args, "--check"]) == 1  # 1 of 3 rows bad is over 5%
    assert "log.csv: 1 of 3 rows bad (33.3% > max_bad_row_share 5%; empty_field: 1)" in capsys.readouterr().err
    write(tmp_path, "log.csv", f"uid,ts\nu1,{D0}\nu2,{D0 + DAY}\n")
    assert cli_main([*args, "--check"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {k: summary[k] for k in ("check", "events", "users", "items", "start_date", "end_date", "rows_quarantined")} == {
        "check": True, "events": 2, "users": 2, "items": 2, "start_date": "2018-09-22", "end_date": "2018-09-23",
        "rows_quarantined": 0,
    }
    assert not lake_root.exists() or not any(lake_root.iterdir())


def test_retailrocket_amazon_and_unisrec_read_crlf_and_bom(tmp_path, lake_root):
    rr = tmp_path / "rr"
    write(rr, "events.csv", f"\ufefftimestamp,visitorid,event,itemid,transactionid\r\n{D0}000,7,view,100,\r\n")
    assert import_dataset("retailrocket", rr, lake_root / "rr")["events"] == 1
    seq = write(tmp_path, "seq.txt", "\ufeffu1 a b\r\nu2 c\r\n")
    summary = import_dataset("amazon-seq", seq, lake_root / "seq")
    assert (summary["users"], summary["events"], summary["rows_quarantined"]) == (2, 3, 0)
    uni = tmp_path / "uni"
    write(uni, "Plain.inter", f"\ufeffuser_id:token\titem_id:token\ttimestamp:float\r\nu1\ti1\t{D0}\r\n")
    write(uni, "Plain.text", "\ufeffitem_id:token\ttext:token_seq\r\ni1\tOne pen\r\n")
    import_dataset("unisrec", uni, lake_root / "uni")
    assert ordered(lake_root / "uni") == [("u1", "i1", "purchase", at(D0))]
    assert item_rows(lake_root / "uni")["i1"][1] == "One pen"
