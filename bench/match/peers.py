#!/usr/bin/env python3
"""The match benchmark's Python contenders: pandas merge_asof and polars join_asof.

Usage: peers.py pandas|polars DATA_DIR [OUT_CSV]

Loads DATA_DIR/{responses,sessions}.csv (not timed), then times only the
match: the sorts merge_asof / join_asof require plus the asof join itself,
    pandas: merge_asof(by="user_id", direction="nearest", tolerance=5min)
    polars: join_asof(by="user_id", strategy="nearest", tolerance="5m")
Prints one JSON line {"engine", "version", "load_s", "match_s", "rows", "matched"}.
With OUT_CSV, also writes response_id,session_id (sorted by response_id) so
the bench can compare assignments with ours.
"""

import json
import sys
import time


def run_pandas(data: str):
    import pandas as pd

    t = time.perf_counter()
    r = pd.read_csv(f"{data}/responses.csv", dtype={"response_id": str, "user_id": str})
    s = pd.read_csv(f"{data}/sessions.csv", dtype={"user_id": str, "session_id": str, "progress": str})
    r["timestamp"] = pd.to_datetime(r["timestamp"], unit="ms", utc=True).astype("datetime64[ns, UTC]")
    s["created_at"] = pd.to_datetime(s["created_at"], unit="ms", utc=True).astype("datetime64[ns, UTC]")
    load = time.perf_counter() - t

    t = time.perf_counter()
    out = pd.merge_asof(
        r.sort_values("timestamp", kind="stable"),
        s.sort_values("created_at", kind="stable"),
        left_on="timestamp",
        right_on="created_at",
        by="user_id",
        direction="nearest",
        tolerance=pd.Timedelta("5min"),
    )
    match = time.perf_counter() - t
    return pd.__version__, load, match, len(out), int(out["session_id"].notna().sum()), (
        lambda path: out[["response_id", "session_id"]].sort_values("response_id").to_csv(path, index=False)
    )


def run_polars(data: str):
    import polars as pl

    t = time.perf_counter()
    r = pl.read_csv(f"{data}/responses.csv", schema_overrides={"user_id": pl.String, "response_id": pl.String})
    s = pl.read_csv(f"{data}/sessions.csv", schema_overrides={"user_id": pl.String, "session_id": pl.String,
                                                             "progress": pl.String})
    r = r.with_columns(pl.from_epoch("timestamp", time_unit="ms").dt.cast_time_unit("ns"))
    s = s.with_columns(pl.from_epoch("created_at", time_unit="ms").dt.cast_time_unit("ns"))
    load = time.perf_counter() - t

    t = time.perf_counter()
    out = r.sort("timestamp", maintain_order=True).join_asof(
        s.sort("created_at", maintain_order=True),
        left_on="timestamp",
        right_on="created_at",
        by="user_id",
        strategy="nearest",
        tolerance="5m",
        check_sortedness=False,  # both sides were just sorted on the key
    )
    match = time.perf_counter() - t
    return pl.__version__, load, match, out.height, out["session_id"].is_not_null().sum(), (
        lambda path: out.select("response_id", "session_id").sort("response_id").write_csv(path)
    )


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[1] not in ("pandas", "polars"):
        print(__doc__, file=sys.stderr)
        return 2
    engine, data = sys.argv[1], sys.argv[2]
    version, load, match, rows, matched, write = (run_pandas if engine == "pandas" else run_polars)(data)
    if len(sys.argv) > 3:
        write(sys.argv[3])
    print(json.dumps({"engine": engine, "version": version, "load_s": round(load, 3),
                      "match_s": round(match, 3), "rows": rows, "matched": int(matched)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
