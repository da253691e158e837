#!/usr/bin/env python3
"""The same English filter in plain Python json + pandas, for the clean benchmark.

Usage: pandas_clean.py IN OUT

Reads JSON Lines in chunks (bounded memory, as a careful pandas user would),
skips lines that are not JSON objects, coalesces the language aliases, keeps
English records (en, en-*, en_*, eng, english; case-insensitive) and writes
them as JSON Lines.
"""
import json
import sys

import pandas as pd

CHUNK = 200_000
ENGLISH = r"^(?:en|eng|english|en[-_].+)$"


def flush(rows, out):
    if not rows:
        return 0
    df = pd.DataFrame(rows)
    lang = pd.Series(pd.NA, index=df.index, dtype="object")
    for col in ("language", "lang", "language_code"):
        if col in df.columns:
            lang = lang.fillna(df[col])
    mask = lang.astype("string").str.strip().str.lower().str.match(ENGLISH).fillna(False)
    kept = df[mask.astype(bool)]
    if len(kept):
        text = kept.to_json(orient="records", lines=True)
        out.write(text if text.endswith("\n") else text + "\n")
    return len(kept)


def main():
    src, dst = sys.argv[1], sys.argv[2]
    rows, kept, bad = [], 0, 0
    with open(src, encoding="utf-8", errors="replace") as f, open(dst, "w") as out:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if not isinstance(obj, dict):
                bad += 1
                continue
            rows.append(obj)
            if len(rows) >= CHUNK:
                kept += flush(rows, out)
                rows = []
        kept += flush(rows, out)
    print(json.dumps({"kept": kept, "bad": bad}))


if __name__ == "__main__":
    main()
