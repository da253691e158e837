#!/usr/bin/env python3
"""Regenerates the bad-input corpus under tests/corpus/ (one directory per class).

Every case is small and self-contained:

    CASE/activity.jsonl | activity.json | activity.jsonl.gz   the activity log
    CASE/sessions.csv                                          the sessions CSV
    CASE/s3/learner-audio/CASE/...                             audio (keys are
                                                               prefixed with the
                                                               case name so all
                                                               cases share one
                                                               bucket in the fleet)
    CASE/envelope.bin                                          (envelope cases) a raw
                                                               message body
    CASE/expect.json                                           the expected outcome

The expected outcomes below are written by hand from the data contract
(README "Data contracts", docs/data-contracts.md) and the reasons the code
names (parse.rs RecordError, session.rs row rejects, AudioRefError,
AudioError, download's `audio_missing`, the worker's DLQ reasons); they are
NOT captured from a run of the product. `{{PORT}}` in a file is replaced by
the harness with the port of a loopback listener that must see no connection;
`{{BATCH}}` by the id of a batch that is running.

Run from anywhere: `python3 tests/corpus/make.py`. Output is deterministic.
Only the Python standard library is used (wave, gzip, json).
"""

import gzip
import io
import json
import os
import shutil
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures", "audio")
BUCKET = "learner-audio"

SESSIONS_HEADER = "user_id,session_id,created_at,milestone,lesson,progress,phase"
BASE_SESSIONS = [
    "good1,s1,2024-05-01T10:00:00Z,m1,L1,10,intro",
    "good1,s2,2024-05-01T11:00:00Z,m1,L2,20,practice",
]


def good_wav():
    """0.9 s of the en-us speech fixture at 8 kHz: real speech, 14 KB."""
    with wave.open(os.path.join(FIXTURES, "speech_8k.wav")) as w:
        params = w.getparams()
        frames = w.readframes(7200)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as o:
        o.setnchannels(params.nchannels)
        o.setsampwidth(params.sampwidth)
        o.setframerate(params.framerate)
        o.writeframes(frames)
    return buf.getvalue()


GOOD_WAV = good_wav()


def huge_declared_wav():
    """A WAV whose RIFF and data chunk sizes declare ~4 GiB (about 74 hours at
    8 kHz mono 16-bit) but which holds 0.2 s of samples."""
    wav = bytearray(GOOD_WAV[:44 + 3200])
    assert wav[36:40] == b"data"
    wav[4:8] = (0xFFFFFFF0).to_bytes(4, "little")
    wav[40:44] = (0xFFFFFF00).to_bytes(4, "little")
    return bytes(wav)


def bad_header_wav():
    """A WAV whose fmt chunk declares zero channels and a zero sample rate."""
    wav = bytearray(GOOD_WAV)
    assert wav[12:16] == b"fmt "
    wav[22:24] = (0).to_bytes(2, "little")  # channels
    wav[24:28] = (0).to_bytes(4, "little")  # sample rate
    wav[28:32] = (0).to_bytes(4, "little")  # byte rate
    return bytes(wav)


def rec(user="good1", ts="2024-05-01T10:01:00Z", audio=None, case=None, acc=80, **kw):
    d = {"user_id": user, "language": "en", "timestamp": ts}
    if audio is not None:
        d["audio_url"] = audio
    if acc is not None:
        d["accuracy"] = acc
    d.update(kw)
    return d


