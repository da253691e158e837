//! Learner selection: which learners a batch covers (docs/data-contracts.md "Selection").
//!
//! [`Selection`] is the serialisable request carried in a batch (everyone, an
//! explicit id list, a file of ids, or a milestone). [`SelectedLearners`] is
//! its resolved, pure form that the clean stage consults per record. Resolving
//! a `UsersFile` or `Milestone` needs the file or the sessions; the caller
//! fetches them and hands over a reader or the parsed sessions, so nothing
//! here does I/O beyond `std::io::Read`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};

use serde::{Deserialize, Serialize};

use super::session::Session;

/// The learners a batch selects, as requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Selection {
    /// Every learner (no selection).
    #[default]
    All,
    /// An explicit list of user ids.
    Users {
        /// The selected user ids (compared after trimming whitespace).
        ids: Vec<String>,
    },
    /// A file with one user id per line, by object-store URI.
    UsersFile {
        /// Where the file is (`s3://…` or `file:///…`).
        uri: String,
    },
    /// Learners with at least one session at this milestone.
    Milestone {
        /// The milestone, compared exactly after trimming whitespace.
        milestone: String,
    },
}

/// Why a users file could not be turned into a selection.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    /// Reading the file failed.
    #[error("reading users file: {0}")]
    Io(#[from] std::io::Error),
    /// A line of the file is not UTF-8 (1-based line number).
    #[error("users file line {0} is not UTF-8")]
    InvalidUtf8(u64),
    /// A stored resolved selection is not a JSON array of strings.
    #[error("stored selection is not a JSON array of ids: {0}")]
    Stored(#[from] serde_json::Error),
}

/// A resolved selection: either everyone or an explicit set of user ids.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SelectedLearners {
    /// Every learner is selected.
    #[default]
    All,
    /// Only these user ids (already trimmed) are selected.
    Only(HashSet<String>),
}

