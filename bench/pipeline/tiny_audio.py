#!/usr/bin/env python3
"""Makes a generated dataset's analysis near-instant for the pipeline benchmark.

Writes ONE tiny valid WAV (0.25 s, 16 kHz mono 16-bit, a 220 Hz tone, 8 KB)
at every audio object the activity log links to, under DATA/s3/<bucket>/<key>,
for the allowed buckets. Every object is byte-identical, so the download stage
stores it once (content-addressed) and the analyze stage's durable result cache
answers every item but the first few; download and analyze are then cheap and
the benchmark measures the pipeline's own overhead.

Use with `engage gen-data --no-audio` (no synthetic speech is rendered; the log
and sessions are byte-identical to a run with audio). Links are resolved with
the same rules as engage_model::audio_ref (s3://, virtual-hosted and
path-style https S3 URLs, percent-decoding, key normalisation).

    tiny_audio.py DATA_DIR [--buckets learner-audio]
Prints one JSON line: objects written, links seen, unresolvable links.
"""
import argparse
import io
import json
import math
import os
import struct
import sys
import urllib.parse
import wave

ALIASES = ("audio_url", "audio_link", "audioUrl", "audio")


def tiny_wav() -> bytes:
    rate, secs, hz = 16000, 0.25, 220.0
    n = int(rate * secs)
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / rate))) for i in range(n)
    )
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


def normalise_key(key: str):
    if any(c == "\\" or ord(c) < 32 or ord(c) == 127 for c in key) or len(key) > 1024:
        return None
    parts = []
    for seg in key.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            return None
        parts.append(seg)
    return "/".join(parts) or None


def resolve(url: str):
    """(bucket, key) of an S3 audio link, or None."""
    url = url.strip()
    if url.startswith("s3://"):
        bucket, _, key = url[5:].partition("/")
        return (bucket, normalise_key(key)) if key else None
    for scheme in ("https://", "http://"):
        if url.startswith(scheme):
            rest = url[len(scheme):]
            break
    else:
        return None
    host, sep, path = rest.partition("/")
    if not sep:
        return None
    host = host.lower()
    path = path.split("?")[0].split("#")[0]
    if not host.endswith(".amazonaws.com"):
        return None
    labels = host[: -len(".amazonaws.com")].split(".")
    is_s3 = lambda l: l == "s3" or l.startswith("s3-")
    try:
        if labels and is_s3(labels[0]):
            bucket, sep, key = path.partition("/")
            return (bucket, normalise_key(urllib.parse.unquote(key, errors="strict"))) if sep else None
        pos = next(i for i, l in enumerate(labels) if is_s3(l))
        return (".".join(labels[:pos]), normalise_key(urllib.parse.unquote(path, errors="strict")))
    except (StopIteration, UnicodeDecodeError):
        return None


def audio_links(activity: str, allowed: set) -> tuple[list, int, int]:
    """The distinct (bucket, key) audio objects an activity log links to in
    the allowed buckets, in first-seen order; plus how many links it has and
    how many of them do not resolve."""
    links = unresolved = 0
    targets, seen = [], set()
    with open(activity, "rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                continue
            if not isinstance(rec, dict):
                continue
            for k in ALIASES:
                v = rec.get(k)
                if isinstance(v, str):
                    links += 1
                    r = resolve(v)
                    if r is None or r[1] is None:
                        unresolved += 1
                    elif r[0] in allowed and r not in seen:
                        seen.add(r)
                        targets.append(r)
    return targets, links, unresolved


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--buckets", default="learner-audio")
    a = ap.parse_args()
    allowed = set(a.buckets.split(","))
    root = os.path.join(a.data, "s3")
    body = tiny_wav()
    targets, links, unresolved = audio_links(os.path.join(a.data, "activity.jsonl"), allowed)
    for bucket, key in targets:
        path = os.path.join(root, bucket, *key.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(body)
    print(json.dumps({"objects": len(targets), "links": links, "unresolved": unresolved,
                      "wav_bytes": len(body)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
