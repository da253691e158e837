#!/usr/bin/env python3
"""Generates the clean + match benchmark's input: an activity log and a sessions CSV.

Usage: gen.py SIZE_MB OUT_DIR [SEED]

Writes OUT_DIR/activity.jsonl (about SIZE_MB megabytes) and OUT_DIR/sessions.csv
in the shape of issue 14: ~260 bytes per response, 100 responses per learner
and 10 sessions per learner (530 MB = 2,000,000 responses, 20,000 learners,
200,000 sessions). Deterministic per seed.

- Responses: canonical field names (`user_id`, `timestamp`, `language`,
  `audio_url`, `accuracy`, two texts, `session_id`), RFC 3339
  UTC timestamps with milliseconds, ~85% English spelled `en`, `EN`,
  `en-IN`, `en_GB`, `eng`, `English`, ` en ` (the rest `hi`, `fr`, `es`,
  `ta`, `enx`), 5% null audio, 10% without accuracy, 0.5% exact repeats of an
  earlier line. Learners in random order (a log in time order, not grouped).
  Each response sits within +-7 min of one of its learner's sessions (so ~70%
  match within the 5 min tolerance); 2% of learners have no sessions.
- Sessions: `user_id,session_id,created_at,milestone,lesson,progress,phase`,
  over 30 days; 3% repeat the previous session's `created_at` (ties).

No malformed lines: the peers' readers (polars, pandas, DuckDB) reject a whole
file on one bad line, while engage counts and skips it.
"""
import os
import random
import sys

BYTES_PER_RESPONSE = 260
RESPONSES_PER_LEARNER = 100
SESSIONS_PER_LEARNER = 10
ENGLISH = ["en", "en", "en", "EN", "en-IN", "en_GB", "eng", "English", " en "]
OTHER = ["hi", "fr", "es", "ta", "enx"]
WORDS = ("the quick brown fox jumps over a lazy dog while my teacher reads "
         "books about water apples school friends morning evening lesson").split()
PHASES = ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "S1", "S2"]
BASE_MS = 1_709_251_200_000  # 2024-03-01T00:00:00Z
SPAN_MS = 30 * 24 * 3600 * 1000


def rfc3339(ms: int) -> str:
    s, frac = divmod(ms - BASE_MS, 1000)
    days, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    # 2024-03-01 is day 0; the span stays within March 2024 (31 days).
    return f"2024-03-{days + 1:02d}T{h:02d}:{m:02d}:{sec:02d}.{frac:03d}Z"


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    target = int(float(sys.argv[1]) * 1_000_000)
    out = sys.argv[2]
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 14)
    os.makedirs(out, exist_ok=True)
    n_resp = max(1, target // BYTES_PER_RESPONSE)
    n_learners = max(1, n_resp // RESPONSES_PER_LEARNER)

    # Sessions: per learner, sorted instants; the file lists learners in order.
    sessions: list[list[int]] = []
    with open(f"{out}/sessions.csv", "w", encoding="utf-8", buffering=1 << 20) as f:
        f.write("user_id,session_id,created_at,milestone,lesson,progress,phase\n")
        sid = 0
        for u in range(n_learners):
            if rng.random() < 0.02:
                sessions.append([])
                continue
            times = sorted(rng.randrange(0, SPAN_MS - 3_600_000) for _ in range(SESSIONS_PER_LEARNER))
            for i in range(1, len(times)):
                if rng.random() < 0.03:
                    times[i] = times[i - 1]
            sessions.append(times)
            rows = []
            for i, t in enumerate(times):
                sid += 1
                phase = PHASES[i % len(PHASES)]
                rows.append(f"L{u:07d},s{sid:09d},{rfc3339(BASE_MS + t)},M{1 + i // 3},{phase},"
                            f"{rng.randrange(0, 101)},{phase}\n")
            f.write("".join(rows))

    written = 0
    prev = None
    lines: list[str] = []
    with open(f"{out}/activity.jsonl", "w", encoding="utf-8", buffering=1 << 20) as f:
        while written < target:
            if prev is not None and rng.random() < 0.005:
                line = prev
            else:
                u = rng.randrange(n_learners)
                times = sessions[u]
                anchor = times[rng.randrange(len(times))] if times else rng.randrange(0, SPAN_MS - 3_600_000)
                ms = BASE_MS + max(0, anchor + rng.randrange(-420_000, 420_001))
                lang = rng.choice(ENGLISH) if rng.random() < 0.85 else rng.choice(OTHER)
                audio = "null" if rng.random() < 0.05 else \
                    f'"s3://learner-audio/responses/L{u:07d}/{ms}.wav"'
                acc = "" if rng.random() < 0.10 else f'"accuracy":{rng.randrange(0, 10001) / 100},'
                words = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 5)))
                answer = words if rng.random() < 0.6 else " ".join(rng.choice(WORDS) for _ in range(3))
                line = (f'{{"user_id":"L{u:07d}","timestamp":"{rfc3339(ms)}","language":"{lang}",'
                        f'"audio_url":{audio},{acc}"original_text":"{words}","response_text":"{answer}",'
                        f'"session_id":"s-{rng.randrange(1, 10**9):09d}"}}')
                prev = line
            lines.append(line)
            written += len(line) + 1
            if len(lines) >= 20_000:
                f.write("\n".join(lines) + "\n")
                lines.clear()
        if lines:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