impl SelectedLearners {
    /// Whether `user_id` is selected. The id is compared after trimming.
    pub fn contains(&self, user_id: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(ids) => ids.contains(user_id.trim()),
        }
    }

    /// The number of selected ids, or `None` for [`SelectedLearners::All`].
    pub fn len(&self) -> Option<usize> {
        match self {
            Self::All => None,
            Self::Only(ids) => Some(ids.len()),
        }
    }

    /// Whether this selects nobody (an explicit, empty set).
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// An explicit set from ids; ids are trimmed and empty ones skipped.
    pub fn from_ids<I, S>(ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::Only(
            ids.into_iter()
                .map(|s| s.as_ref().trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }

    /// An explicit set from a file of one id per line: lines are trimmed,
    /// blank lines and lines starting with `#` (after trimming) are skipped.
    /// A UTF-8 byte-order mark at the start is ignored; `\r\n` endings work.
    pub fn from_reader<R: Read>(r: R) -> Result<Self, SelectionError> {
        let mut reader = BufReader::new(r);
        let mut ids = HashSet::new();
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            line_no += 1;
            let bytes = if line_no == 1 {
                buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&buf)
            } else {
                &buf
            };
            let line = std::str::from_utf8(bytes)
                .map_err(|_| SelectionError::InvalidUtf8(line_no))?
                .trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            ids.insert(line.to_string());
        }
        Ok(Self::Only(ids))
    }

    /// The resolved set as the fleet stores it between the batch plan and
    /// its pieces: a sorted JSON array of the ids, exact whatever characters
    /// they hold (`#`, newlines, quotes). [`Self::from_stored`] reads it back
    /// to the same set, so the fleet selects exactly what `engage run` does
    /// (the users-file format, with its `#` comments, is only for people).
    /// `None` for [`SelectedLearners::All`].
    pub fn to_stored(&self) -> Option<Vec<u8>> {
        match self {
            Self::All => None,
            Self::Only(ids) => {
                let mut v: Vec<&str> = ids.iter().map(String::as_str).collect();
                v.sort_unstable();
                serde_json::to_vec(&v).ok()
            }
        }
    }

    /// Reads what [`Self::to_stored`] wrote.
    pub fn from_stored(bytes: &[u8]) -> Result<Self, SelectionError> {
        let ids: Vec<String> = serde_json::from_slice(bytes)?;
        Ok(Self::Only(ids.into_iter().collect()))
    }

    /// The learners with at least one session at `milestone` (exact match
    /// after trimming both sides).
    pub fn from_sessions<'a, I>(sessions: I, milestone: &str) -> Self
    where
        I: IntoIterator<Item = &'a Session>,
    {
        let milestone = milestone.trim();
        Self::Only(
            sessions
                .into_iter()
                .filter(|s| s.milestone.trim() == milestone)
                .map(|s| s.user_id.trim().to_string())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_selection_round_trips_any_id() {
        let ids = [
            "#u1", "a\nb", "=1+2", "quote\"d", "  spaced", "plain", "\u{0}nul",
        ];
        let s = SelectedLearners::Only(ids.iter().map(|s| (*s).to_string()).collect());
        let stored = s.to_stored().unwrap();
        let back = SelectedLearners::from_stored(&stored).unwrap();
        assert_eq!(back, s);
        for id in ids {
            assert!(back.contains(id) || id != id.trim(), "{id:?} lost");
        }
        assert!(back.contains("#u1"));
        assert!(back.contains("a\nb"));
        assert_eq!(SelectedLearners::All.to_stored(), None);
        assert!(matches!(
            SelectedLearners::from_stored(b"#u1\n"),
            Err(SelectionError::Stored(_))
        ));
    }

    fn session(user: &str, milestone: &str) -> Session {
        Session {
            user_id: user.into(),
            session_id: "s".into(),
            created_at: 0,
            milestone: milestone.into(),
            lesson: "P1".into(),
            progress: "0".into(),
            phase: "P1".into(),
            row: 0,
        }
    }

    #[test]
    fn all_contains_everyone() {
        let s = SelectedLearners::default();
        assert!(s.contains("anyone"));
        assert_eq!(s.len(), None);
    }

    #[test]
    fn ids_are_trimmed_and_blanks_skipped() {
        let s = SelectedLearners::from_ids([" 1 ", "2", "", "  "]);
        assert!(s.contains("1"));
        assert!(s.contains(" 2"));
        assert!(!s.contains("3"));
        assert_eq!(s.len(), Some(2));
    }

    #[test]
    fn users_file_skips_blanks_and_comments() {
        let file = "\u{feff}# header comment\n  a1 \r\n\n   # indented comment\nb2\nb2\n";
        let s = SelectedLearners::from_reader(file.as_bytes()).unwrap();
        assert_eq!(s, SelectedLearners::from_ids(["a1", "b2"]));
        assert!(!s.contains("# header comment"));
    }

    #[test]
    fn users_file_with_bad_utf8_names_the_line() {
        let err = SelectedLearners::from_reader(&b"ok\n\xff\xfe\n"[..]).unwrap_err();
        assert!(matches!(err, SelectionError::InvalidUtf8(2)), "{err}");
    }

    #[test]
    fn milestone_selects_learners_with_a_session_there() {
        let sessions = [
            session("1", "M1"),
            session("2", "M2"),
            session("3", " M1 "),
            session("1", "M2"),
            session("4", "m1"),
        ];
        let s = SelectedLearners::from_sessions(&sessions, "M1");
        assert_eq!(s, SelectedLearners::from_ids(["1", "3"]));
        assert!(SelectedLearners::from_sessions(&sessions, "M9").is_empty());
    }

    #[test]
    fn selection_serialises_with_a_kind_tag() {
        let v = serde_json::to_value(Selection::Users {
            ids: vec!["1".into()],
        })
        .unwrap();
        assert_eq!(v, serde_json::json!({"kind": "users", "ids": ["1"]}));
        let m: Selection =
            serde_json::from_str(r#"{"kind":"milestone","milestone":"M3"}"#).unwrap();
        assert_eq!(
            m,
            Selection::Milestone {
                milestone: "M3".into()
            }
        );
        let f: Selection =
            serde_json::from_str(r#"{"kind":"users_file","uri":"s3://b/k"}"#).unwrap();
        assert!(matches!(f, Selection::UsersFile { .. }));
        assert_eq!(
            serde_json::from_str::<Selection>(r#"{"kind":"all"}"#).unwrap(),
            Selection::All
        );
    }
}
