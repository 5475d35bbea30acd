"""MovieLens ratings and movies (GroupLens), any of its three layouts, detected from the files:

- 100K: `u.data` (user \\t item \\t rating \\t unix seconds) and `u.item`
  (`id|title|release|video release|IMDb URL|19 genre flags`, Latin-1; genre names from
  `u.genre` when present);
- 1M: `ratings.dat` (`UserID::MovieID::Rating::Timestamp`) and `movies.dat`
  (`MovieID::Title::Genres`, Latin-1);
- latest / 20M / 25M / 32M: `ratings.csv` (`userId,movieId,rating,timestamp`) and
  `movies.csv` (`movieId,title,genres`), UTF-8 with a header.

Every rating becomes a `rating` event carrying its value (the model maps ratings to
rewards). Item text: title = the movie title (with its year); category = the first listed
genre; description = "Genres: " + all genres, comma-separated. "(no genres listed)" leaves
both empty. A rated movie missing from the movies file gets the placeholder title
"item <id>" (recsys.schema.PLACEHOLDER_TITLE: no text). Bad lines go to the quarantine.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from recsys.errors import InputError
from recsys.importers import parse
from recsys.importers.parse import SKIP, float_value, int_value, split_fields, text_value
from recsys.importers.quarantine import BadRow, Quarantine
from recsys.importers.writer import Dataset, events_table, items_table

LATIN1 = "latin-1"
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
NO_GENRES = "(no genres listed)"
RATING_COLUMNS = [("user", pa.string()), ("item", pa.string()), ("rating", pa.float64()), ("ts", pa.int64())]


def detect(path: Path) -> str:
    """`latest`, `1m` or `100k` from the ratings file in the folder."""
    parse.require_dir(path, "a MovieLens folder")
    for name, variant in (("ratings.csv", "latest"), ("ratings.dat", "1m"), ("u.data", "100k")):
        if (path / name).is_file():
            return variant
    raise InputError(
        f"{path}: no MovieLens ratings file (expected u.data for 100K, ratings.dat for 1M, "
        "or ratings.csv for latest/20M/25M)"
    )


def load(path: Path, bad: Quarantine) -> Dataset:
    path = Path(path)
    variant = detect(path)
    if variant == "latest":
        ratings = _ratings_csv(parse.require_file(path, "ratings.csv", "MovieLens ratings"), bad)
        items = _movies_csv(parse.require_file(path, "movies.csv", "MovieLens movies: movieId,title,genres"), bad)
    elif variant == "1m":
        ratings = _ratings_dat(parse.require_file(path, "ratings.dat", "MovieLens 1M ratings"), bad)
        items = _movies_dat(parse.require_file(path, "movies.dat", "MovieLens 1M movies: MovieID::Title::Genres"), bad)
    else:
        ratings = _ratings_100k(parse.require_file(path, "u.data", "MovieLens 100K ratings"), bad)
        item_file = parse.require_file(path, "u.item", "MovieLens 100K items: id|title|...|19 genre flags")
        items = _items_100k(item_file, path, bad)
    events = events_table(
        ratings.column("user"),
        ratings.column("item"),
        "rating",
        pc.multiply(ratings.column("ts"), 1_000_000).to_numpy(),
        ratings.column("rating").to_numpy(),
    )
    return Dataset(events, items, {"variant": variant, "source": str(path)})


# --- ratings -------------------------------------------------------------------------------


def _rating_fields(parts: list[str]) -> tuple[str, str, float, int]:
    return (
        text_value(parts[0], "user id"),
        text_value(parts[1], "movie id"),
        float_value(parts[2], "rating"),
        int_value(parts[3], "timestamp"),
    )


def _ratings_csv(path: Path, bad: Quarantine) -> pa.Table:
    parse.check_header(path, ["userId", "movieId", "rating", "timestamp"], ",")
    return parse.read_delimited(
        path,
        RATING_COLUMNS,
        lambda line: _rating_fields(split_fields(line, ",", 4, "userId,movieId,rating,timestamp")),
        bad,
    )


def _ratings_dat(path: Path, bad: Quarantine) -> pa.Table:
    # `a::b::c::d` read as single-colon fields with empty fields between: fast and exact,
    # since none of the four values contains a colon.
    columns = [RATING_COLUMNS[0], (SKIP, pa.string()), RATING_COLUMNS[1], (SKIP, pa.string()),
               RATING_COLUMNS[2], (SKIP, pa.string()), RATING_COLUMNS[3]]  # fmt: skip
    return parse.read_delimited(
        path,
        columns,
        lambda line: _rating_fields(split_fields(line, "::", 4, "UserID::MovieID::Rating::Timestamp")),
        bad,
        delimiter=":",
        header=False,
        encoding=LATIN1,
    )


def _ratings_100k(path: Path, bad: Quarantine) -> pa.Table:
    return parse.read_delimited(
        path,
        RATING_COLUMNS,
        lambda line: _rating_fields(split_fields(line, "\t", 4, "user id, item id, rating, timestamp")),
        bad,
        delimiter="\t",
        header=False,
        encoding=LATIN1,
    )


# --- movies --------------------------------------------------------------------------------


def _text(genres: list[str]) -> tuple[str | None, str | None]:
    """(category, description) from a movie's genres."""
    genres = [g.strip() for g in genres if g.strip() and g.strip() != NO_GENRES]
    if not genres:
        return None, None
    return genres[0], "Genres: " + ", ".join(genres)


