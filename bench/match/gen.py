#!/usr/bin/env python3
"""Generates the match benchmark's data once: responses.csv and sessions.csv.

Usage: gen.py N_RESPONSES N_SESSIONS OUT_DIR [SEED]

- sessions.csv : user_id,session_id,created_at,milestone,lesson,progress,phase
  about 10 sessions per learner spread over 30 days, in random file order;
  created_at in epoch milliseconds (a docs/data-contracts.md form). 1 in 50 sessions shares
  its learner's previous created_at, so same-instant ties occur.
- responses.csv: response_id,user_id,timestamp,accuracy
  each response sits near a random session (uniform within +-7 minutes, so
  about 70% match); 2% belong to learners without sessions; epoch ms.

Written with polars (fast); the files are reused by every contender.
"""

import os
import sys
import time

import numpy as np
import polars as pl

DAY_MS = 86_400_000
T0_MS = 1_709_251_200_000  # 2024-03-01T00:00:00Z


def learner_ids(numbers: np.ndarray) -> pl.Series:
    """u00000042-style learner ids."""
    return "u" + pl.Series(numbers).cast(pl.String).str.zfill(8)


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    n_resp, n_sess, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 42
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = time.perf_counter()

    n_learners = max(1, n_sess // 10)
    s_user = rng.integers(0, n_learners, n_sess)
    s_at = T0_MS + rng.integers(0, 30 * DAY_MS, n_sess)
    # Same-instant ties: copy the created_at of another session of the same learner.
    order = np.lexsort((s_at, s_user))
    dup = rng.random(n_sess) < 0.02
    su, sa = s_user[order], s_at[order]
    same_learner_prev = np.r_[False, su[1:] == su[:-1]]
    take = dup & same_learner_prev
    sa = sa.copy()
    idx = np.nonzero(take)[0]
    sa[idx] = sa[idx - 1]
    s_user, s_at = su, sa
    perm = rng.permutation(n_sess)  # random file order
    s_user, s_at = s_user[perm], s_at[perm]
    phases = np.array(["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "S1", "S2"])
    ph = phases[rng.integers(0, len(phases), n_sess)]
    sessions = pl.DataFrame(
        {
            "user_id": learner_ids(s_user),
            "session_id": pl.Series(np.arange(n_sess)).cast(pl.String),
            "created_at": s_at,
            "milestone": np.array(["M1", "M2", "M3", "M4"])[rng.integers(0, 4, n_sess)],
            "lesson": ph,
            "progress": rng.integers(0, 101, n_sess),
            "phase": ph,
        }
    ).with_columns(("s" + pl.col("session_id")).alias("session_id"))
    sessions.write_csv(os.path.join(out, "sessions.csv"))

    pick = rng.integers(0, n_sess, n_resp)
    r_user = s_user[pick].astype(np.int64)
    r_at = s_at[pick] + rng.integers(-7 * 60_000, 7 * 60_000 + 1, n_resp)
    orphan = rng.random(n_resp) < 0.02
    r_user[orphan] = n_learners + rng.integers(0, max(1, n_learners // 10), int(orphan.sum()))
    responses = pl.DataFrame(
        {
            "response_id": pl.Series(np.arange(n_resp)).cast(pl.String),
            "user_id": learner_ids(r_user),
            "timestamp": r_at,
            "accuracy": np.round(rng.random(n_resp) * 100, 1),
        }
    ).with_columns(("r" + pl.col("response_id")).alias("response_id"))
    responses.write_csv(os.path.join(out, "responses.csv"))
    print(f"generated {n_resp:,} responses, {n_sess:,} sessions ({n_learners:,} learners) "
          f"in {time.perf_counter() - t:.1f}s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
