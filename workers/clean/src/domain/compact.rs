//! The compact spool: a kept record's `matched.csv` fields (response id,
//! learner, instant, audio link, accuracy) as one binary frame, for
//! `engage run --stop-after match`, whose partition spools are scratch files
//! of one process read back by the same binary.
//!
//! Writing JSON Lines that the match then parses again was about a third of
//! the match's CPU and most of the spool's bytes; a frame is written with
//! a few copies and read back without parsing. The fleet's clean stage keeps
//! writing JSON Lines ([`ActivityRecord`](engage_model::ActivityRecord)s):
//! there the partition files are a stored contract between stages.
//!
//! A frame (integers little endian): the 16 id bytes, the `i64` timestamp
//! (ns), a flags byte (bit 0: audio link present, bit 1: accuracy present),
//! the `f64` accuracy when present, a `u32` length and the learner's UTF-8
//! bytes, then when present a `u32` length and the audio link's bytes.
//! Reading checks every length and UTF-8, so a truncated or corrupt file is
//! an error, never a panic or a wrong row.

use super::parse::RecordView;

const HAS_AUDIO: u8 = 1;
const HAS_ACCURACY: u8 = 2;

/// One record read back from a compact spool, borrowing the spool's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactRow<'a> {
    /// The response id's bytes (the record's `response_id` is their hex).
    pub id: [u8; 16],
    /// The response's instant (ns since epoch, UTC).
    pub timestamp: i64,
    /// The learner.
    pub user_id: &'a str,
    /// The audio link as written, if any.
    pub audio_url: Option<&'a str>,
    /// Accuracy 0–100, if present.
    pub accuracy: Option<f64>,
}

impl CompactRow<'_> {
    /// The response id as written in outputs: 32 lowercase hex digits.
    pub fn response_id(&self) -> ResponseIdHex {
        ResponseIdHex(super::parse::hex_id(&self.id))
    }
}

/// A response id's 32 lowercase hex digits, on the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseIdHex([u8; 32]);

impl ResponseIdHex {
    /// The digits as text.
    pub fn as_str(&self) -> &str {
        // Hex digits are ASCII; the fallback is unreachable.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Why a compact spool could not be read (or a record not written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    /// The bytes end inside a frame.
    #[error("compact spool truncated in the frame at byte {offset}")]
    Truncated {
        /// Where the frame starts.
        offset: usize,
    },
    /// A text field is not UTF-8.
    #[error("compact spool frame at byte {offset} holds text that is not UTF-8")]
    NotUtf8 {
        /// Where the frame starts.
        offset: usize,
    },
    /// The flags byte has bits no writer sets.
    #[error("compact spool frame at byte {offset} has unknown flags {flags:#x}")]
    BadFlags {
        /// Where the frame starts.
        offset: usize,
        /// The flags byte.
        flags: u8,
    },
    /// A field is longer than a `u32` length can say (not written).
    #[error("a field of {0} bytes is too long for the compact spool")]
    TooLong(usize),
    /// A record's response id is not 32 hex digits (not written).
    #[error("response id is not 32 hex digits")]
    BadId,
}

/// Appends `record`'s frame to `out`.
pub fn encode(record: &RecordView<'_>, out: &mut Vec<u8>) -> Result<(), CompactError> {
    encode_fields(
        &record.id,
        record.timestamp,
        &record.user_id,
        record.audio_url.as_deref(),
        record.accuracy,
        out,
    )
}

/// Appends the frame of these fields to `out` (what [`encode`] writes for a
/// record with them).
pub fn encode_fields(
    id: &[u8; 16],
    timestamp: i64,
    user_id: &str,
    audio_url: Option<&str>,
    accuracy: Option<f64>,
    out: &mut Vec<u8>,
) -> Result<(), CompactError> {
    let len = |s: &str| u32::try_from(s.len()).map_err(|_| CompactError::TooLong(s.len()));
    let user_len = len(user_id)?;
    let audio_len = audio_url.map(len).transpose()?;
    out.extend_from_slice(id);
    out.extend_from_slice(&timestamp.to_le_bytes());
    let flags = if audio_url.is_some() { HAS_AUDIO } else { 0 }
        | if accuracy.is_some() { HAS_ACCURACY } else { 0 };
    out.push(flags);
    if let Some(a) = accuracy {
        out.extend_from_slice(&a.to_le_bytes());
    }
    out.extend_from_slice(&user_len.to_le_bytes());
    out.extend_from_slice(user_id.as_bytes());
    if let (Some(u), Some(n)) = (audio_url, audio_len) {
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(u.as_bytes());
    }
    Ok(())
}

/// The 16 bytes of a response id written as 32 lowercase or uppercase hex
/// digits.
pub fn id_from_hex(hex: &str) -> Result<[u8; 16], CompactError> {
    let mut id = [0u8; 16];
    hex::decode_to_slice(hex, &mut id).map_err(|_| CompactError::BadId)?;
    Ok(id)
}

/// The frames of a compact spool, in order.
pub fn frames(bytes: &[u8]) -> Frames<'_> {
    Frames { bytes, at: 0 }
}

