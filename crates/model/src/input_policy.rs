//! Which inputs a producer may name: the input allow-list.
//!
//! A batch message names its activity logs, its sessions CSV and optionally a
//! users file by URI, and the workers read whatever they are told to with
//! their own credentials. Without a check, a producer could name any bucket the
//! workers can read, or `file:///proc/self/environ`. An [`InputPolicy`] holds
//! the prefixes inputs must lie under (`s3://bucket/prefix` or
//! `file:///dir`); [`InputPolicy::check_spec`] refuses a batch that names
//! anything else, with a named reason, before a byte is read.
//!
//! Prefixes match at a segment boundary: `s3://raw/in` allows
//! `s3://raw/in/a.jsonl` but not `s3://raw/inbox.jsonl`; a bucket root
//! (`s3://raw`) allows the whole bucket. URIs are normalised before the check
//! (`..` is refused by the parser), so no spelling climbs out of a prefix.

use std::fmt;

use crate::jobs::BatchSpec;
use crate::selection::Selection;
use crate::uri::{ObjectUri, UriError};

/// Which input of a batch a URI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// An activity log.
    Activity,
    /// The sessions CSV.
    Sessions,
    /// The users file of a `users_file` selection.
    UsersFile,
}

impl InputKind {
    /// The field name used in messages and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Activity => "activity",
            Self::Sessions => "sessions",
            Self::UsersFile => "users_file",
        }
    }
}

impl fmt::Display for InputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a batch's input was refused. The message names the input and its
/// scheme and bucket only (keys can carry learner ids).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputRefused {
    /// The URI does not parse (unknown scheme, bad bucket, `..` in the key).
    #[error("{kind} input is not a valid s3:// or file:/// URI: {error}")]
    BadUri {
        /// Which input.
        kind: InputKind,
        /// The parser's reason.
        error: UriError,
    },
    /// The URI is not under any allowed input prefix.
    #[error("{kind} input {location} is not under an allowed input prefix (ENGAGE_INPUT_PREFIXES)")]
    NotAllowed {
        /// Which input.
        kind: InputKind,
        /// The URI's scheme and bucket (the key is left out).
        location: String,
    },
}

impl InputRefused {
    /// The stable reason name (dead-letter reason, metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadUri { .. } => "bad_input_uri",
            Self::NotAllowed { .. } => "input_not_allowed",
        }
    }
}

/// The input allow-list: the prefixes every input of a batch must lie under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputPolicy {
    prefixes: Vec<ObjectUri>,
}

impl InputPolicy {
    /// A policy allowing inputs under `prefixes` only (none: nothing allowed).
    pub fn new(prefixes: impl IntoIterator<Item = ObjectUri>) -> Self {
        let mut prefixes: Vec<ObjectUri> = prefixes.into_iter().collect();
        prefixes.sort();
        prefixes.dedup();
        Self { prefixes }
    }

    /// Parses a comma-separated list of prefix URIs (blank entries ignored).
    pub fn parse_list(list: &str) -> Result<Self, UriError> {
        let prefixes = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(ObjectUri::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(prefixes))
    }

    /// The allowed prefixes, sorted.
    pub fn prefixes(&self) -> &[ObjectUri] {
        &self.prefixes
    }

    /// This policy with `prefix` allowed too.
    pub fn with(mut self, prefix: ObjectUri) -> Self {
        self.prefixes.push(prefix);
        Self::new(self.prefixes)
    }

    /// Whether `uri` lies under an allowed prefix.
    pub fn allows(&self, uri: &ObjectUri) -> bool {
        self.prefixes
            .iter()
            .any(|p| p == uri || uri.relative_to(p).is_some())
    }

    /// Parses `uri` and checks it against the allow-list.
    pub fn check(&self, kind: InputKind, uri: &str) -> Result<ObjectUri, InputRefused> {
        let parsed = ObjectUri::parse(uri).map_err(|error| InputRefused::BadUri { kind, error })?;
        if self.allows(&parsed) {
            Ok(parsed)
        } else {
            Err(InputRefused::NotAllowed {
                kind,
                location: parsed.redacted().to_string(),
            })
        }
    }

