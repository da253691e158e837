#!/usr/bin/env python3
"""Golden fixtures for the matcher: a tricky dataset matched by real pandas.

Writes tests/fixtures/pandas/{responses.csv,sessions.csv,expected.csv}:

- sessions.csv  : user_id,session_id,created_at,milestone,lesson,progress,phase
                  (the data contract's sessions format; file order is the tie order)
- responses.csv : response_id,user_id,timestamp
- expected.csv  : response_id,session_id (empty when pandas finds no session)

The dataset mixes hand-made edge cases (tolerance exactly 5 min and 5 min +
1 ns on both sides, equal distance before/after, several sessions at one
instant before, at and after a response, a learner without sessions, ids with
commas and leading zeros) with random learners whose instants sit on a coarse
minute grid so ties are frequent. Timestamps are written as RFC 3339 with
nanoseconds so the fixtures carry pandas' full resolution.

The merge is exactly
    merge_asof(responses.sort_values("timestamp", kind="stable"),
               sessions.sort_values("created_at", kind="stable"),
               left_on="timestamp", right_on="created_at", by="user_id",
               direction="nearest", tolerance=pd.Timedelta("5min"))
A stable sort keeps the file order among equal created_at, so "first/last in
the file" is well defined (pandas' default quicksort would not guarantee it).

Run from the repository root:  python3 bench/match/golden.py
"""

import os
import random
import sys

import pandas as pd

SEED = 20240301
T0 = pd.Timestamp("2024-03-01T10:00:00Z")
NS = pd.Timedelta(1, "ns")
MIN = pd.Timedelta(minutes=1)
TOL = pd.Timedelta("5min")


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = os.path.join(root, "tests", "fixtures", "pandas")
    os.makedirs(out, exist_ok=True)
    rng = random.Random(SEED)

    sessions = []  # (user_id, session_id, created_at, phase)
    responses = []  # (user_id, timestamp)

    def sess(user, sid, at, phase="P1"):
        sessions.append((user, sid, at, phase))

    def resp(user, at):
        responses.append((user, at))

    # Tolerance, inclusive on both sides.
    sess("tol", "tol-s", T0)
    for d in (-TOL - NS, -TOL, -TOL + NS, TOL - NS, TOL, TOL + NS, pd.Timedelta(0)):
        resp("tol", T0 + d)
    # Equal distance before and after: the earlier wins.
    sess("tie", "tie-late", T0 + 2 * MIN, "P2")
    sess("tie", "tie-early", T0, "P1")
    for d in (MIN - NS, MIN, MIN + NS):
        resp("tie", T0 + d)
    # Several sessions at one instant, rows spread through the file.
    for k in range(3):
        sess("dup", f"dup-{k}", T0, f"P{k + 1}")
        sess("filler", f"filler-{k}", T0 + k * MIN)
    for d in (-MIN, pd.Timedelta(0), MIN, -TOL, TOL + NS):
        resp("dup", T0 + d)
    # Two groups of equal instants, response halfway between.
    for k in range(2):
        sess("dup2", f"dup2-a{k}", T0)
        sess("dup2", f"dup2-b{k}", T0 + 2 * MIN)
    for d in (MIN, MIN + NS, 3 * MIN, -MIN):
        resp("dup2", T0 + d)
    # No sessions at all; awkward ids (comma, quote, leading zeros).
    for d in (pd.Timedelta(0), MIN):
        resp("nobody", T0 + d)
    sess("a,b \"q\"", "comma-s", T0)
    resp("a,b \"q\"", T0 + MIN)
    sess("007", "zeros-s", T0)
    resp("7", T0)
    resp("007", T0 + 4 * MIN)

    # Random learners on a minute grid: ties everywhere.
    for u in range(40):
        user = f"u{u:03d}"
        for _ in range(rng.randint(0, 8)):
            sess(user, f"{user}-s{len(sessions)}", T0 + rng.randint(0, 30) * MIN, rng.choice(["P1", "P2", "S1"]))
        for _ in range(rng.randint(0, 12)):
            jitter = rng.choice([0, 0, 1, -1, 30 * 10**9, -30 * 10**9]) * NS
            resp(user, T0 + rng.randint(-6, 36) * MIN + jitter)

    rng.shuffle(sessions)
    rng.shuffle(responses)

    s = pd.DataFrame(sessions, columns=["user_id", "session_id", "created_at", "phase"])
    s["milestone"] = "M1"
    s["lesson"] = s["phase"]
    s["progress"] = [str(rng.randint(0, 100)) for _ in range(len(s))]
    r = pd.DataFrame(responses, columns=["user_id", "timestamp"])
    r["response_id"] = [f"r{i:04d}" for i in range(len(r))]
    # pandas 3 infers microseconds from Timestamp objects: force nanoseconds.
    s["created_at"] = s["created_at"].astype("datetime64[ns, UTC]")
    r["timestamp"] = r["timestamp"].astype("datetime64[ns, UTC]")
    assert str(s["created_at"].dtype) == str(r["timestamp"].dtype) == "datetime64[ns, UTC]"

    merged = pd.merge_asof(
        r.sort_values("timestamp", kind="stable"),
        s.sort_values("created_at", kind="stable")[["user_id", "created_at", "session_id"]],
        left_on="timestamp",
        right_on="created_at",
        by="user_id",
        direction="nearest",
        tolerance=TOL,
    )
    expected = merged[["response_id", "session_id"]].sort_values("response_id")

    iso = lambda col: col.map(lambda t: t.isoformat().replace("+00:00", "Z"))
    s_out = s[["user_id", "session_id", "created_at", "milestone", "lesson", "progress", "phase"]].copy()
    s_out["created_at"] = iso(s_out["created_at"])
    s_out.to_csv(os.path.join(out, "sessions.csv"), index=False)
    r_out = r[["response_id", "user_id", "timestamp"]].copy()
    r_out["timestamp"] = iso(r_out["timestamp"])
    r_out.to_csv(os.path.join(out, "responses.csv"), index=False)
    expected.to_csv(os.path.join(out, "expected.csv"), index=False)

    by_id = dict(zip(expected["response_id"], expected["session_id"]))
    n_matched = int(expected["session_id"].notna().sum())
    print(f"pandas {pd.__version__}: {len(r)} responses, {len(s)} sessions, "
          f"{n_matched} matched, {len(r) - n_matched} unmatched -> {out}")
    # Echo the tie-rule findings so they are visible when the script runs.
    rid = lambda user, at: r.loc[(r.user_id == user) & (r.timestamp == at), "response_id"].iloc[0]
    dup_rows = s.index[s.user_id == "dup"].tolist()  # file rows, ascending
    where = lambda sid: {s.index[s.session_id == sid][0]: sid}
    place = lambda sid: ("first" if where(sid).keys() == {dup_rows[0]} else
                         "last" if where(sid).keys() == {dup_rows[-1]} else "middle")
    print("  equal distance before/after ->", by_id[rid("tie", T0 + MIN)])
    for label, d in (("at", pd.Timedelta(0)), ("after", MIN), ("before", -MIN)):
        sid = by_id[rid("dup", T0 + d)]
        print(f"  3 sessions at one created_at, response {label} it -> {sid} ({place(sid)} in file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