/// Iterator over the frames of a compact spool ([`frames`]); stops after
/// the first error.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Frames<'a> {
    fn take(&mut self, n: usize, offset: usize) -> Result<&'a [u8], CompactError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(CompactError::Truncated { offset })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, offset: usize) -> Result<[u8; N], CompactError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, offset)?);
        Ok(a)
    }

    fn text(&mut self, offset: usize) -> Result<&'a str, CompactError> {
        let n = u32::from_le_bytes(self.array(offset)?) as usize;
        std::str::from_utf8(self.take(n, offset)?).map_err(|_| CompactError::NotUtf8 { offset })
    }

    fn frame(&mut self) -> Result<CompactRow<'a>, CompactError> {
        let offset = self.at;
        let id = self.array::<16>(offset)?;
        let timestamp = i64::from_le_bytes(self.array(offset)?);
        let [flags] = self.array::<1>(offset)?;
        if flags & !(HAS_AUDIO | HAS_ACCURACY) != 0 {
            return Err(CompactError::BadFlags { offset, flags });
        }
        let accuracy = if flags & HAS_ACCURACY != 0 {
            Some(f64::from_le_bytes(self.array(offset)?))
        } else {
            None
        };
        let user_id = self.text(offset)?;
        let audio_url = if flags & HAS_AUDIO != 0 {
            Some(self.text(offset)?)
        } else {
            None
        };
        Ok(CompactRow {
            id,
            timestamp,
            user_id,
            audio_url,
            accuracy,
        })
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<CompactRow<'a>, CompactError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let r = self.frame();
        if r.is_err() {
            // Nothing after a bad frame can be trusted to start a frame.
            self.at = self.bytes.len();
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::borrow::Cow;

    fn view<'a>(
        id: [u8; 16],
        ts: i64,
        user: &'a str,
        audio: Option<&'a str>,
        acc: Option<f64>,
    ) -> RecordView<'a> {
        RecordView {
            id,
            user_id: Cow::Borrowed(user),
            timestamp: ts,
            audio_url: audio.map(Cow::Borrowed),
            accuracy: acc,
            original_text: Some(Cow::Borrowed("not spooled")),
            response_text: None,
            session_id: None,
            sub_session_id: None,
        }
    }

    proptest! {
        #[test]
        fn frames_round_trip(rows in prop::collection::vec(
            (any::<[u8; 16]>(), any::<i64>(), ".{0,20}", proptest::option::of(".{0,40}"),
             proptest::option::of(0.0f64..=100.0)),
            0..20,
        )) {
            let mut bytes = Vec::new();
            for (id, ts, user, audio, acc) in &rows {
                encode(&view(*id, *ts, user, audio.as_deref(), *acc), &mut bytes).unwrap();
            }
            let back: Vec<CompactRow<'_>> = frames(&bytes).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(back.len(), rows.len());
            for (got, (id, ts, user, audio, acc)) in back.iter().zip(&rows) {
                prop_assert_eq!(got.id, *id);
                prop_assert_eq!(got.timestamp, *ts);
                prop_assert_eq!(got.user_id, user.as_str());
                prop_assert_eq!(got.audio_url, audio.as_deref());
                prop_assert_eq!(got.accuracy, *acc);
            }
        }

        /// Any cut of a valid spool, and any flipped byte, reads as rows
        /// and then at most one error: never a panic.
        #[test]
        fn damaged_spools_are_errors_not_panics(cut in 0usize..200, flip in 0usize..200, bit in 0u8..8) {
            let mut bytes = Vec::new();
            for i in 0..4u8 {
                encode(&view([i; 16], i64::from(i), "learner-é", Some("s3://b/k.wav"), Some(50.0)), &mut bytes).unwrap();
            }
            let cut = cut.min(bytes.len());
            let mut damaged = bytes[..cut].to_vec();
            if let Some(b) = damaged.get_mut(flip) {
                *b ^= 1 << bit;
            }
            let mut errors = 0;
            for r in frames(&damaged) {
                if r.is_err() {
                    errors += 1;
                }
            }
            prop_assert!(errors <= 1);
        }
    }

    #[test]
    fn a_truncated_frame_is_named() {
        let mut bytes = Vec::new();
        encode(&view([7; 16], 5, "u", None, None), &mut bytes).unwrap();
        let whole = bytes.len();
        encode(&view([8; 16], 6, "v", Some("a"), None), &mut bytes).unwrap();
        bytes.pop();
        let got: Vec<_> = frames(&bytes).collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert_eq!(got[1], Err(CompactError::Truncated { offset: whole }));
    }

    #[test]
    fn unknown_flags_are_refused() {
        let mut bytes = Vec::new();
        encode(&view([1; 16], 1, "u", None, None), &mut bytes).unwrap();
        bytes[24] = 0x80;
        assert_eq!(
            frames(&bytes).next(),
            Some(Err(CompactError::BadFlags {
                offset: 0,
                flags: 0x80
            }))
        );
    }

    #[test]
    fn ids_print_as_lowercase_hex() {
        let mut bytes = Vec::new();
        let id = core::array::from_fn(|i| (i * 17) as u8);
        encode(&view(id, 1, "u", None, None), &mut bytes).unwrap();
        let row = frames(&bytes).next().unwrap().unwrap();
        assert_eq!(
            row.response_id().as_str(),
            "00112233445566778899aabbccddeeff"
        );
        assert_eq!(id_from_hex(row.response_id().as_str()), Ok(id));
    }

    #[test]
    fn ids_parse_from_hex() {
        let id = id_from_hex("000102030405060708090a0b0c0d0E0f").unwrap();
        assert_eq!(id, core::array::from_fn(|i| i as u8));
        assert_eq!(id_from_hex("00"), Err(CompactError::BadId));
        assert_eq!(
            id_from_hex("zz0102030405060708090a0b0c0d0e0f"),
            Err(CompactError::BadId)
        );
    }
}
