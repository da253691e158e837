//! Environment variables → section fields.
//!
//! Two spellings reach a field:
//! - the sectioned form `ENGAGE_<SECTION>__<FIELD>` (`ENGAGE_LIMITS__CONCURRENCY`,
//!   `ENGAGE_GEMINI__MODEL`), for every field;
//! - the flat names of the original configuration (`ENGAGE_CONCURRENCY`,
//!   `ENGAGE_GEMINI_RPM`, `GEMINI_API_KEY`, …), kept working exactly through
//!   the explicit table [`FLAT`]. A file's top-level flat keys (`concurrency = 4`)
//!   are the same names in lower case without the prefix.
//!
//! Any other `ENGAGE_*` variable is an error that names it.

/// The variable naming the TOML file; read by the loader, not a setting.
pub const FILE_VAR: &str = "ENGAGE_CONFIG";
/// The Gemini key's conventional variable; wins over `ENGAGE_GEMINI__API_KEY`.
pub const GEMINI_KEY_VAR: &str = "GEMINI_API_KEY";
/// Prefix of every configuration variable.
pub const PREFIX: &str = "ENGAGE_";
/// `ENGAGE_*` variables that belong to a CLI command, not to the fleet's
/// settings (`engage dashboard`'s operator token): not settings, not errors.
pub const COMMAND_VARS: &[&str] = &["ENGAGE_DASHBOARD_TOKEN"];

/// The flat variables of the original configuration: `(variable, section, field)`.
pub const FLAT: &[(&str, &str, &str)] = &[
    ("ENGAGE_NAMESPACE", "fleet", "namespace"),
    ("ENGAGE_AMQP_URL", "broker", "amqp_url"),
    ("ENGAGE_RETRY_DELAYS_MS", "broker", "retry_delays_ms"),
    ("ENGAGE_DELIVERY_LIMIT", "broker", "delivery_limit"),
    ("ENGAGE_REDIS_URL", "redis", "url"),
    ("ENGAGE_REDIS_CLUSTER", "redis", "cluster"),
    ("ENGAGE_STORE", "store", "root"),
    (
        "ENGAGE_STORE_INLINE_READ_BYTES",
        "store",
        "inline_read_bytes",
    ),
    ("ENGAGE_S3_ENDPOINT", "store", "s3_endpoint"),
    ("ENGAGE_S3_REGION", "store", "s3_region"),
    ("ENGAGE_S3_FORCE_PATH_STYLE", "store", "s3_force_path_style"),
    ("ENGAGE_S3_ROOT", "store", "s3_root"),
    ("ENGAGE_S3_ACCESS_KEY_ID", "store", "s3_access_key_id"),
    (
        "ENGAGE_S3_SECRET_ACCESS_KEY",
        "store",
        "s3_secret_access_key",
    ),
    (
        "ENGAGE_FINISHED_BATCH_TTL_S",
        "redis",
        "finished_batch_ttl_s",
    ),
    ("ENGAGE_CONCURRENCY", "limits", "concurrency"),
    ("ENGAGE_MAX_ATTEMPTS", "limits", "max_attempts"),
    ("ENGAGE_DRAIN_TIMEOUT_S", "limits", "drain_timeout_s"),
    ("ENGAGE_AUDIO_MEMORY_BYTES", "limits", "audio_memory_bytes"),
    ("ENGAGE_METRICS_ADDR", "telemetry", "metrics_addr"),
    ("ENGAGE_LOG_FORMAT", "telemetry", "log_format"),
    ("ENGAGE_CLEAN_PIECE_BYTES", "clean", "piece_bytes"),
    (
        "ENGAGE_CLEAN_CONSUMER_TIMEOUT_S",
        "clean",
        "consumer_timeout_s",
    ),
    ("ENGAGE_PARTITIONS", "clean", "partitions"),
    ("ENGAGE_AUDIO_BUCKETS", "download", "audio_buckets"),
    ("ENGAGE_INPUT_PREFIXES", "fleet", "input_prefixes"),
    ("ENGAGE_ANALYZER", "analyze", "analyzer"),
    ("ENGAGE_MAX_PERMIT_WAIT_S", "analyze", "max_permit_wait_s"),
    ("GEMINI_API_KEY", "gemini", "api_key"),
    ("ENGAGE_GEMINI_RPM", "gemini", "rpm"),
    ("ENGAGE_GEMINI_TPM", "gemini", "tpm"),
    ("ENGAGE_GEMINI_RPD", "gemini", "rpd"),
    ("ENGAGE_WEIGHTS", "aggregate", "weights"),
    ("ENGAGE_RECONCILE_EVERY_S", "aggregate", "reconcile_every_s"),
    ("ENGAGE_RECONCILE_STALL_S", "aggregate", "reconcile_stall_s"),
];

/// Fields whose environment value is a comma-separated list.
pub const LIST_FIELDS: &[(&str, &str)] = &[
    ("broker", "retry_delays_ms"),
    ("download", "audio_buckets"),
    ("fleet", "input_prefixes"),
    ("aggregate", "weights"),
];