def _items(rows: list[tuple[str, str, list[str]]]) -> pa.Table:
    texts = [_text(g) for _, _, g in rows]
    return items_table(
        [r[0] for r in rows], [r[1] for r in rows], [t[1] for t in texts], [t[0] for t in texts]
    )


def _movies_csv(path: Path, bad: Quarantine) -> pa.Table:
    parse.check_header(path, ["movieId", "title", "genres"], ",")
    rows = []
    with open(path, encoding=parse.encoding_of(path, "utf-8"), newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        for fields in reader:
            if not fields:
                continue
            bad.count(path)
            try:
                if len(fields) != 3:
                    raise BadRow("field_count", f"{len(fields)} fields where 3 were expected (movieId,title,genres)")
                rows.append((text_value(fields[0], "movieId"), text_value(fields[1], "title"), fields[2].split("|")))
            except ValueError as err:
                bad.add(path, reader.line_num, err, ",".join(fields))
    return _items(rows)


def _movies_dat(path: Path, bad: Quarantine) -> pa.Table:
    rows = []
    for no, line in bad.lines(path, LATIN1):
        try:
            movie, title, genres = split_fields(line, "::", 3, "MovieID::Title::Genres")
            rows.append((text_value(movie, "MovieID"), text_value(title, "title"), genres.split("|")))
        except ValueError as err:
            bad.add(path, no, err, line)
    return _items(rows)


def _items_100k(path: Path, folder: Path, bad: Quarantine) -> pa.Table:
    names = list(GENRES_100K)
    genre_file = folder / "u.genre"
    if genre_file.is_file():
        # `name|index` lines.
        found = {}
        for no, line in bad.lines(genre_file, LATIN1):
            try:
                name, idx = split_fields(line, "|", 2, "genre|index")
                found[int_value(idx, "genre index")] = text_value(name, "genre")
            except ValueError as err:
                bad.add(genre_file, no, err, line)
        names = [found[i] for i in sorted(found)]
    rows = []
    for no, line in bad.lines(path, LATIN1):
        try:
            expected = f"id|title|release|video release|url|{len(names)} genre flags"
            fields = split_fields(line, "|", 5 + len(names), expected)
            flags = [int_value(x, "genre flag") for x in fields[5:]]
            genres = [g for g, on in zip(names, flags) if on]
            rows.append((text_value(fields[0], "movie id"), text_value(fields[1], "title"), genres))
        except ValueError as err:
            bad.add(path, no, err, line)
    return _items(rows)