def line(obj):
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):
        return obj.encode()
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class Case:
    """One case with the two good responses of learner `good1` unless told otherwise."""

    def __init__(self, name, description, good=True):
        self.name = name
        self.description = description
        self.good_audio = f"s3://{BUCKET}/{name}/good.wav"
        self.lines = []
        if good:
            self.lines = [
                rec(audio=self.good_audio, acc=80),
                rec(ts="2024-05-01T11:02:00Z", audio=self.good_audio, acc=60),
            ]
        self.sessions = [SESSIONS_HEADER] + (list(BASE_SESSIONS) if good else [])
        self.sessions_bytes = None
        self.audio = {"good.wav": GOOD_WAV} if good else {}
        self.activity_name = "activity.jsonl"
        self.activity_bytes = None
        self.envelope = None
        # Expected outcome, from the baseline of two good responses.
        base = 2 if good else 0
        self.summary = {
            "activity": {
                "read": base,
                "kept": base,
                "non_english": 0,
                "deselected": 0,
                "duplicates": 0,
                "rejected": {},
            },
            "sessions": {"kept": base, "rejected": {}},
            "matched": base,
            "unmatched": 0,
            "no_audio": 0,
            "analyzed": base,
            "failed": {},
            "learners": 1 if good else 0,
            "report_rows": base,
        }
        self.report_users = ["good1"] if good else []
        self.extra = {}

    # -- building ---------------------------------------------------------
    def add(self, *objs):
        self.lines.extend(objs)
        return self

    def rejected(self, reason, n):
        """`n` more lines read and rejected with `reason`."""
        a = self.summary["activity"]
        a["read"] += n
        a["rejected"][reason] = a["rejected"].get(reason, 0) + n
        return self

    def failed(self, reason, n):
        """`n` more kept, matched responses with audio whose item fails with `reason`."""
        a = self.summary["activity"]
        a["read"] += n
        a["kept"] += n
        self.summary["matched"] += n
        self.summary["failed"][reason] = self.summary["failed"].get(reason, 0) + n
        return self

    def session_rejected(self, reason, n):
        r = self.summary["sessions"]["rejected"]
        r[reason] = r.get(reason, 0) + n
        return self

    # -- writing ----------------------------------------------------------
    def write(self):
        d = os.path.join(HERE, self.name)
        if os.path.exists(d):
            shutil.rmtree(d)
        os.makedirs(d)
        if self.envelope is None or self.lines:
            body = self.activity_bytes
            if body is None:
                body = b"".join(line(l) + b"\n" for l in self.lines)
            with open(os.path.join(d, self.activity_name), "wb") as f:
                f.write(body)
            sb = self.sessions_bytes
            if sb is None:
                sb = ("\n".join(self.sessions) + "\n").encode()
            with open(os.path.join(d, "sessions.csv"), "wb") as f:
                f.write(sb)
        for key, data in self.audio.items():
            p = os.path.join(d, "s3", BUCKET, self.name, key)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
        if self.envelope is not None:
            with open(os.path.join(d, "envelope.bin"), "wb") as f:
                f.write(self.envelope)
        exp = {"class": self.name, "description": self.description}
        exp.update(self.extra)
        if "outcome" not in exp:
            exp["outcome"] = "complete"
        if exp["outcome"] == "complete":
            exp["activity_file"] = self.activity_name
            exp["summary"] = self.summary
            exp["report_users"] = self.report_users
        elif self.envelope is None:
            exp["activity_file"] = self.activity_name
        with open(os.path.join(d, "expect.json"), "w") as f:
            json.dump(exp, f, indent=2, ensure_ascii=False)
            f.write("\n")


CASES = []


def case(name, description, good=True):
    c = Case(name, description, good)
    CASES.append(c)
    return c


# ---------------------------------------------------------------------------
# Activity log: syntax and encoding
# ---------------------------------------------------------------------------

case("malformed_json", "Lines that are not JSON are rejected as invalid_json; the good lines around them are kept.").add(
    b'{"user_id":"bad1","language":"en",',
    b"not json at all",
    b'{"user_id":"bad1" "language":"en"}',
).rejected("invalid_json", 3)

case("not_an_object", "JSON values that are not objects are rejected as not_an_object.").add(
    b"[1,2,3]", b'"a string"', b"42", b"null",
).rejected("not_an_object", 4)

case("non_utf8", "A line with bytes that are not UTF-8 (Latin-1 and a lone 0xFF) is rejected as invalid_utf8.").add(
    b'{"user_id":"bad1","language":"en","timestamp":"2024-05-01T10:05:00Z","original_text":"caf\xe9"}',
    b'{"user_id":"\xff","language":"en","timestamp":"2024-05-01T10:05:00Z"}',
).rejected("invalid_utf8", 2)

c = case("line_too_long", "A 1.2 MiB line (over the 1 MiB default) is rejected as line_too_long without being buffered; the good lines before and after it are kept. Gzipped so the corpus stays small.")
big = rec(user="bad1", ts="2024-05-01T10:05:00Z", original_text="x" * (1200 * 1024))
c.lines.insert(1, big)
c.rejected("line_too_long", 1)
c.activity_name = "activity.jsonl.gz"
c.activity_bytes = gzip.compress(b"".join(line(l) + b"\n" for l in c.lines), mtime=0)

c = case("truncated_lines", "A line cut mid-object in the middle of the file and a last line cut without its newline: both invalid_json; the good lines are kept.")
c.lines.insert(1, b'{"user_id":"bad1","language":"en","timestamp":"2024-05-01T10:0')
c.activity_bytes = b"".join(line(l) + b"\n" for l in c.lines) + b'{"user_id":"bad2","language":"en","time'
c.rejected("invalid_json", 2)