/// Optional fields (default unset) whose value is text: taken verbatim from
/// the environment, never parsed as a number (an S3 key of digits stays text).
pub const OPTIONAL_TEXT_FIELDS: &[(&str, &str)] = &[
    ("store", "s3_endpoint"),
    ("store", "s3_region"),
    ("store", "s3_root"),
    ("store", "s3_access_key_id"),
    ("store", "s3_secret_access_key"),
];

/// Optional fields (default unset) whose value is a number.
pub const OPTIONAL_NUMBER_FIELDS: &[(&str, &str)] =
    &[("gemini", "thinking_budget"), ("gemini", "temperature")];

/// What an environment variable is to the loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// Not ours (`PATH`, `AWS_REGION`, …).
    Other,
    /// `ENGAGE_CONFIG`.
    File,
    /// Sets `section.field`.
    Field {
        /// Section name.
        section: String,
        /// Field name.
        field: String,
    },
    /// An `ENGAGE_*` name that sets nothing.
    Unknown,
}

/// Classifies a variable name (case-insensitively, like the original loader).
pub fn classify(name: &str) -> Var {
    let upper = name.to_ascii_uppercase();
    if upper == FILE_VAR {
        return Var::File;
    }
    if COMMAND_VARS.contains(&upper.as_str()) {
        return Var::Other;
    }
    if let Some((_, s, f)) = FLAT.iter().find(|(v, _, _)| *v == upper) {
        return Var::Field {
            section: (*s).to_owned(),
            field: (*f).to_owned(),
        };
    }
    let Some(rest) = upper.strip_prefix(PREFIX) else {
        return Var::Other;
    };
    match rest.split_once("__") {
        Some((s, f)) if !s.is_empty() && !f.is_empty() && !f.contains("__") => Var::Field {
            section: s.to_ascii_lowercase(),
            field: f.to_ascii_lowercase(),
        },
        _ => Var::Unknown,
    }
}

/// The variable users should set for a field: its flat name when it has one
/// (those are the documented ones), else `ENGAGE_<SECTION>__<FIELD>`.
pub fn var_for(section: &str, field: &str) -> String {
    FLAT.iter()
        .find(|(_, s, f)| *s == section && *f == field)
        .map(|(v, _, _)| (*v).to_owned())
        .unwrap_or_else(|| sectioned_var(section, field))
}

/// `ENGAGE_<SECTION>__<FIELD>`.
pub fn sectioned_var(section: &str, field: &str) -> String {
    format!(
        "{PREFIX}{}__{}",
        section.to_ascii_uppercase(),
        field.to_ascii_uppercase()
    )
}

/// The section and field a file's top-level flat key (`concurrency`) stands for.
pub fn flat_file_key(key: &str) -> Option<(&'static str, &'static str)> {
    FLAT.iter()
        .find(|(v, _, _)| {
            v.strip_prefix(PREFIX)
                .is_some_and(|k| k.eq_ignore_ascii_case(key))
        })
        .map(|(_, s, f)| (*s, *f))
}

/// Why an unknown `ENGAGE_*` variable might be there, for the error message.
pub fn unknown_hint(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    let k8s = ["_SERVICE_HOST", "_SERVICE_PORT", "_PORT"]
        .iter()
        .any(|s| upper.contains(s));
    if k8s {
        "it is not a setting; Kubernetes injects ENGAGE_*_SERVICE_HOST/_PORT variables for a \
         Service named engage-…: rename that Service or set `enableServiceLinks: false` on the pod"
            .to_owned()
    } else {
        "it is not a setting (see docs/configuration.md: a flat name like ENGAGE_CONCURRENCY, \
         or ENGAGE_<SECTION>__<FIELD>)"
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_flat_sectioned_and_foreign_names() {
        let f = |s: &str, f: &str| Var::Field {
            section: s.into(),
            field: f.into(),
        };
        assert_eq!(classify("ENGAGE_CONCURRENCY"), f("limits", "concurrency"));
        assert_eq!(classify("GEMINI_API_KEY"), f("gemini", "api_key"));
        assert_eq!(classify("ENGAGE_GEMINI__MODEL"), f("gemini", "model"));
        assert_eq!(
            classify("ENGAGE_LIMITS__CONCURRENCY"),
            f("limits", "concurrency")
        );
        assert_eq!(classify("ENGAGE_CONFIG"), Var::File);
        assert_eq!(classify("ENGAGE_DASHBOARD_TOKEN"), Var::Other);
        assert_eq!(classify("PATH"), Var::Other);
        assert_eq!(classify("ENGAGE_CLEAN_SERVICE_HOST"), Var::Unknown);
        assert_eq!(classify("ENGAGE_GEMINI__"), Var::Unknown);
        assert!(unknown_hint("ENGAGE_CLEAN_SERVICE_HOST").contains("enableServiceLinks"));
    }

    #[test]
    fn flat_names_are_unique_and_documented_names_win() {
        let mut names: Vec<_> = FLAT.iter().map(|(v, _, _)| *v).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FLAT.len());
        assert_eq!(var_for("limits", "concurrency"), "ENGAGE_CONCURRENCY");
        assert_eq!(var_for("gemini", "model"), "ENGAGE_GEMINI__MODEL");
        assert_eq!(
            flat_file_key("concurrency"),
            Some(("limits", "concurrency"))
        );
        assert_eq!(flat_file_key("store"), Some(("store", "root")));
    }
}
