"""recsys/importers: hand-written fixtures in each format -> the raw lake layout.

Every fixture and every expected row is written by hand here; none is produced by the code
under test. The last test runs validation and features (real Spark) on an import.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recsys.cli import main as cli_main
from recsys.config import load_settings
from recsys.errors import InputError
from recsys.importers import FORMATS, import_dataset
from recsys.schema import EVENTS_SCHEMA, ITEMS_SCHEMA

UTC = dt.timezone.utc
# 2018-09-22 00:00 UTC; the fixtures' days are D0, D0 + 1 day, D0 + 2 days.
D0 = 1537574400
H = 3600
DAY = 86400


# Names the quarantine file of an import, so a test can spell out its path.
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def too_bad(file: Path, lake_root: Path, fmt: str, share: str, reasons: str, first: str) -> str:
    """The InputError of an import whose `file` has too many bad rows; share e.g. "1 of 3 rows bad (33.3%"."""
    where = lake_root / "quarantine" / "import" / f"{fmt}-20260102T030405Z.csv"
    return f"{file}: {share} > max_bad_row_share 5%; {reasons}); {first} (all bad rows: {where})"


def quarantine_rows(lake_root: Path, fmt: str) -> list[list[str]]:
    with open(lake_root / "quarantine" / "import" / f"{fmt}-20260102T030405Z.csv", newline="") as f:
        return list(csv.reader(f))


def at(unix_s: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix_s, UTC)


def write(folder: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


def partitions(root: Path, kind: str) -> dict[str, list[dict]]:
    """date -> rows of raw/<kind>/date=<date>/part-0.parquet (the only file of each folder)."""
    out = {}
    for folder in sorted((root / "raw" / kind).iterdir()):
        assert [f.name for f in folder.iterdir()] == ["part-0.parquet"], folder
        table = pq.read_table(folder / "part-0.parquet")
        assert table.schema.equals(EVENTS_SCHEMA if kind == "events" else ITEMS_SCHEMA)
        out[folder.name.removeprefix("date=")] = table.to_pylist()
    return out


def event_rows(root: Path) -> list[tuple]:
    return [
        (r["user_id"], r["item_id"], r["event_type"], r["ts"], r["rating"])
        for rows in partitions(root, "events").values()
        for r in rows
    ]


def item_rows(root: Path) -> dict[str, tuple]:
    """item_id -> (partition date, title, description, category, price, created_at, available)."""
    return {
        r["item_id"]: (day, r["title"], r["description"], r["category"], r["price"], r["created_at"], r["available"])
        for day, rows in partitions(root, "items").items()
        for r in rows
    }


# --- MovieLens -------------------------------------------------------------------------------

ML_LATEST_RATINGS = f"""userId,movieId,rating,timestamp
1,10,4.0,{D0 + H}
2,20,2.0,{D0 + H + 60}
1,20,3.5,{D0 + DAY + 2 * H}
2,10,4.5,{D0 + DAY + 2 * H + 60}
1,30,5.0,{D0 + 2 * DAY + H}
2,40,1.0,{D0 + 2 * DAY + H + 60}
2,30,3.0,{D0 + 2 * DAY + 2 * H}
3,10,5.0,{D0 + 2 * DAY + H}
"""
ML_LATEST_MOVIES = """movieId,title,genres
10,"American President, The (1995)",Comedy|Drama|Romance
20,Heat (1995),Action|Crime|Thriller
30,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
40,Unrated Movie (2000),(no genres listed)
50,Never Rated (2001),Drama
"""


@pytest.fixture
def ml_latest(tmp_path) -> Path:
    folder = tmp_path / "ml-latest-small"
    write(folder, "ratings.csv", ML_LATEST_RATINGS)
    write(folder, "movies.csv", ML_LATEST_MOVIES)
    write(folder, "tags.csv", "userId,movieId,tag,timestamp\n")  # present in the real folder, ignored
    return folder


def test_movielens_latest_writes_the_raw_layout(ml_latest, lake_root):
    summary = import_dataset("movielens", ml_latest, lake_root)

    assert {k: summary[k] for k in ("format", "variant", "events", "users", "items", "days", "start_date", "end_date")} == {
        "format": "movielens", "variant": "latest", "events": 8, "users": 3, "items": 5, "days": 3,
        "start_date": "2018-09-22", "end_date": "2018-09-24",
    }
    assert partitions(lake_root, "events").keys() == {"2018-09-22", "2018-09-23", "2018-09-24"}
    # Each day's rows sorted by ts, then user.
    assert event_rows(lake_root) == [
        ("1", "10", "rating", at(D0 + H), 4.0),
        ("2", "20", "rating", at(D0 + H + 60), 2.0),
        ("1", "20", "rating", at(D0 + DAY + 2 * H), 3.5),
        ("2", "10", "rating", at(D0 + DAY + 2 * H + 60), 4.5),
        ("1", "30", "rating", at(D0 + 2 * DAY + H), 5.0),
        ("3", "10", "rating", at(D0 + 2 * DAY + H), 5.0),
        ("2", "40", "rating", at(D0 + 2 * DAY + H + 60), 1.0),
        ("2", "30", "rating", at(D0 + 2 * DAY + 2 * H), 3.0),
    ]
    day0, day2 = at(D0), at(D0 + 2 * DAY)
    # Items in the partition of their first rating (never rated: the first day), created that midnight.
    assert item_rows(lake_root) == {
        "10": ("2018-09-22", "American President, The (1995)", "Genres: Comedy, Drama, Romance", "Comedy", None, day0, True),
        "20": ("2018-09-22", "Heat (1995)", "Genres: Action, Crime, Thriller", "Action", None, day0, True),
        "50": ("2018-09-22", "Never Rated (2001)", "Genres: Drama", "Drama", None, day0, True),
        "30": (
            "2018-09-24", "Toy Story (1995)", "Genres: Adventure, Animation, Children, Comedy, Fantasy", "Adventure",
            None, day2, True,
        ),
        "40": ("2018-09-24", "Unrated Movie (2000)", None, None, None, day2, True),
    }


def test_movielens_1m_dat_files_latin1(tmp_path, lake_root):
    folder = tmp_path / "ml-1m"
    write(folder, "ratings.dat", f"1::1193::5::{D0 + 10}\n1::661::3::{D0 + DAY}\n2::1193::4::{D0 + 20}\n")
    write(folder, "movies.dat", "1193::Caf\u00e9 (1975)::Drama\n661::James and the Giant Peach (1996)::Animation|Children's|Musical\n", "latin-1")
    write(folder, "users.dat", "1::F::1::10::48067\n")

    summary = import_dataset("movielens", folder, lake_root)

    assert (summary["variant"], summary["events"], summary["start_date"], summary["end_date"]) == ("1m", 3, "2018-09-22", "2018-09-23")
    assert event_rows(lake_root) == [
        ("1", "1193", "rating", at(D0 + 10), 5.0),
        ("2", "1193", "rating", at(D0 + 20), 4.0),
        ("1", "661", "rating", at(D0 + DAY), 3.0),
    ]
    items = item_rows(lake_root)
    assert items["1193"][:4] == ("2018-09-22", "Caf\u00e9 (1975)", "Genres: Drama", "Drama")
    assert items["661"][:4] == (
        "2018-09-23", "James and the Giant Peach (1996)", "Genres: Animation, Children's, Musical", "Animation",
    )


def test_movielens_100k_u_data_and_u_item(tmp_path, lake_root):
    folder = tmp_path / "ml-100k"
    write(folder, "u.data", f"196\t242\t3\t{D0 + 5}\n186\t302\t3\t{D0 + 6}\n")
    flags_242 = ["0"] * 19
    flags_242[5] = "1"  # Comedy
    flags_302 = ["0"] * 19
    flags_302[6], flags_302[16] = "1", "1"  # Crime, Thriller
    write(
        folder,
        "u.item",
        f"242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|{'|'.join(flags_242)}\n"
        f"302|L.A. Confidential (1997)|01-Jan-1997||http://us.imdb.com/x|{'|'.join(flags_302)}\n",
        "latin-1",
    )

    summary = import_dataset("movielens", folder, lake_root)

    assert (summary["variant"], summary["events"], summary["items"]) == ("100k", 2, 2)
    assert event_rows(lake_root) == [("196", "242", "rating", at(D0 + 5), 3.0), ("186", "302", "rating", at(D0 + 6), 3.0)]
    items = item_rows(lake_root)
    assert items["242"][1:4] == ("Kolya (1996)", "Genres: Comedy", "Comedy")
    assert items["302"][1:4] == ("L.A. Confidential (1997)", "Genres: Crime, Thriller", "Crime")


@pytest.mark.parametrize(
    "bad_line, code, reason",
    [
        (f"2,20,abc,{D0}", "not_a_number", "line 3: rating 'abc' is not a number"),
        ("2,20,4.0", "field_count", "line 3: 3 fields where 4 were expected (userId,movieId,rating,timestamp)"),
        ("2,20,4.0,yesterday", "not_a_number", "line 3: timestamp 'yesterday' is not an integer"),
        (f",20,4.0,{D0}", "empty_field", "line 3: empty user id"),
    ],
)
def test_movielens_too_many_bad_rows_names_file_line_and_reason(tmp_path, lake_root, bad_line, code, reason):
    folder = tmp_path / "ml"
    write(folder, "ratings.csv", f"userId,movieId,rating,timestamp\n1,10,4.0,{D0}\n{bad_line}\n1,20,3.0,{D0}\n")
    write(folder, "movies.csv", ML_LATEST_MOVIES)
    with pytest.raises(InputError) as err:
        import_dataset("movielens", folder, lake_root, now=NOW)
    file = folder / "ratings.csv"
    assert str(err.value) == too_bad(file, lake_root, "movielens", "1 of 3 rows bad (33.3%", f"{code}: 1", reason)
    assert not (lake_root / "raw").exists()
    assert quarantine_rows(lake_root, "movielens") == [
        ["file", "line", "reason", "detail", "raw"], [str(file), "3", code, reason.removeprefix("line 3: "), bad_line],
    ]


def test_movielens_a_nan_among_many_ratings_is_quarantined_not_fatal(tmp_path, lake_root):
    folder = tmp_path / "ml"
    good = "".join(f"{u},10,4.0,{D0 + u}\n" for u in range(1, 21))
    write(folder, "ratings.csv", f"userId,movieId,rating,timestamp\n{good}99,20,nan,{D0}\n")
    write(folder, "movies.csv", ML_LATEST_MOVIES)

    summary = import_dataset("movielens", folder, lake_root, max_bad_row_share=0.05, now=NOW)

    assert (summary["events"], summary["rows_quarantined"], summary["quarantine_reasons"]) == (20, 1, {"not_a_number": 1})
    assert summary["quarantine_path"] == str(lake_root / "quarantine" / "import" / "movielens-20260102T030405Z.csv")
    assert quarantine_rows(lake_root, "movielens")[1:] == [
        [str(folder / "ratings.csv"), "22", "not_a_number", "rating 'nan' is not a finite number", f"99,20,nan,{D0}"],
    ]


def test_movielens_missing_files_and_unknown_format(tmp_path, lake_root):
    folder = tmp_path / "ml"
    write(folder, "ratings.csv", f"userId,movieId,rating,timestamp\n1,10,4.0,{D0}\n")
    with pytest.raises(InputError, match=r"movies\.csv: missing \(expected MovieLens movies"):
        import_dataset("movielens", folder, lake_root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no MovieLens ratings file \(expected u\.data for 100K"):
        import_dataset("movielens", tmp_path / "empty", lake_root)
    with pytest.raises(InputError, match=r"nowhere: no such file or folder"):
        import_dataset("movielens", tmp_path / "nowhere", lake_root)
    with pytest.raises(InputError, match=r"unknown dataset format 'netflix'; expected one of movielens, retailrocket"):
        import_dataset("netflix", folder, lake_root)
    write(folder, "movies.csv", "movieId,name\n")
    with pytest.raises(InputError, match=r"movies\.csv, line 1: header 'movieId,name' lacks title, genres"):
        import_dataset("movielens", folder, lake_root)


# --- RetailRocket ----------------------------------------------------------------------------


def retailrocket(folder: Path, events: str | None = None) -> Path:
    ms = 1000
    write(
        folder,
        "events.csv",
        events
        or (
            "timestamp,visitorid,event,itemid,transactionid\n"
            f"{(D0 + H) * ms},7,view,100,\n"
            f"{(D0 + H + 60) * ms},7,addtocart,100,\n"
            f"{(D0 + H + 120) * ms},7,transaction,100,55\n"
            f"{(D0 + DAY) * ms},8,view,200,\n"
        ),
    )
    write(
        folder,
        "item_properties_part1.csv",
        "timestamp,itemid,property,value\n"
        f"{(D0 - 9 * DAY) * ms},100,categoryid,5\n"
        f"{(D0 - DAY) * ms},100,categoryid,6\n"
        f"{(D0 - 9 * DAY) * ms},100,available,1\n"
        f"{(D0 + H) * ms},100,available,0\n"
        f"{(D0 - 9 * DAY) * ms},200,790,n1200.000\n",
    )
    write(
        folder,
        "item_properties_part2.csv",
        "timestamp,itemid,property,value\n"
        f"{(D0 - 9 * DAY) * ms},300,categoryid,5\n"
        f"{(D0 - 9 * DAY) * ms},200,888,1116 n4.000 424566\n",
    )
    write(folder, "category_tree.csv", "categoryid,parentid\n6,5\n5,\n")
    return folder


def test_retailrocket_events_properties_and_category_tree(tmp_path, lake_root):
    summary = import_dataset("retailrocket", retailrocket(tmp_path / "rr"), lake_root)

    assert (summary["events"], summary["users"], summary["items"], summary["start_date"], summary["end_date"]) == (
        4, 2, 3, "2018-09-22", "2018-09-23",
    )
    assert summary["event_types"] == {"view": 2, "cart": 1, "purchase": 1}
    assert event_rows(lake_root) == [
        ("7", "100", "view", at(D0 + H), None),
        ("7", "100", "cart", at(D0 + H + 60), None),
        ("7", "100", "purchase", at(D0 + H + 120), None),
        ("8", "200", "view", at(D0 + DAY), None),
    ]
    # The latest categoryid (6) and availability (0) win; item 300 is only in the properties.
    assert item_rows(lake_root) == {
        "100": ("2018-09-22", "category 5 > 6", None, "6", None, at(D0), False),
        "300": ("2018-09-22", "category 5", None, "5", None, at(D0), True),
        "200": ("2018-09-23", "item 200", None, None, None, at(D0 + DAY), True),
    }


def test_retailrocket_unknown_event_names_the_line(tmp_path, lake_root):
    folder = retailrocket(
        tmp_path / "rr",
        f"timestamp,visitorid,event,itemid,transactionid\n{D0}000,7,view,100,\n{D0}000,7,click,100,\n",
    )
    with pytest.raises(InputError) as err:
        import_dataset("retailrocket", folder, lake_root, now=NOW)
    assert str(err.value) == too_bad(
        folder / "events.csv", lake_root, "retailrocket", "1 of 2 rows bad (50%", "unknown_event: 1",
        "line 3: event 'click' is not one of view, addtocart, transaction",
    )


def test_retailrocket_without_events_file(tmp_path, lake_root):
    (tmp_path / "rr").mkdir()
    with pytest.raises(InputError, match=r"rr/events\.csv: missing \(expected RetailRocket events: timestamp,visitorid"):
        import_dataset("retailrocket", tmp_path / "rr", lake_root)


# --- Amazon sequences ------------------------------------------------------------------------


def ordered_by_ts(root: Path) -> dict[str, list[str]]:
    """user -> items ordered by ts (what the leave-one-out split orders by)."""
    rows = sorted((r[3], r[0], r[1]) for r in event_rows(root))
    out: dict[str, list[str]] = {}
    for _, user, item in rows:
        out.setdefault(user, []).append(item)
    return out


def test_amazon_seq_keeps_each_users_order(tmp_path, lake_root):
    folder = tmp_path / "amazon-toys"
    write(folder, "Toys_and_Games.txt", "u1 a b c b\nu2 c a\nu3 b\n")
    write(folder, "SOURCE_REPO_LICENSE.txt", "BSD 3-Clause License\n")

    summary = import_dataset("amazon-seq", folder, lake_root)

    assert (summary["events"], summary["users"], summary["items"], summary["timestamps"]) == (7, 3, 3, "synthetic")
    assert ordered_by_ts(lake_root) == {"u1": ["a", "b", "c", "b"], "u2": ["c", "a"], "u3": ["b"]}
    rows = event_rows(lake_root)
    assert {r[2] for r in rows} == {"purchase"} and {r[4] for r in rows} == {None}
    # Strictly increasing within each user, so no tie can reorder a sequence.
    for user in ("u1", "u2"):
        ts = [r[3] for r in sorted(rows, key=lambda r: r[3]) if r[0] == user]
        assert all(a < b for a, b in zip(ts, ts[1:]))
    assert all(dt.datetime(2017, 10, 1, tzinfo=UTC) <= r[3] <= dt.datetime(2018, 9, 30, 23, 59, 59, tzinfo=UTC) for r in rows)
    items = item_rows(lake_root)
    assert {i: (v[1], v[2], v[3]) for i, v in items.items()} == {
        "a": ("item a", None, None), "b": ("item b", None, None), "c": ("item c", None, None),
    }


def test_amazon_seq_malformed_lines(tmp_path, lake_root):
    path = write(tmp_path, "seq.txt", "u1 a b\nu2\n")
    with pytest.raises(InputError) as err:
        import_dataset("amazon-seq", path, lake_root, now=NOW)
    assert str(err.value) == too_bad(
        path, lake_root, "amazon-seq", "1 of 2 rows bad (50%", "no_items: 1",
        "line 2: a user id and at least one item id expected (`user item item ...`)",
    )
    path = write(tmp_path, "seq.txt", "u1 a b\n\nu1 c\n")
    with pytest.raises(InputError) as err:
        import_dataset("amazon-seq", path, lake_root, now=NOW)
    assert str(err.value) == too_bad(
        path, lake_root, "amazon-seq", "1 of 2 rows bad (50%", "duplicate_user: 1", "line 3: user 'u1' already has a line (line 1)"
    )
    write(tmp_path, "other.txt", "u9 z\n")
    with pytest.raises(InputError, match=r"expected exactly one \.txt sequence file .* found other\.txt, seq\.txt"):
        import_dataset("amazon-seq", tmp_path, lake_root)


# --- UniSRec atomic files --------------------------------------------------------------------

INTER_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def unisrec(folder: Path) -> Path:
    # Full sequences (as indices): user 0: 0 1 2 3 1; user 1: 3 0 1 2. Train lines newest first.
    write(folder, "Mini.train.inter", INTER_HEADER + "0\t0 1\t2\n0\t0\t1\n1\t3\t0\n")
    write(folder, "Mini.valid.inter", INTER_HEADER + "0\t0 1 2\t3\n1\t3 0\t1\n")
    write(folder, "Mini.test.inter", INTER_HEADER + "0\t0 1 2 3\t1\n1\t3 0 1\t2\n")
    write(folder, "Mini.item2index", "PEN\t0\nINK\t1\nPAD\t2\nCLIP\t3\nERASER\t4\n")
    write(folder, "Mini.user2index", "ALICE\t0\nBOB\t1\n")
    write(
        folder,
        "Mini.text",
        "item_id:token\ttext:token_seq\n"
        "PEN\tRed  pen, 10 pack. Office Products Pens. Acme. \n"
        "INK\tBlue ink. \n"
        "PAD\t\n"
        "ERASER\tSoft eraser. \n",
    )
    return folder


def test_unisrec_rebuilds_full_sequences_with_original_ids_and_text(tmp_path, lake_root):
    summary = import_dataset("unisrec", unisrec(tmp_path / "sci"), lake_root)

    assert (summary["dataset"], summary["events"], summary["users"], summary["items"]) == ("Mini", 9, 2, 5)
    assert summary["items_without_text"] == 2
    assert ordered_by_ts(lake_root) == {
        "ALICE": ["PEN", "INK", "PAD", "CLIP", "INK"],
        "BOB": ["CLIP", "PEN", "INK", "PAD"],
    }
    items = item_rows(lake_root)
    assert {i: v[1] for i, v in items.items()} == {
        "PEN": "Red pen, 10 pack. Office Products Pens. Acme.",
        "INK": "Blue ink.",
        "PAD": "item PAD",
        "CLIP": "item CLIP",
        "ERASER": "Soft eraser.",
    }


def test_unisrec_truncated_histories_are_chained(tmp_path, lake_root):
    # Sequence x y z w v u with histories cut to their last 2 items.
    folder = tmp_path / "cut"
    write(folder, "Cut.train.inter", INTER_HEADER + "0\ty z\tw\n0\tx y\tz\n0\tx\ty\n")
    write(folder, "Cut.valid.inter", INTER_HEADER + "0\tz w\tv\n")
    write(folder, "Cut.test.inter", INTER_HEADER + "0\tw v\tu\n")
    write(folder, "Cut.text", "item_id:token\ttext:token_seq\nx\tthe x\n")

    import_dataset("unisrec", folder, lake_root)

    assert ordered_by_ts(lake_root) == {"0": ["x", "y", "z", "w", "v", "u"]}


def test_unisrec_single_inter_file_with_timestamps(tmp_path, lake_root):
    folder = tmp_path / "plain"
    write(
        folder,
        "Plain.inter",
        f"user_id:token\titem_id:token\trating:float\ttimestamp:float\nu1\ti2\t5\t{D0 + DAY}.0\nu1\ti1\t4\t{D0}.5\n",
    )
    write(folder, "Plain.text", "item_id:token\ttext:token_seq\ni1\tOne\ni2\tTwo\n")

    summary = import_dataset("unisrec", folder, lake_root)

    assert summary["timestamps"] == "from the file"
    assert event_rows(lake_root) == [
        ("u1", "i1", "purchase", at(D0) + dt.timedelta(seconds=0.5), None),
        ("u1", "i2", "purchase", at(D0 + DAY), None),
    ]


def test_unisrec_errors(tmp_path, lake_root):
    folder = unisrec(tmp_path / "sci")
    (folder / "Mini.text").unlink()
    with pytest.raises(InputError, match=r"Mini\.text: missing \(expected item text"):
        import_dataset("unisrec", folder, lake_root)
    folder = unisrec(tmp_path / "sci2")
    write(folder, "Mini.valid.inter", INTER_HEADER + "0\t0 1 2\t3\n1\t\t1\n")
    with pytest.raises(InputError) as err:
        import_dataset("unisrec", folder, lake_root, now=NOW)
    assert str(err.value) == too_bad(
        folder / "Mini.valid.inter", lake_root, "unisrec", "1 of 2 rows bad (50%", "empty_field: 1",
        "line 3: empty user_id, item_id_list or item_id",
    )
    (tmp_path / "none").mkdir()
    with pytest.raises(InputError, match=r"none: expected one dataset's <name>\.train\.inter"):
        import_dataset("unisrec", tmp_path / "none", lake_root)


# --- CLI and the pipeline on an import -------------------------------------------------------


def test_cli_import_prints_one_json_line(ml_latest, lake_root, capsys):
    assert cli_main(["--lake-root", str(lake_root), "import", "--format", "movielens", "--path", str(ml_latest)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    summary = json.loads(out[0])
    assert (summary["events"], summary["end_date"]) == (8, "2018-09-24")
    assert (lake_root / "raw" / "events" / "date=2018-09-24" / "part-0.parquet").is_file()
    assert cli_main(["--lake-root", str(lake_root), "import", "--format", "nope", "--path", str(ml_latest)]) == 1
    assert "unknown dataset format 'nope'" in capsys.readouterr().err
    assert set(FORMATS) == {"movielens", "retailrocket", "amazon-seq", "unisrec", "events"}


def test_pipeline_runs_unchanged_on_a_movielens_import(spark, ml_latest, lake_root):
    from recsys.pipeline import stages

    summary = import_dataset("movielens", ml_latest, lake_root)
    ds = dt.date.fromisoformat(summary["end_date"])
    settings = load_settings(lake_root=lake_root, history_days=3, max_volume_drop=1.0, spark_master="local[2]")

    report = stages.validate(ds, settings)
    manifest = stages.features(ds, settings, split_mode="loo")

    assert (report.status, report.rows_clean, report.rows_quarantined) == ("ok", 8, 0)
    assert [d.isoformat() for d in report.days_validated] == ["2018-09-22", "2018-09-23", "2018-09-24"]
    assert manifest.outputs["items"].rows == 5
    events = pq.read_table(lake_root / "features" / f"ds={ds}" / "events").to_pylist()
    split = {(r["user_id"], r["item_id"]): r["split"] for r in events}
    # Last rating per user is test, the one before valid; user 3 (one rating) trains only.
    assert split == {
        ("1", "10"): "train", ("1", "20"): "valid", ("1", "30"): "test",
        ("2", "20"): "train", ("2", "10"): "train", ("2", "40"): "valid", ("2", "30"): "test",
        ("3", "10"): "train",
    }
    seqs = {r["user_id"]: r["n_events"] for r in pq.read_table(lake_root / "features" / f"ds={ds}" / "sequences").to_pylist()}
    assert seqs == {"1": 3, "2": 4, "3": 1}
