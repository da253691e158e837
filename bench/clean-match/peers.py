#!/usr/bin/env python3
"""The clean + match benchmark's Python peers, each from files to a matched CSV.

Usage: peers.py polars|pandas|duckdb ACTIVITY_JSONL SESSIONS_CSV OUT_CSV

Each does what `engage run --stop-after match` does, the way a user of the
tool would write it, timed as a whole by the caller (/usr/bin/time):

  1. read the JSON Lines log (polars `read_ndjson`, pandas
     `read_json(lines=True)`, DuckDB `read_json`);
  2. keep English responses: `language` trimmed, lower-cased, matching
     `^(en|eng|english|en[-_].+)$` (bench/clean/pandas_clean.py's rule, the
     cleaner's);
  3. drop repeats of a response, the first occurrence kept: same user id,
     instant and audio link (what engage's response id hashes);
  4. match each response to its learner's nearest session within 5 minutes:
     polars `join_asof(strategy="nearest", tolerance="5m", by="user_id")`,
     pandas `merge_asof(direction="nearest", tolerance=5min, by="user_id")`,
     DuckDB two `ASOF LEFT JOIN`s (backward and forward) and the pandas
     nearest rule in SQL (backward wins unless forward is strictly nearer;
     several sessions at one instant: the last in the file backward, the
     first forward);
  5. write the matched rows sorted by user id and timestamp (matched.csv's
     order): user_id, timestamp (as written), audio_url, accuracy,
     session_id, session_created_at, milestone, lesson, phase, progress.

The log and sessions have canonical field names (bench/clean-match/gen.py),
so no alias coalescing is needed, and no malformed lines.
Prints one JSON line {"engine", "version", "rows", "matched"}.
"""

import json
import sys

ENGLISH = r"^(?:en|eng|english|en[-_].+)$"
TOLERANCE_MS = 5 * 60 * 1000
OUT_COLUMNS = ["user_id", "timestamp", "audio_url", "accuracy", "session_id", "session_created_at",
               "milestone", "lesson", "phase", "progress"]


def run_polars(activity: str, sessions: str, out: str):
    import polars as pl

    r = pl.read_ndjson(activity, schema={
        "user_id": pl.String, "timestamp": pl.String, "language": pl.String,
        "audio_url": pl.String, "accuracy": pl.Float64, "original_text": pl.String,
        "response_text": pl.String, "session_id": pl.String,
    })
    r = (r.filter(pl.col("language").str.strip_chars().str.to_lowercase().str.contains(ENGLISH))
         .with_columns(pl.col("timestamp").str.to_datetime(time_unit="ns", time_zone="UTC").alias("ts"))
         .unique(subset=["user_id", "ts", "audio_url"], keep="first", maintain_order=True)
         .drop("session_id"))
    s = pl.read_csv(sessions, infer_schema=False)
    s = s.with_columns(pl.col("created_at").str.to_datetime(time_unit="ns", time_zone="UTC").alias("cat"))
    m = r.sort("ts").join_asof(s.sort("cat", maintain_order=True), left_on="ts", right_on="cat",
                               by="user_id", strategy="nearest", tolerance="5m",
                               check_sortedness=False)  # both sides were just sorted on the key
    m = m.rename({"created_at": "session_created_at"}).sort(["user_id", "ts"], maintain_order=True)
    m.select(OUT_COLUMNS).write_csv(out)
    return pl.__version__, m.height, int(m["session_id"].is_not_null().sum())


def run_pandas(activity: str, sessions: str, out: str):
    import pandas as pd

    r = pd.read_json(activity, lines=True, dtype={"user_id": str, "timestamp": str, "language": str,
                                                  "audio_url": str, "session_id": str},
                     convert_dates=False)
    r = r[r["language"].str.strip().str.lower().str.match(ENGLISH)]
    r = r.assign(ts=pd.to_datetime(r["timestamp"], utc=True, format="ISO8601").astype("datetime64[ns, UTC]"))
    r = r.drop_duplicates(subset=["user_id", "ts", "audio_url"], keep="first").drop(columns=["session_id"])
    s = pd.read_csv(sessions, dtype=str, keep_default_na=False)
    s["cat"] = pd.to_datetime(s["created_at"], utc=True, format="ISO8601").astype("datetime64[ns, UTC]")
    m = pd.merge_asof(r.sort_values("ts", kind="stable"), s.sort_values("cat", kind="stable"),
                      left_on="ts", right_on="cat", by="user_id", direction="nearest",
                      tolerance=pd.Timedelta("5min"))
    m = m.rename(columns={"created_at": "session_created_at"}).sort_values(["user_id", "ts"], kind="stable")
    m[OUT_COLUMNS].to_csv(out, index=False)
    return pd.__version__, len(m), int(m["session_id"].notna().sum())


