"""Canonical column names and types of the raw lake and the stage outputs.

Every loader, importer and job speaks these names, so a column is renamed in one place.
"""

import pyarrow as pa

# --- raw events: lake/raw/events/date=YYYY-MM-DD/*.parquet ---
USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT_TYPE = "event_type"
TS = "ts"
RATING = "rating"
# Ratings outside this range are bad rows (quarantined by the importers and by validation).
RATING_RANGE = (0.0, 10.0)

# Behaviour types in funnel order; the index is the behaviour id the model embeds.
EVENT_TYPES = ("view", "click", "cart", "purchase", "rating")

EVENTS_SCHEMA = pa.schema(
    [
        pa.field(USER_ID, pa.string(), nullable=False),
        pa.field(ITEM_ID, pa.string(), nullable=False),
        pa.field(EVENT_TYPE, pa.string(), nullable=False),
        pa.field(TS, pa.timestamp("us", tz="UTC"), nullable=False),
        # Explicit rating (e.g. 0.5..5 stars) for `rating` events, null otherwise.
        pa.field(RATING, pa.float64(), nullable=True),
    ]
)

# --- raw catalogue: lake/raw/items/date=YYYY-MM-DD/*.parquet (items added that day) ---
TITLE = "title"
DESCRIPTION = "description"
CATEGORY = "category"
PRICE = "price"
CREATED_AT = "created_at"
AVAILABLE = "available"

ITEMS_SCHEMA = pa.schema(
    [
        pa.field(ITEM_ID, pa.string(), nullable=False),
        pa.field(TITLE, pa.string(), nullable=False),
        pa.field(DESCRIPTION, pa.string(), nullable=True),
        pa.field(CATEGORY, pa.string(), nullable=True),
        pa.field(PRICE, pa.float64(), nullable=True),
        pa.field(CREATED_AT, pa.timestamp("us", tz="UTC"), nullable=False),
        # False for items that must not be recommended (out of stock, delisted).
        pa.field(AVAILABLE, pa.bool_(), nullable=False),
    ]
)

# --- feature outputs (lake/features/ds=YYYY-MM-DD/) ---
ITEM_IDX = "item_idx"  # dense int id, stable across nights (new items appended)
SPLIT = "split"  # train / valid / test
SPLITS = ("train", "valid", "test")
# Item age, whole days from created_at to ds, as the feature job writes it in item_stats.
AGE_DAYS = "age_days"
N_USERS = "n_users"
# An item younger than this is "new": the serving reason "new for you" and the evaluation's
# new-items segment use the same rule.
NEW_ITEM_DAYS = 7


# Importers give catalogue items that a dataset names but never describes this title, so the
# catalogue contract (non-empty text) holds; the encode stage gives them no text vector.
PLACEHOLDER_TITLE = "item {}"


def is_placeholder(item_id: str, title: str | None, category: str | None, description: str | None) -> bool:
    return title == PLACEHOLDER_TITLE.format(item_id) and not category and not description

# --- scores: lake/scores/ds=YYYY-MM-DD/*.parquet (ranked lists the score stage writes and the
# publish stage loads; recommendations one row per user and rank, similar items per item) ---
RANK = "rank"
SCORE = "score"
REASON = "reason"
SIMILAR_ITEM_ID = "similar_item_id"

RECS_SCHEMA = pa.schema(
    [
        pa.field(USER_ID, pa.string(), nullable=False),
        pa.field(RANK, pa.int16(), nullable=False),
        pa.field(ITEM_ID, pa.string(), nullable=False),
        pa.field(SCORE, pa.float32(), nullable=False),
        pa.field(REASON, pa.string(), nullable=True),
    ]
)
SIMILAR_SCHEMA = pa.schema(
    [
        pa.field(ITEM_ID, pa.string(), nullable=False),
        pa.field(RANK, pa.int16(), nullable=False),
        pa.field(SIMILAR_ITEM_ID, pa.string(), nullable=False),
        pa.field(SCORE, pa.float32(), nullable=False),
    ]
)
