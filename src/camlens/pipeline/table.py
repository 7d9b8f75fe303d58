"""The results table: ``results.jsonl`` (one row per image, appended and synced per batch, a journal of
images being written beside it), repaired after a kill, exported to ``results.csv`` and, with pyarrow,
``results.parquet``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from camlens.pipeline.files import PARTIAL_SUFFIX, atomic_write
from camlens.pipeline.items import ImageResult
from camlens.pipeline.sources import source_key

TABLE = "results.jsonl"


JOURNAL = ".camlens-started.jsonl"  # images whose files are being written (kept only by an interrupted run)


def read_table(folder: Path, name: str = TABLE) -> list[dict[str, Any]]:
    """The rows of ``results.jsonl`` (a last line cut off by a kill is ignored)."""
    return list(iter_table(folder, name))


def iter_table(folder: Path, name: str = TABLE) -> Iterator[dict[str, Any]]:
    """The rows of ``results.jsonl`` one at a time (a last line cut off by a kill is skipped)."""
    path = folder / name
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def append_rows(folder: Path, rows: list[dict[str, Any]], name: str = TABLE) -> None:
    with open(folder / name, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in rows))
        handle.flush()
        os.fsync(handle.fileno())


def repair(folder: Path) -> None:
    """Undo what a killed run can leave: a last table line cut short, and ``.part`` temporaries."""
    if not folder.is_dir():
        return
    for table in (folder / TABLE, folder / JOURNAL):
        if table.is_file() and table.stat().st_size:
            with open(table, "rb+") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.seek(0)
                    data = handle.read()
                    handle.truncate(data.rfind(b"\n") + 1)
    for entry in os.scandir(folder):
        if entry.name.startswith(".") and entry.name.endswith(PARTIAL_SUFFIX) and entry.is_file():
            Path(entry.path).unlink(missing_ok=True)


def latest_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The final row of each image and network (``started`` rows mark work in progress and are left out)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if row.get("status") in ("ok", "error"):
            latest[(row.get("path", ""), row.get("network", ""))] = row
    return list(latest.values())


COLUMNS = (
    "path",
    "stem",
    "network",
    "status",
    "error",
    "class_id",
    "class_name",
    "score",
    "probability",
    "layer",
    "width",
    "height",
    "methods",
    "topk",
    "files",
    "notes",
    "key",
    "source",
    "kind",
    "frames",
    "source_frames",
)


def export_table(folder: Path) -> list[Path]:
    """Rewrite ``results.csv`` (and ``results.parquet`` when pyarrow is installed) from ``results.jsonl``.

    One row per image (its last result): the columns of :data:`COLUMNS`, then one ``metric_<name>``
    column per metric. In the CSV, lists are joined with ``;`` (top-k as ``class:probability``).
    """
    import csv

    rows = latest_rows(iter_table(folder))
    if not rows:
        return []
    metric_names = sorted({name for row in rows for name in (row.get("metrics") or {})})
    flat = []
    for row in rows:
        item = {k: row.get(k) for k in COLUMNS}
        item["methods"] = ";".join(row.get("methods") or [])
        item["topk"] = ";".join(f"{t['class_id']}:{t['probability']}" for t in row.get("topk") or [])
        item["files"] = ";".join(row.get("files") or [])
        item["notes"] = ";".join(row.get("notes") or [])
        for name in metric_names:
            item[f"metric_{name}"] = (row.get("metrics") or {}).get(name)
        flat.append(item)
    columns = list(flat[0])
    written = []

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(flat)

    atomic_write(folder / "results.csv", write_csv)
    written.append(folder / "results.csv")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return written
    table = _arrow_table(rows, metric_names)
    atomic_write(folder / "results.parquet", lambda tmp: pq.write_table(table, tmp))
    written.append(folder / "results.parquet")
    return written


def export_targets(folder: Path, name: str) -> Path | None:
    """Rewrite ``<name>.csv``: one row per (image, target) from the list each row of ``results.jsonl`` holds
    under ``name`` (a task's ``targets``: ``classes`` of a segmentation, ``prompts`` of a text run), with the
    image's ``path``, ``stem`` and ``network`` first (lists joined with ``;``). None when no row has targets."""
    import csv

    flat = [
        {
            "path": row.get("path"),
            "stem": row.get("stem"),
            "network": row.get("network"),
            **{k: ";".join(map(str, v)) if isinstance(v, list) else v for k, v in target.items()},
        }
        for row in latest_rows(iter_table(folder))
        if row.get("status") == "ok"
        for target in row.get(name) or []
    ]
    if not flat:
        return None
    columns = list(dict.fromkeys(k for item in flat for k in item))

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(flat)

    path = folder / f"{name}.csv"
    atomic_write(path, write_csv)
    return path


def _arrow_table(rows: list[dict[str, Any]], metric_names: list[str]) -> Any:
    """The rows as a pyarrow table with a fixed schema (all-null and empty columns keep their types)."""
    import pyarrow as pa

    text, integer, real = pa.string(), pa.int64(), pa.float64()
    top = pa.struct([("class_id", integer), ("label", text), ("probability", real)])
    types = {
        "class_id": integer,
        "score": real,
        "probability": real,
        "width": integer,
        "height": integer,
        "frames": integer,
        "source_frames": integer,
        "methods": pa.list_(text),
        "topk": pa.list_(top),
        "files": pa.list_(text),
        "notes": pa.list_(text),
    }
    fields = [pa.field(name, types.get(name, text)) for name in COLUMNS]
    fields += [pa.field(f"metric_{name}", real) for name in metric_names]
    schema = pa.schema(fields)
    if not rows:
        return schema.empty_table()
    # Through pyarrow's JSON reader rather than pa.table(python lists): converting Python objects makes
    # pyarrow import pandas to test for pandas types, about a second of a one-image command.
    import io

    import pyarrow.json as pj

    def clean(value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    lines = []
    for row in rows:
        item = {}
        for name in COLUMNS:
            value = row.get(name)
            item[name] = [] if value is None and name in ("methods", "topk", "files", "notes") else clean(value)
        for name in metric_names:
            item[f"metric_{name}"] = clean((row.get("metrics") or {}).get(name))
        lines.append(json.dumps(item, allow_nan=False))
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    data = io.BytesIO("\n".join(lines).encode("utf-8"))
    table = pj.read_json(
        data, parse_options=options, read_options=pj.ReadOptions(block_size=max(1 << 20, data.getbuffer().nbytes + 1))
    )
    return table.replace_schema_metadata({b"pandas": _PANDAS_INTEGERS})


# pandas metadata saying that the integer columns are nullable integers (Int64): pandas.read_parquet would
# otherwise read a column with a missing value (a failed image's class and size) as floats with NaN
_PANDAS_INTEGERS = json.dumps(
    {
        "index_columns": [],
        "column_indexes": [],
        "columns": [
            {"name": name, "field_name": name, "pandas_type": "int64", "numpy_type": "Int64", "metadata": None}
            for name in ("class_id", "width", "height")
        ],
    }
).encode()


class TableState:
    """The results table of one run.

    Before an image's files are written its ``started`` row goes into a journal beside the table (so that
    the next run knows those files are its own to replace), after them its final row into the table; the
    journal is removed when the run completes. Rows of bad images wait until a first image
    succeeds, so that a run in which nothing could be explained leaves nothing behind.
    """

    def __init__(
        self, out: Path, network: str, key: str, row: Callable[[ImageResult, str, str], dict[str, Any]] | None = None
    ) -> None:
        self.out, self.network, self.key = out, network, key
        self.row = row or ImageResult.record  # a task's own (camlens.pipeline.task)
        self.pending: list[dict[str, Any]] = []
        self.started = False

    def begin(self, results: list[ImageResult]) -> None:
        rows = [
            {
                "path": r.path,
                "network": self.network,
                "status": "started",
                "key": self.key,
                "source": source_key(r.path),
            }
            for r in results
            if r.ok
        ]
        if rows:
            self.started = True
            append_rows(self.out, rows, JOURNAL)

    def add(self, results: list[ImageResult]) -> None:
        rows = self.pending + [self.row(r, self.network, self.key) for r in results]
        if not self.started and not any(r.ok for r in results):
            self.pending = rows
            return
        self.pending = []
        self.started = True
        append_rows(self.out, rows)
