#!/usr/bin/env python3
"""Checks a peer's matched CSV against engage's matched.csv before its timing counts.

Usage: check.py ENGAGE_MATCHED_CSV PEER_CSV SESSIONS_CSV [--ties-ok]

Rows are compared by response: (user id, instant, audio link), the fields
engage's response id hashes. The peer must list exactly engage's responses,
each with the same session (empty when unmatched): pandas semantics, ties
included. With --ties-ok (polars, whose nearest join breaks ties its own way)
a different session is accepted when it is exactly as near as engage's (two
sessions at one instant, or equally far before and after); such rows are
counted and reported. Prints one JSON line; exits 1 on any other difference.
"""

import json
import sys

import polars as pl


def load(path: str) -> pl.DataFrame:
    df = pl.read_csv(path, infer_schema=False, columns=["user_id", "timestamp", "audio_url", "session_id"])
    return df.select(
        pl.col("user_id"),
        pl.col("timestamp").str.to_datetime(time_unit="ns", time_zone="UTC").alias("ts"),
        pl.col("audio_url").fill_null(""),
        pl.col("session_id").fill_null(""),
    )


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    ties_ok = "--ties-ok" in sys.argv
    ours, peer = load(args[0]), load(args[1])
    key = ["user_id", "ts", "audio_url"]
    report = {"rows": ours.height, "peer_rows": peer.height}
    dup = peer.height - peer.unique(subset=key).height
    j = ours.join(peer, on=key, how="full", suffix="_peer", coalesce=True, nulls_equal=True)
    missing = j.filter(pl.col("session_id_peer").is_null()).height
    extra = j.filter(pl.col("session_id").is_null()).height
    differ = j.filter(pl.col("session_id").is_not_null() & pl.col("session_id_peer").is_not_null()
                      & (pl.col("session_id") != pl.col("session_id_peer")))
    ties = 0
    if differ.height:
        s = pl.read_csv(args[2], infer_schema=False, columns=["session_id", "created_at"]).select(
            "session_id", pl.col("created_at").str.to_datetime(time_unit="ns", time_zone="UTC").alias("cat"))
        d = (differ.join(s, on="session_id", how="left")
             .join(s.rename({"session_id": "session_id_peer", "cat": "cat_peer"}), on="session_id_peer", how="left")
             .with_columns((pl.col("ts") - pl.col("cat")).abs().alias("d"),
                           (pl.col("ts") - pl.col("cat_peer")).abs().alias("d_peer")))
        ties = d.filter(pl.col("d") == pl.col("d_peer")).height
    other = differ.height - ties
    report.update({"missing": missing, "extra": extra, "duplicate_keys": dup,
                   "same_session": ours.height - missing - differ.height,
                   "equally_near_other_session": ties, "different_session": other})
    ok = missing == 0 and extra == 0 and dup == 0 and other == 0 and (ties_ok or ties == 0)
    report["ok"] = ok
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
