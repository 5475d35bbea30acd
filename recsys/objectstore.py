"""A lake in an S3 bucket, worked on through a local copy.

With `lake_root` a URL (`s3://bucket/prefix`) the bucket is the lake of record, and each step
(a stage, `recsys generate`, `recsys import`) works on a local copy of it under `lake_cache`
(`<lake_cache>/<bucket>/<prefix>`): `working_copy` pulls exactly the lake paths the step reads
(recsys.lake.STAGE_IO), the step runs on local files as it would on a local lake, and once it
has succeeded what it wrote is pushed, the stage's result file last. So a worker with an empty
cache can run any stage, and the bucket never gets the output of a step that failed (the copy
drops it; only what a failure leaves for a person to read, an import's bad rows, is pushed). A
local `lake_root` is used in place: nothing is copied.

A pulled file takes its object's modification time, so the next pull downloads only what
changed in the bucket, and a file a step wrote (a new time or size) is what gets uploaded; no
other state is kept. Steps that share a cache folder take turns (a lock file in it), so that
none pushes or discards what another is writing: workers meant to run steps side by side on
one machine need a `lake_cache` each.

The bucket is reached with pyarrow's S3 filesystem. Credentials come from the standard AWS
sources (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role); an
S3-compatible server is named by `s3_endpoint` (RECSYS_S3_ENDPOINT) or AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from recsys.config import Settings
from recsys.errors import InputError
from recsys.lake import Lake, LakeIO, Output, lake_url

log = logging.getLogger(__name__)

# Objects moved at once: for the many small files of a lake, request latency is the cost.
TRANSFER_THREADS = 8
# Bytes per read/write while copying one object.
CHUNK_BYTES = 8 << 20

Stat = tuple[int, int]  # (size, modification time in ns)


def open_lake(settings: Settings) -> Lake:
    """The lake the settings name: a local folder, or the local copy of a lake in a bucket
    (nothing pulled yet)."""
    url = lake_url(settings.lake_root)
    if url is None:
        return Lake(Path(settings.lake_root))
    bucket = Bucket(url, settings.s3_endpoint)
    return Lake(Path(settings.lake_cache) / bucket.name, bucket)


@contextmanager
def working_copy(
    settings: Settings, io: LakeIO, day: dt.date | None = None, result: str | None = None
) -> Iterator[Lake]:
    """The lake for one step that reads and writes what `io` says for `day`. For a lake in a
    bucket: pull the reads, yield the local copy, then push the writes and, after them, the
    result file of stage `result` (readers take a stage's output as complete once its result is
    there). A step that raises pushes only the outputs marked `on_failure`, and the rest of what it
    wrote is deleted from the copy."""
    lake = open_lake(settings)
    bucket = lake.bucket
    if bucket is None:
        yield lake
        return
    with _taking_turns(Path(settings.lake_cache)):
        for path in io.reads(lake, day, settings):
            bucket.pull(lake.root, path)
        outputs = io.writes(lake, day, settings)
        results = [Output(lake.stage_result(day, result), "add")] if result else []
        before: dict[str, Stat] = {}
        for out in outputs + results:
            before.update(local_files(lake.root, out.path))
        try:
            yield lake
        except BaseException:
            bucket.push(lake.root, [out for out in outputs if out.on_failure], before)
            bucket.discard(lake.root, [out for out in outputs + results if not out.on_failure], before)
            raise
        bucket.push(lake.root, outputs, before)
        bucket.push(lake.root, results, before)


@contextmanager
def _taking_turns(cache: Path) -> Iterator[None]:
    """Hold the cache folder's lock (waiting for it) while the block runs."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Bucket:
    """A lake prefix in an S3 bucket, mirrored path by path into a local folder (`root`)."""

    def __init__(self, url: str, endpoint: str | None = None):
        from pyarrow import fs

        self.url = url  # s3://bucket/prefix, as recsys.lake.lake_url writes it
        self.name = url[len("s3://") :]  # bucket/prefix: pyarrow's path of the lake's root
        self.fs = fs.S3FileSystem(**_endpoint_options(endpoint))

    # --- reading the bucket ---
    def _key(self, rel: str) -> str:
        return f"{self.name}/{rel}" if rel else self.name

    def remote_files(self, rel: str) -> dict[str, Stat]:
        """The objects at `rel` (a file) or under it (a folder), by lake-relative path."""
        from pyarrow import fs

        key = self._key(rel)
        with self._errors(rel):
            found = self.fs.get_file_info(fs.FileSelector(key, recursive=True, allow_not_found=True))
            if not found:  # not a folder: one object, or nothing
                found = [self.fs.get_file_info(key)]
        start = len(self.name) + 1
        return {i.path[start:]: (i.size, i.mtime_ns) for i in found if i.type == fs.FileType.File}

    def folders(self, root: Path, folder: Path) -> list[str]:
        """Names of the sub-folders of `folder` in the bucket."""
        from pyarrow import fs

        rel = _rel(root, folder)
        with self._errors(rel):
            found = self.fs.get_file_info(fs.FileSelector(self._key(rel), allow_not_found=True))
        return sorted(i.base_name for i in found if i.type == fs.FileType.Directory)

    # --- bucket -> copy ---
    def pull(self, root: Path, path: Path) -> None:
        """Make the local `path` (a file or folder under `root`) what the bucket holds there:
        download what is missing or differs, delete what the bucket does not have."""
        rel = _rel(root, path)
        remote = self.remote_files(rel)
        local = local_files(root, path)
        todo = [r for r, stat in remote.items() if local.get(r) != stat]
        self._each(lambda r: self._download(root, r, remote[r]), todo, rel)
        for r in local.keys() - remote.keys():
            (root / r).unlink()
        _prune(root / rel)
        if todo:
            log.info("pulled %d of %d objects under %s/%s", len(todo), len(remote), self.url, rel)

    def _download(self, root: Path, rel: str, stat: Stat) -> None:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then renamed: a reader never sees half a file. Dot names are skipped by
        # Spark and pyarrow datasets.
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        with self.fs.open_input_stream(self._key(rel)) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK_BYTES)
        os.utime(tmp, ns=(stat[1], stat[1]))
        os.replace(tmp, target)

    # --- copy -> bucket ---
    def push(self, root: Path, outputs: list[Output], before: dict[str, Stat]) -> None:
        """Bring the bucket's copy of each output up to date with the local one; `before` holds
        the local files (and their stats) as they were before the step ran."""
        for out in outputs:
            rel = _rel(root, out.path)
            now = local_files(root, out.path)
            was = {r: s for r, s in before.items() if _under(r, rel)}
            changed = {r for r, s in now.items() if was.get(r) != s}
            touched = changed | (was.keys() - now.keys())
            if out.mode == "add":
                self._upload_changed(root, {r: now[r] for r in sorted(changed)}, rel)
            elif out.mode == "replace":
                if touched:
                    self._mirror(root, rel, now)
            else:  # each touched partition whole
                for unit in sorted({_unit(r, rel) for r in touched}):
                    self._mirror(root, unit, {r: s for r, s in now.items() if _under(r, unit)})

    def _upload_changed(self, root: Path, changed: dict[str, Stat], rel: str) -> None:
        """Upload the `changed` files that the bucket does not hold as they are (one pulled during
        the step, such as the champion's folder, is there already)."""
        if not changed:
            return
        with self._errors(rel):
            infos = self.fs.get_file_info([self._key(r) for r in changed])
        self._upload(root, [r for r, i in zip(changed, infos) if (i.size, i.mtime_ns) != changed[r]], rel)

    def _mirror(self, root: Path, rel: str, local: dict[str, Stat]) -> None:
        """Make the bucket's `rel` hold exactly the local files `local`: upload what differs, then
        delete objects the copy does not have."""
        remote = self.remote_files(rel)
        self._upload(root, [r for r, s in local.items() if remote.get(r) != s], rel)
        stale = sorted(remote.keys() - local.keys())
        with self._errors(rel):
            for r in stale:
                self.fs.delete_file(self._key(r))
        if stale:
            log.info("deleted %d stale objects under %s/%s", len(stale), self.url, rel)

    def _upload(self, root: Path, rels: list[str], where: str) -> None:
        if not rels:
            return
        self._each(lambda r: self._upload_one(root, r), rels, where)
        # The uploaded files take their objects' times, so the next pull finds them current.
        with self._errors(where):
            infos = self.fs.get_file_info([self._key(r) for r in rels])
        for r, info in zip(rels, infos):
            path = root / r
            if info.mtime_ns is not None and path.stat().st_size == info.size:
                os.utime(path, ns=(info.mtime_ns, info.mtime_ns))
        log.info("pushed %d files to %s/%s", len(rels), self.url, where)

    def _upload_one(self, root: Path, rel: str) -> None:
        # An object appears whole when its upload completes, never half written.
        with open(root / rel, "rb") as src, self.fs.open_output_stream(self._key(rel)) as dst:
            shutil.copyfileobj(src, dst, CHUNK_BYTES)

    def discard(self, root: Path, outputs: list[Output], before: dict[str, Stat]) -> None:
        """Delete from the copy what a failed step wrote under its outputs, so that the cache never
        holds output the bucket lacks (the next pull restores anything it replaced)."""
        for out in outputs:
            for r, s in local_files(root, out.path).items():
                if before.get(r) != s:
                    (root / r).unlink(missing_ok=True)
            _prune(out.path)

    # --- helpers ---
    def _each(self, fn, rels: list[str], where: str) -> None:
        with self._errors(where), ThreadPoolExecutor(TRANSFER_THREADS) as pool:
            list(pool.map(fn, rels))

    @contextmanager
    def _errors(self, rel: str):
        """An S3 failure (no such bucket, access denied, unreachable endpoint) as one line naming the URL."""
        try:
            yield
        except OSError as err:
            if err.filename:  # a local file's error (pyarrow's name no file), not the bucket's
                raise
            cause = " ".join(str(err).split())
            raise InputError(f"{self.url}/{rel}: {cause[:300]}") from None


