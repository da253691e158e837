#!/usr/bin/env python3
"""Generates a realistic JSON Lines activity log for the clean benchmark.

Usage: gen.py SIZE_MB OUT [SEED]

Records look like the product's activity log (docs/data-contracts.md "Activity log"):
~70% English (en, EN, en-IN, en_GB, eng, English), the rest other languages;
field names drawn from every alias; user ids as strings or integers;
timestamps as RFC 3339 or epoch milliseconds; S3 audio links in the three
accepted forms or null; ~1% bad lines (truncated JSON, missing user id, bad
timestamp, non-objects) and ~0.5% exact duplicates. Deterministic per seed.
"""
import json
import random
import sys
from datetime import datetime, timezone

ENGLISH = ["en", "en", "en", "EN", "en-IN", "en_GB", "eng", "English", "en-US"]
OTHER = ["hi", "fr", "es", "ta", "te", "mr", "bn", "de", "enx"]
WORDS = ("the quick brown fox jumps over a lazy dog while my teacher reads "
         "books about water apples school friends morning evening lesson").split()
REGIONS = ["ap-south-1", "us-east-1", "eu-west-1"]
BAD = [
    '{"user_id": "u1", "language": "en", "timestamp": ',          # truncated
    '{"language": "en", "timestamp": "2024-03-01T10:00:00Z"}',    # no user
    '{"user_id": 5, "lang": "en", "timestamp": "yesterday"}',      # bad ts
    '[1, 2, 3]',                                                   # not an object
    'not json at all',
    '{"user_id": "u2", "lang": "en", "ets": 1709287200000, "score": 140}',  # bad accuracy
]


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def audio(rng, uid, ms):
    r = rng.random()
    key = f"responses/{uid}/{ms}.wav"
    if r < 0.1:
        return None
    if r < 0.6:
        return f"s3://learner-audio/{key}"
    region = rng.choice(REGIONS)
    if r < 0.8:
        return f"https://learner-audio.s3.{region}.amazonaws.com/{key}"
    return f"https://s3.{region}.amazonaws.com/learner-audio/{key}"


def record(rng, base_ms):
    uid_n = rng.randrange(1, 50_000)
    uid = uid_n if rng.random() < 0.4 else f"L{uid_n:06d}"
    ms = base_ms + rng.randrange(0, 30 * 24 * 3600 * 1000)
    lang = rng.choice(ENGLISH) if rng.random() < 0.7 else rng.choice(OTHER)
    if rng.random() < 0.5:
        ts = ms
    else:
        ts = datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    text = sentence(rng, rng.randrange(2, 6))
    rec = {
        rng.choice(["user_id", "user_id", "userId", "learner_id", "virtual_id"]): uid,
        rng.choice(["language", "language", "lang", "language_code"]): lang,
        rng.choice(["timestamp", "timestamp", "created_at", "ets"]): ts,
        rng.choice(["audio_url", "audio_url", "audio_link", "audioUrl", "audio"]): audio(rng, uid, ms),
        rng.choice(["accuracy", "score"]): round(rng.uniform(0, 100), 2),
        "original_text": text,
        "response_text": text if rng.random() < 0.6 else sentence(rng, rng.randrange(2, 6)),
        "session_id": f"s-{rng.randrange(1, 10**9):09d}",
        "sub_session_id": f"ss-{rng.randrange(1, 99)}",
        "v": "4.12",
    }
    return json.dumps(rec, separators=(",", ":"))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    target = int(float(sys.argv[1]) * 1_000_000)
    out = sys.argv[2]
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 42)
    base_ms = 1_709_251_200_000  # 2024-03-01
    written = 0
    prev = None
    with open(out, "w", encoding="utf-8", buffering=1 << 20) as f:
        batch = []
        while written < target:
            r = rng.random()
            if r < 0.01:
                line = rng.choice(BAD)
            elif r < 0.015 and prev is not None:
                line = prev
            else:
                line = record(rng, base_ms)
                prev = line
            batch.append(line)
            written += len(line) + 1
            if len(batch) >= 10_000:
                f.write("\n".join(batch) + "\n")
                batch.clear()
        if batch:
            f.write("\n".join(batch) + "\n")


if __name__ == "__main__":
    main()