    /// Checks every input a batch names: each activity log, the sessions CSV
    /// and a users file.
    pub fn check_spec(&self, spec: &BatchSpec) -> Result<(), InputRefused> {
        for a in &spec.activity {
            self.check(InputKind::Activity, a)?;
        }
        self.check(InputKind::Sessions, &spec.sessions)?;
        if let Selection::UsersFile { uri } = &spec.selection {
            self.check(InputKind::UsersFile, uri)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> InputPolicy {
        InputPolicy::parse_list("s3://raw/in, file:///srv/engage/inputs").unwrap()
    }

    fn spec(activity: &str, sessions: &str, selection: Selection) -> BatchSpec {
        BatchSpec {
            activity: vec![activity.to_owned()],
            sessions: sessions.to_owned(),
            selection,
        }
    }

    #[test]
    fn inputs_under_a_prefix_are_allowed() {
        let p = policy();
        assert!(
            p.check(InputKind::Activity, "s3://raw/in/a.jsonl.gz")
                .is_ok()
        );
        assert!(
            p.check(InputKind::Activity, "s3://raw/in/2026/11/a.jsonl")
                .is_ok()
        );
        assert!(
            p.check(InputKind::Sessions, "file:///srv/engage/inputs/s.csv")
                .is_ok()
        );
    }

    #[test]
    fn prefixes_match_whole_segments_only() {
        let p = policy();
        for uri in [
            "s3://raw/inbox.jsonl",
            "s3://raw/i",
            "s3://raw2/in/a.jsonl",
            "s3://other/in/a.jsonl",
            "file:///srv/engage/inputs-old/a.jsonl",
        ] {
            assert!(
                matches!(
                    p.check(InputKind::Activity, uri),
                    Err(InputRefused::NotAllowed { .. })
                ),
                "{uri}"
            );
        }
    }

    #[test]
    fn nothing_climbs_out_of_a_prefix() {
        let p = policy();
        for uri in [
            "file:///proc/self/environ",
            "file:///etc/passwd",
            "file:///srv/engage/inputs/../../../etc/passwd",
            "s3://raw/in/../secrets/key",
            "https://raw.s3.amazonaws.com/in/a.jsonl",
            "http://127.0.0.1:9/in",
            "/srv/engage/inputs/a.jsonl",
        ] {
            let r = p.check(InputKind::Activity, uri);
            assert!(r.is_err(), "{uri} was allowed: {r:?}");
        }
        // A percent-encoded `..` is a literal key segment (S3 and the local
        // store never decode keys), so it stays under its prefix.
        let literal = p
            .check(InputKind::Activity, "s3://raw/in/%2e%2e/x")
            .unwrap();
        assert!(p.allows(&literal));
    }

    #[test]
    fn an_empty_policy_allows_nothing() {
        let p = InputPolicy::default();
        assert!(matches!(
            p.check(InputKind::Activity, "s3://raw/in/a.jsonl"),
            Err(InputRefused::NotAllowed { .. })
        ));
    }

    #[test]
    fn a_bucket_root_allows_the_bucket() {
        let p = InputPolicy::parse_list("s3://raw").unwrap();
        assert!(
            p.check(InputKind::Activity, "s3://raw/any/key.jsonl")
                .is_ok()
        );
        assert!(
            p.check(InputKind::Activity, "s3://rawer/key.jsonl")
                .is_err()
        );
    }

    #[test]
    fn every_input_of_a_spec_is_checked() {
        let p = policy();
        let ok = spec("s3://raw/in/a.jsonl", "s3://raw/in/s.csv", Selection::All);
        assert_eq!(p.check_spec(&ok), Ok(()));
        let bad_sessions = spec("s3://raw/in/a.jsonl", "file:///etc/shadow", Selection::All);
        let e = p.check_spec(&bad_sessions).unwrap_err();
        assert_eq!(e.reason(), "input_not_allowed");
        assert!(matches!(
            e,
            InputRefused::NotAllowed {
                kind: InputKind::Sessions,
                ..
            }
        ));
        let bad_users = spec(
            "s3://raw/in/a.jsonl",
            "s3://raw/in/s.csv",
            Selection::UsersFile {
                uri: "file:///proc/self/environ".into(),
            },
        );
        assert!(matches!(
            p.check_spec(&bad_users),
            Err(InputRefused::NotAllowed {
                kind: InputKind::UsersFile,
                ..
            })
        ));
    }

    #[test]
    fn refusals_never_print_the_key() {
        let e = policy()
            .check(InputKind::Activity, "s3://raw/learner-42-secret/a.jsonl")
            .unwrap_err();
        assert!(!e.to_string().contains("learner-42"), "{e}");
    }

    #[test]
    fn bad_uris_are_named() {
        let e = policy()
            .check(InputKind::Activity, "ftp://x/y")
            .unwrap_err();
        assert_eq!(e.reason(), "bad_input_uri");
    }
}