def _endpoint_options(endpoint: str | None) -> dict:
    """S3FileSystem options for an S3-compatible server (`http://host:port`); none for AWS itself."""
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return {}
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    return {"endpoint_override": parts.netloc, "scheme": parts.scheme}


def local_files(root: Path, path: Path) -> dict[str, Stat]:
    """The files at `path` (a file or folder under `root`), by root-relative POSIX path."""
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return {_rel(root, path): (st.st_size, st.st_mtime_ns)}
    found = {}
    for folder, _, names in os.walk(path):
        for name in names:
            full = Path(folder) / name
            st = full.stat()
            found[_rel(root, full)] = (st.st_size, st.st_mtime_ns)
    return found


def _rel(root: Path, path: Path) -> str:
    rel = Path(path).relative_to(root).as_posix()
    return "" if rel == "." else rel


def _under(rel: str, folder: str) -> bool:
    return not folder or rel == folder or rel.startswith(folder + "/")


def _unit(rel: str, folder: str) -> str:
    """The partition of `folder` that `rel` lies in (its first path part below `folder`)."""
    rest = rel[len(folder) + 1 :] if folder else rel
    return f"{folder}/{rest.split('/', 1)[0]}" if folder else rest.split("/", 1)[0]


def _prune(path: Path) -> None:
    """Remove the empty folders at and below `path`, deepest first."""
    if not path.is_dir():
        return
    for folder, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):
        try:
            os.rmdir(folder)
        except OSError:  # not empty
            pass