def run_duckdb(activity: str, sessions: str, out: str):
    import duckdb

    con = duckdb.connect()
    con.execute(f"""
        CREATE TEMP TABLE r AS
        SELECT user_id, "timestamp", epoch_ms(CAST("timestamp" AS TIMESTAMPTZ)) AS ts, audio_url, accuracy
        FROM read_json(?, format = 'newline_delimited',
                       columns = {{user_id: 'VARCHAR', "timestamp": 'VARCHAR', "language": 'VARCHAR',
                                  audio_url: 'VARCHAR', accuracy: 'DOUBLE', original_text: 'VARCHAR',
                                  response_text: 'VARCHAR', session_id: 'VARCHAR'}})
        WHERE regexp_matches(lower(trim("language")), '{ENGLISH}')
        QUALIFY row_number() OVER (PARTITION BY user_id, ts, audio_url) = 1
    """, [activity])
    con.execute("""
        CREATE TEMP TABLE s AS
        SELECT *, epoch_ms(CAST(created_at AS TIMESTAMPTZ)) AS cat, row_number() OVER () AS row
        FROM read_csv(?, header = true, all_varchar = true)
    """, [sessions])
    # One session per (learner, instant) for each direction: the last in the
    # file looking backward, the first looking forward (pandas' rule).
    con.execute(f"""
        COPY (
          WITH b AS (
            SELECT r.*, sb.row AS b_row, sb.cat AS b_cat
            FROM r ASOF LEFT JOIN
                 (SELECT * FROM s QUALIFY row = max(row) OVER (PARTITION BY user_id, cat)) sb
              ON r.user_id = sb.user_id AND r.ts >= sb.cat),
          f AS (
            SELECT b.*, sf.row AS f_row, sf.cat AS f_cat
            FROM b ASOF LEFT JOIN
                 (SELECT * FROM s QUALIFY row = min(row) OVER (PARTITION BY user_id, cat)) sf
              ON b.user_id = sf.user_id AND b.ts <= sf.cat),
          pick AS (
            SELECT *, CASE
              WHEN b_row IS NOT NULL AND ts - b_cat <= {TOLERANCE_MS}
                   AND (f_row IS NULL OR f_cat - ts > {TOLERANCE_MS} OR ts - b_cat <= f_cat - ts) THEN b_row
              WHEN f_row IS NOT NULL AND f_cat - ts <= {TOLERANCE_MS} THEN f_row
            END AS hit
            FROM f)
          SELECT pick.user_id, pick."timestamp", pick.audio_url, pick.accuracy, s.session_id,
                 s.created_at AS session_created_at, s.milestone, s.lesson, s.phase, s.progress
          FROM pick LEFT JOIN s ON s.row = pick.hit
          ORDER BY pick.user_id, pick.ts
        ) TO '{out}' (HEADER, DELIMITER ',')
    """)
    rows, matched = con.execute(f"""
        SELECT count(*), count(session_id) FROM read_csv('{out}', header = true, all_varchar = true)
    """).fetchone()
    return duckdb.__version__, rows, matched


def main() -> int:
    engines = {"polars": run_polars, "pandas": run_pandas, "duckdb": run_duckdb}
    if len(sys.argv) != 5 or sys.argv[1] not in engines:
        print(__doc__, file=sys.stderr)
        return 2
    engine, activity, sessions, out = sys.argv[1:]
    version, rows, matched = engines[engine](activity, sessions, out)
    print(json.dumps({"engine": engine, "version": version, "rows": rows, "matched": matched}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