c = case("blank_and_whitespace_lines", "Blank and whitespace-only lines are skipped, not counted as read and not rejected.")
c.activity_bytes = b"\n\n" + line(c.lines[0]) + b"\n   \n\t\n" + line(c.lines[1]) + b"\n\n"

# ---------------------------------------------------------------------------
# Activity log: containers
# ---------------------------------------------------------------------------

c = case("truncated_gzip", "A gzip activity log cut in the middle of its compressed stream. The input cannot be read to its end: `engage run` fails with a one-line error and exit 1 (nothing that looks complete is written); the fleet dead-letters the batch's clean job as poison immediately (a truncated object is permanent, retrying it cannot help).")
many = [rec(ts=f"2024-05-01T10:{m:02d}:00Z", audio=c.good_audio) for m in range(1, 59)]
full = gzip.compress(b"".join(line(l) + b"\n" for l in many * 20), mtime=0)
c.activity_name = "activity.jsonl.gz"
c.activity_bytes = full[: len(full) // 2]
c.extra = {
    "outcome": "input_error",
    "run_error": "reading",
    "fleet_dlq": {"stage": "clean", "reason": "poison", "error_contains": "gzip"},
}

c = case("truncated_json_array", "A JSON-array activity log cut inside its third element (no closing `]`): the two whole elements are kept; the cut element is one invalid_json item and the missing `]` another (the reader reports every structural fault as an item, README: Data contracts).")
c.activity_name = "activity.json"
c.activity_bytes = b"[" + line(c.lines[0]) + b",\n" + line(c.lines[1]) + b',\n{"user_id":"bad1","language":"en","timest'
c.rejected("invalid_json", 2)

c = case("json_array_structural_faults", "A JSON-array log with an empty element and a trailing comma: each fault is one invalid_json item; the objects are kept.")
c.activity_name = "activity.json"
c.activity_bytes = b"[" + line(c.lines[0]) + b",," + line(c.lines[1]) + b",]"
# `[a,,b,]`: the empty element between the commas and the trailing comma.
c.rejected("invalid_json", 2)

# ---------------------------------------------------------------------------
# Activity log: fields
# ---------------------------------------------------------------------------

case("wrong_field_types", "Fields of the wrong JSON type are rejected by name: user_id boolean/fraction/array → bad_user_id, accuracy as a string → bad_accuracy, audio_url as a number → bad_audio_url, timestamp as a boolean → bad_timestamp; a non-string language is not English (dropped, counted).").add(
    {"user_id": True, "language": "en", "timestamp": "2024-05-01T10:05:00Z"},
    {"user_id": 1.5, "language": "en", "timestamp": "2024-05-01T10:05:00Z"},
    {"user_id": ["a"], "language": "en", "timestamp": "2024-05-01T10:05:00Z"},
    rec(user="bad1", ts="2024-05-01T10:05:00Z", acc="85"),
    rec(user="bad1", ts="2024-05-01T10:05:00Z", audio=5),
    rec(user="bad1", ts=True),
    {"user_id": "bad1", "language": 5, "timestamp": "2024-05-01T10:05:00Z"},
).rejected("bad_user_id", 3).rejected("bad_accuracy", 1).rejected("bad_audio_url", 1).rejected("bad_timestamp", 1)
CASES[-1].summary["activity"]["read"] += 1
CASES[-1].summary["activity"]["non_english"] += 1

case("missing_user_id", "A record without user_id, with null and with a blank one: missing_user_id.").add(
    {"language": "en", "timestamp": "2024-05-01T10:05:00Z"},
    {"user_id": None, "language": "en", "timestamp": "2024-05-01T10:05:00Z"},
    {"user_id": "   ", "language": "en", "timestamp": "2024-05-01T10:05:00Z"},
).rejected("missing_user_id", 3)

case("missing_timestamp", "A record without a timestamp, with null and with an empty string: missing_timestamp.").add(
    {"user_id": "bad1", "language": "en"},
    {"user_id": "bad1", "language": "en", "timestamp": None},
    {"user_id": "bad1", "language": "en", "timestamp": ""},
).rejected("missing_timestamp", 3)

case("unparseable_timestamp", "Timestamps that do not parse: words, an impossible date, a fractional epoch: bad_timestamp.").add(
    rec(user="bad1", ts="yesterday"),
    rec(user="bad1", ts="2024-13-45T25:61:00Z"),
    rec(user="bad1", ts=1714557900000.5),
    rec(user="bad1", ts="2024-05-01 10:05"),
).rejected("bad_timestamp", 4)

case("out_of_range_timestamp", "Timestamps outside the representable range (epoch ms far beyond year 2262, a huge float, u64 max, a year-99999 RFC 3339 string): bad_timestamp, never a panic or a wrapped date.").add(
    rec(user="bad1", ts=99999999999999999),
    rec(user="bad1", ts=18446744073709551615),
    rec(user="bad1", ts=1e300),
    rec(user="bad1", ts="99999-01-01T00:00:00Z"),
    rec(user="bad1", ts=-99999999999999999),
).rejected("bad_timestamp", 5)

case("bad_accuracy", "Accuracy above 100, below 0, or not a number: bad_accuracy.").add(
    rec(user="bad1", ts="2024-05-01T10:05:00Z", acc=101),
    rec(user="bad1", ts="2024-05-01T10:05:00Z", acc=-0.5),
    rec(user="bad1", ts="2024-05-01T10:05:00Z", acc=True),
).rejected("bad_accuracy", 3)

c = case("duplicates", "The same response (same user, instant and audio link) repeated: kept once, the repeats counted as duplicates. The same instant written differently (epoch ms) is the same response.")
c.add(dict(c.lines[0]), dict(c.lines[0]), dict(c.lines[1]))
c.add(rec(ts=1714557660000, audio=c.good_audio, acc=80))  # 2024-05-01T10:01:00Z in epoch ms
c.summary["activity"]["read"] += 4
c.summary["activity"]["duplicates"] += 4

c = case("all_records_rejected", "A log in which every record is rejected: nothing is kept; the file never proves to be an activity log, so its items count as `not_an_activity_log` with one reject line and no excerpt; yet the batch completes with an empty report (a batch with no learner must not wait forever).", good=False)
c.sessions = [SESSIONS_HEADER] + list(BASE_SESSIONS)
c.add(b"not json", {"user_id": "bad1", "language": "en"}, b"[1]")
c.rejected("not_an_activity_log", 3)
c.summary["sessions"]["kept"] = 2

case("non_english", "Records in another language or with no language are dropped and counted as non_english, not rejected.").add(
    {"user_id": "bad1", "language": "fr", "timestamp": "2024-05-01T10:05:00Z"},
    {"user_id": "bad1", "timestamp": "2024-05-01T10:05:00Z"},
    {"user_id": "bad1", "language": "enx", "timestamp": "2024-05-01T10:05:00Z"},
)
CASES[-1].summary["activity"]["read"] += 3
CASES[-1].summary["activity"]["non_english"] += 3

# ---------------------------------------------------------------------------
# Sessions CSV
# ---------------------------------------------------------------------------

c = case("sessions_missing_columns", "A sessions header without the required `progress` column: nothing in the file can be trusted. `engage run` fails with a one-line error (exit 1); the fleet dead-letters the batch as poison.")
c.sessions = ["user_id,session_id,created_at,milestone,lesson,phase"] + [
    "good1,s1,2024-05-01T10:00:00Z,m1,L1,intro",
    "good1,s2,2024-05-01T11:00:00Z,m1,L2,practice",
]
c.extra = {
    "outcome": "input_error",
    "run_error": "lacks required column \"progress\"",
    "fleet_dlq": {"stage": "clean", "reason": "poison", "error_contains": "lacks required column"},
}

c = case("sessions_empty_file", "A zero-byte sessions file (no header at all): `engage run` fails with a one-line error; the fleet dead-letters the batch as poison.")
c.sessions_bytes = b""
c.extra = {
    "outcome": "input_error",
    "run_error": "sessions",
    "fleet_dlq": {"stage": "clean", "reason": "poison", "error_contains": "sessions"},
}

c = case("sessions_bad_rows", "Bad sessions rows are rejected by name and the good rows kept: too few fields → bad_csv_row, empty user → missing_user_id, empty session → missing_session_id, empty created_at → missing_timestamp, unparseable created_at → bad_timestamp, no phase and no lesson → missing_phase.")
c.sessions += [
    "bad1,s9",
    ",s3,2024-05-01T12:00:00Z,m1,L3,30,review",
    "bad1,,2024-05-01T12:00:00Z,m1,L3,30,review",
    "bad1,s4,,m1,L3,30,review",
    "bad1,s5,not a date,m1,L3,30,review",
    "bad1,s6,2024-05-01T12:00:00Z,m1,,30,",
]
c.session_rejected("bad_csv_row", 1).session_rejected("missing_user_id", 1).session_rejected(
    "missing_session_id", 1).session_rejected("missing_timestamp", 1).session_rejected(
    "bad_timestamp", 1).session_rejected("missing_phase", 1)

c = case("sessions_non_utf8_row", "A sessions row whose user id is not UTF-8 is a bad_csv_row; the other rows are kept.")
c.sessions_bytes = ("\n".join(c.sessions) + "\n").encode() + b"b\xffd,s7,2024-05-01T12:00:00Z,m1,L3,30,review\n"
c.session_rejected("bad_csv_row", 1)

c = case("sessions_bom", "A sessions CSV starting with a UTF-8 BOM: the header is still recognised; nothing is rejected.")
c.sessions_bytes = b"\xef\xbb\xbf" + ("\n".join(c.sessions) + "\n").encode()

c = case("sessions_crlf", "A sessions CSV with CRLF line endings (and a BOM): values carry no stray \\r, every session matches.")
c.sessions_bytes = b"\xef\xbb\xbf" + ("\r\n".join(c.sessions) + "\r\n").encode()

# ---------------------------------------------------------------------------
# Audio links
# ---------------------------------------------------------------------------

c = case("ssrf_loopback", "An audio link to a loopback HTTP server: unsupported_link, and the loopback listener proves nothing connected to it.")
c.add(rec(ts="2024-05-01T10:03:00Z", audio="http://127.0.0.1:{{PORT}}/audio.wav"),
      rec(ts="2024-05-01T10:04:00Z", audio="https://127.0.0.1:{{PORT}}/learner-audio/x.wav"),
      rec(ts="2024-05-01T10:05:00Z", audio="http://localhost:{{PORT}}/learner-audio/x.wav"))
c.failed("unsupported_link", 3)
c.extra = {"listener": True}

c = case("ssrf_metadata", "An audio link to the cloud metadata endpoint (169.254.169.254, also as a decimal IP and IPv6): unsupported_link, never fetched.")
c.add(rec(ts="2024-05-01T10:03:00Z", audio="http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
      rec(ts="2024-05-01T10:04:00Z", audio="http://2852039166/latest/meta-data/"),
      rec(ts="2024-05-01T10:05:00Z", audio="http://[fd00:ec2::254]/latest/meta-data/"))
c.failed("unsupported_link", 3)

c = case("ssrf_file_url", "Audio links with the file: scheme and other non-S3 schemes: unsupported_link; /etc/passwd is never read.")
c.add(rec(ts="2024-05-01T10:03:00Z", audio="file:///etc/passwd"),
      rec(ts="2024-05-01T10:04:00Z", audio="file://localhost/etc/passwd"),
      rec(ts="2024-05-01T10:05:00Z", audio="gopher://127.0.0.1:6379/_FLUSHALL"))
c.failed("unsupported_link", 3)

c = case("ssrf_lookalike_host", "Hosts that only look like S3 (amazonaws.com as a sub-domain of another host, credentials in the authority): unsupported_link.")
c.add(rec(ts="2024-05-01T10:03:00Z", audio="https://learner-audio.s3.amazonaws.com.evil.example/x.wav"),
      rec(ts="2024-05-01T10:04:00Z", audio="https://evil.example/learner-audio.s3.amazonaws.com/x.wav"))
c.failed("unsupported_link", 2)

c = case("key_traversal", "`..` segments in the key of an allowed bucket: invalid_key; nothing outside the bucket is read.")
c.add(rec(ts="2024-05-01T10:03:00Z", audio=f"s3://{BUCKET}/../../etc/passwd"),
      rec(ts="2024-05-01T10:04:00Z", audio=f"s3://{BUCKET}/key_traversal/../../../etc/passwd"),
      rec(ts="2024-05-01T10:05:00Z", audio=f"s3://{BUCKET}/a\\..\\..\\etc\\passwd"))
c.failed("invalid_key", 3)

c = case("key_percent_encoded", "Percent-encoded traversal in an S3 https link (`%2e%2e`, `..%2f`) is decoded before the check: invalid_key; a bad escape is invalid_key too.")
c.add(rec(ts="2024-05-01T10:03:00Z", audio=f"https://s3.us-east-1.amazonaws.com/{BUCKET}/%2e%2e/%2e%2e/etc/passwd"),
      rec(ts="2024-05-01T10:04:00Z", audio=f"https://{BUCKET}.s3.us-east-1.amazonaws.com/..%2f..%2fetc%2fpasswd"),
      rec(ts="2024-05-01T10:05:00Z", audio=f"https://{BUCKET}.s3.amazonaws.com/a%zz.wav"),
      rec(ts="2024-05-01T10:02:00Z", audio=f"https://{BUCKET}.s3.amazonaws.com/a%00b.wav"))
c.failed("invalid_key", 4)

c = case("key_absolute", "An absolute-looking key (`s3://bucket//etc/passwd`) is normalised to a key inside the bucket (etc/passwd), which does not exist there: audio_missing; an empty bucket name is invalid_bucket.")
c.add(rec(ts="2024-05-01T10:03:00Z", audio=f"s3://{BUCKET}//etc/passwd"),
      rec(ts="2024-05-01T10:04:00Z", audio="s3:///etc/passwd"))
c.failed("audio_missing", 1).failed("invalid_bucket", 1)

c = case("bucket_not_allowed", "A well-formed S3 link to a bucket that is not on the allow-list: bucket_not_allowed, even though the object exists in the S3 root.")
c.add(rec(ts="2024-05-01T10:03:00Z", audio="s3://other-bucket/bucket_not_allowed/good.wav"))
c.failed("bucket_not_allowed", 1)
c.extra = {"extra_buckets": {"other-bucket": {"bucket_not_allowed/good.wav": "good.wav"}}}

c = case("store_link", "A `store://` link names an object in the pipeline's own store (outputs, other batches' audio, the item log): not a source bucket, so unsupported_link. `engage run` does this today; the fleet reads the store without any allow-list.")
c.add(rec(ts="2024-05-01T10:03:00Z", audio="store://batches/x/spec.json"))
c.failed("unsupported_link", 1)

# ---------------------------------------------------------------------------
# Audio content
# ---------------------------------------------------------------------------

c = case("audio_zero_byte", "A zero-byte audio object: audio_empty.")
c.add(rec(ts="2024-05-01T10:03:00Z", audio=f"s3://{BUCKET}/audio_zero_byte/empty.wav"))
c.audio["empty.wav"] = b""
c.failed("audio_empty", 1)

c = case("audio_truncated", "A WAV cut after 3000 bytes (its header declares the full length): audio_truncated, never analyzed as partial audio.")
c.add(rec(ts="2024-05-01T10:03:00Z", audio=f"s3://{BUCKET}/audio_truncated/cut.wav"))
c.audio["cut.wav"] = open(os.path.join(FIXTURES, "truncated.wav"), "rb").read()
c.failed("audio_truncated", 1)

c = case("audio_garbage", "Text and random bytes under audio names: audio_unrecognised.")
c.add(rec(ts="2024-05-01T10:03:00Z", audio=f"s3://{BUCKET}/audio_garbage/text.wav"),
      rec(ts="2024-05-01T10:04:00Z", audio=f"s3://{BUCKET}/audio_garbage/noise.mp3"))
c.audio["text.wav"] = open(os.path.join(FIXTURES, "not_audio.wav"), "rb").read()
c.audio["noise.mp3"] = bytes((i * 7919 + 13) % 251 for i in range(4096))
c.failed("audio_unrecognised", 2)

c = case("audio_huge_declared", "A WAV whose RIFF and data sizes declare ~4 GiB (74 h) but that holds 0.2 s: refused by name from its header, before anything is decoded or allocated for the declared size: audio_too_long (the declared duration exceeds the limit).")
c.add(rec(ts="2024-05-01T10:03:00Z", audio=f"s3://{BUCKET}/audio_huge_declared/huge.wav"))
c.audio["huge.wav"] = huge_declared_wav()
c.failed("audio_too_long", 1)

c = case("audio_bad_wav_header", "A WAV whose fmt chunk declares 0 channels and a 0 Hz sample rate: the container parser refuses the fmt chunk itself, so it is `audio_corrupt` (headers that parse but declare impossible rates, channels or lengths are `audio_bad_header`: see the fuzz regression and crates/audio's tests).")
c.add(rec(ts="2024-05-01T10:03:00Z", audio=f"s3://{BUCKET}/audio_bad_wav_header/zero.wav"))
c.audio["zero.wav"] = bad_header_wav()
c.failed("audio_corrupt", 1)

c = case("audio_missing", "An allowed link whose object does not exist (S3 404): audio_missing; the batch still completes.")
c.add(rec(ts="2024-05-01T10:03:00Z", audio=f"s3://{BUCKET}/audio_missing/nope.wav"))
c.failed("audio_missing", 1)

c = case("audio_silent", "Digital silence is decodable: analyzed (not failed), so the learner's report still has the row.")
c.add(rec(ts="2024-05-01T10:03:00Z", audio=f"s3://{BUCKET}/audio_silent/silence.wav"))
c.audio["silence.wav"] = open(os.path.join(FIXTURES, "silence.wav"), "rb").read()
c.summary["activity"]["read"] += 1
c.summary["activity"]["kept"] += 1
c.summary["matched"] += 1
c.summary["analyzed"] += 1

# ---------------------------------------------------------------------------
# Learner ids
# ---------------------------------------------------------------------------

c = case("learner_id_hash_prefix", "A learner id starting with `#` is an ordinary id: kept, matched and reported by both paths (it must not be mistaken for a comment in any line-oriented file).")
c.add(rec(user="#u1", ts="2024-05-01T10:03:00Z", audio=c.good_audio))
c.sessions.append("#u1,h1,2024-05-01T10:00:00Z,m1,L1,10,intro")
c.summary["activity"]["read"] += 1
c.summary["activity"]["kept"] += 1
c.summary["sessions"]["kept"] += 1
c.summary["matched"] += 1
c.summary["analyzed"] += 1
c.summary["learners"] += 1
c.summary["report_rows"] += 1
c.report_users = ["#u1", "good1"]

c = case("learner_id_hash_selected", "The same `#`-prefixed learner, selected by an explicit id list (`--users '#u1,good1'`): selected, kept and reported by both paths. The fleet writes the resolved selection as one id per line and reads it back with `#` lines as comments, so today it drops `#u1` as deselected while `engage run` keeps it.")
c.add(rec(user="#u1", ts="2024-05-01T10:03:00Z", audio=c.good_audio))
c.sessions.append("#u1,h1,2024-05-01T10:00:00Z,m1,L1,10,intro")
c.summary["activity"]["read"] += 1
c.summary["activity"]["kept"] += 1
c.summary["sessions"]["kept"] += 1
c.summary["matched"] += 1
c.summary["analyzed"] += 1
c.summary["learners"] += 1
c.summary["report_rows"] += 1
c.report_users = ["#u1", "good1"]
c.extra = {"users": ["#u1", "good1"]}

c = case("learner_id_newline", "Learner ids with an embedded newline, carriage return or NUL: ids may hold any characters, so both paths keep them under one rule (the fleet's stored selection is exact JSON, and CSV outputs quote such cells); the one with a session is matched and reported, the others are unmatched.")
c.add(rec(user="u\n2", ts="2024-05-01T10:03:00Z", audio=c.good_audio),
      rec(user="u\r3", ts="2024-05-01T10:04:00Z", audio=c.good_audio),
      rec(user="u\u00002", ts="2024-05-01T10:05:00Z", audio=c.good_audio))
c.sessions.append('"u\n2",n1,2024-05-01T10:00:00Z,m1,L1,10,intro')
c.summary["activity"]["read"] += 3
c.summary["activity"]["kept"] += 3
c.summary["sessions"]["kept"] += 1
c.summary["matched"] += 1
c.summary["unmatched"] += 2
c.summary["analyzed"] += 1
c.summary["learners"] += 3  # every kept learner counts, matched or not
c.summary["report_rows"] += 1
c.report_users = ["good1", "u\n2"]

c = case("csv_injection_ids", "Learner ids that a spreadsheet would run as formulas (`=1+2`, `@SUM(A1)`, `+1`, `-1+2`) are kept, but every CSV cell starting with = + - @ (or tab/CR) is written with a leading `'`; report.json (not a spreadsheet format) keeps the raw ids.")
for i, u in enumerate(["=1+2", "@SUM(A1)", "+1", "-1+2"]):
    c.add(rec(user=u, ts=f"2024-05-01T10:02:0{i}Z", audio=c.good_audio))
    c.sessions.append(f"{u},x{i},2024-05-01T10:00:00Z,m1,L1,10,intro")
c.summary["activity"]["read"] += 4
c.summary["activity"]["kept"] += 4
c.summary["sessions"]["kept"] += 4
c.summary["matched"] += 4
c.summary["analyzed"] += 4
c.summary["learners"] += 4
c.summary["report_rows"] += 4
c.report_users = ["'+1", "'-1+2", "'=1+2", "'@SUM(A1)", "good1"]
c.extra = {"raw_ids_in_json": ["=1+2", "@SUM(A1)", "+1", "-1+2"]}

# ---------------------------------------------------------------------------
# Fleet-only: input URIs and envelopes
# ---------------------------------------------------------------------------

def envelope_case(name, description, stage, body, dlq_reason, error_contains, pending=None):
    c = case(name, description, good=False)
    c.envelope = body
    c.extra = {
        "outcome": "dead_letter",
        "modes": ["fleet"],
        "stage": stage,
        "fleet_dlq": {"stage": stage, "reason": dlq_reason, "error_contains": error_contains},
    }
    if pending:
        c.extra["pending"] = pending
    return c

envelope_case("envelope_not_json", "A message body that is not JSON: dead-lettered at once as undecodable.",
              "clean", b"{this is not json", "undecodable", "undecodable envelope")
envelope_case("envelope_unknown_version", "A well-formed envelope of version 2: dead-lettered as undecodable naming the version.",
              "clean", json.dumps({"v": 2, "batch_id": "b-corpus-v2", "job_id": "clean:plan:b-corpus-v2", "attempt": 0, "trace_id": "t", "job": {"kind": "batch", "activity": ["s3://inputs/x.jsonl"], "sessions": "s3://inputs/x.csv"}}).encode(),
              "undecodable", "unsupported envelope version 2")
envelope_case("envelope_unknown_field", "An envelope with an unknown top-level field: undecodable (the envelope denies unknown fields).",
              "match", json.dumps({"v": 1, "batch_id": "b-corpus-uf", "job_id": "j", "trace_id": "t", "job": {}, "admin": True}).encode(),
              "undecodable", "unknown field")
envelope_case("envelope_wrong_job_schema", "A valid envelope whose job is not this stage's schema (unknown kind): poison.",
              "clean", json.dumps({"v": 1, "batch_id": "b-corpus-ws", "job_id": "clean:x", "attempt": 0, "trace_id": "t", "job": {"kind": "drop_tables"}}).encode(),
              "poison", "does not match this stage's schema")
envelope_case("input_uri_not_allowed", "A batch published straight to the broker (bypassing `engage enqueue`, which refuses it) whose activity URI names a local file outside every allowed input prefix (file:///proc/self/environ): the clean worker dead-letters it as poison with reason `input_not_allowed` and never reads it, so no environment variable can leak into rejects.jsonl excerpts.",
              "clean", json.dumps({"v": 1, "batch_id": "b-corpus-environ", "job_id": "plan:b-corpus-environ", "attempt": 0, "trace_id": "t", "job": {"kind": "batch", "activity": ["file:///proc/self/environ"], "sessions": "s3://inputs/x.csv", "selection": {"kind": "all"}}}).encode(),
              "poison", "input_not_allowed")
envelope_case("envelope_forged_path", "A forged analyze job whose content hash is a path (`../../batches/…/batch.json`) and whose job id names another job: dead-lettered as poison naming `forged_job` before any key or path is built from it.",
              "analyze", json.dumps({"v": 1, "batch_id": "b-corpus-fp", "job_id": "analyze:b-corpus-fp:r1", "attempt": 0, "trace_id": "t", "job": {"response_id": "r1", "user_id": "u1", "content_hash": "../../batches/b-corpus-fp/batch.json", "format": "wav"}}).encode(),
              "poison", "forged_job")
envelope_case("envelope_forged_batch_id", "A forged match job whose batch id climbs out of its directory (`../other`): dead-lettered as poison naming `forged_job`.",
              "match", json.dumps({"v": 1, "batch_id": "../other", "job_id": "match:../other:f000-r0000:0", "attempt": 0, "trace_id": "t", "job": {"piece": "f000-r0000", "partition": 0}}).encode(),
              "poison", "forged_job")
c = case("envelope_forged_report", "A forged aggregate job {\"kind\":\"report\"} for this case's batch, published right after the batch is enqueued, so it is looked at before the batch can complete: refused (dead-lettered as poison naming `forged_job`) instead of writing the batch's outputs early; the batch then completes with its true outputs.")
c.envelope = b'{"v":1,"batch_id":"{{BATCH}}","job_id":"report:{{BATCH}}","attempt":0,"trace_id":"forged","job":{"kind":"report"}}'
c.extra = {
    "modes": ["fleet"],
    "stage": "aggregate",
    "fleet_dlq": {"stage": "aggregate", "reason": "poison", "error_contains": "forged_job"},
}

def main():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    for entry in os.listdir(HERE):
        p = os.path.join(HERE, entry)
        if os.path.isdir(p) and entry not in names:
            shutil.rmtree(p)
    for c in CASES:
        c.write()
    print(f"{len(CASES)} cases written under {HERE}")


if __name__ == "__main__":
    main()
