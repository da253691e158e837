//! `engage config show`: the effective configuration, section by section,
//! with where each value came from (default, file, or the environment
//! variable's name). Secrets print as `[REDACTED]`: the values come from the
//! typed sections, whose secrets never serialise in clear.
//!
//! Exits 1 when a section is unusable as set (the error is printed in the
//! section), so it also serves as a configuration check before a rollout.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use engage_runtime::config::Layers;
use engage_runtime::config::report::SectionReport;

/// `engage config …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCmd {
    /// Print the effective settings, where each came from, secrets redacted.
    Show(ShowArgs),
}

/// `engage config show` options.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// Print one JSON object (`file`, `sections[]`) instead of TOML-like text.
    #[arg(long)]
    pub json: bool,
}

/// Prints the loaded layers (this process's file and environment, with the
/// global `--config`/`--namespace` flags applied).
pub(crate) fn run(cmd: &ConfigCmd, layers: &Layers) -> anyhow::Result<ExitCode> {
    let ConfigCmd::Show(a) = cmd;
    let report = layers.report();
    let file = layers.file().map(|p| p.display().to_string());
    if a.json {
        let doc = serde_json::json!({ "file": file, "sections": report });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render(file.as_deref(), &report));
    }
    let failed = report.iter().any(|s| s.error.is_some());
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The text form: one `[section]` table per section, each value followed by
/// a comment naming its origin (and, for defaults, the variable that sets it).
pub(crate) fn render(file: Option<&str>, report: &[SectionReport]) -> String {
    let mut out = String::new();
    match file {
        Some(f) => {
            let _ = writeln!(out, "# file: {f} (ENGAGE_CONFIG)");
        }
        None => out.push_str("# no file (set ENGAGE_CONFIG=path to read one)\n"),
    }
    for s in report {
        let _ = writeln!(out, "\n[{}]", s.section);
        if let Some(n) = &s.note {
            let _ = writeln!(out, "# note: {n}");
        }
        if let Some(e) = &s.error {
            let _ = writeln!(out, "# ERROR: {e}");
        }
        let width = s
            .fields
            .iter()
            .map(|f| f.field.len() + f.value.to_string().len() + 3)
            .max()
            .unwrap_or(0);
        for f in &s.fields {
            let line = format!("{} = {}", f.field, f.value);
            let origin = if f.origin == "default" {
                format!("default ({})", f.variable)
            } else {
                f.origin.clone()
            };
            let _ = writeln!(out, "{line:width$}  # {origin}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_origins_and_never_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("engage.toml");
        std::fs::write(
            &f,
            "[limits]\nmax_attempts = 9\n[gemini]\napi_key = \"file-key-1\"\n",
        )
        .unwrap();
        let vars = [
            ("ENGAGE_AMQP_URL", "amqp://u:amqp-pw-2@h/%2f"),
            ("ENGAGE_CONCURRENCY", "4"),
            ("GEMINI_API_KEY", "AIzaEnvKey3"),
            ("ENGAGE_ANALYZER", "gemini"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let layers = Layers::build(Some(&f), vars).unwrap();
        let report = layers.report();
        let text = render(Some("engage.toml"), &report);
        let json = serde_json::to_string(&report).unwrap();
        for secret in ["file-key-1", "amqp-pw-2", "AIzaEnvKey3"] {
            assert!(!text.contains(secret), "{secret} in\n{text}");
            assert!(!json.contains(secret), "{secret} in {json}");
        }
        assert!(text.contains("amqp_url = \"[REDACTED]\""), "{text}");
        assert!(text.contains("# env ENGAGE_CONCURRENCY"), "{text}");
        assert!(text.contains("# env GEMINI_API_KEY"), "{text}");
        assert!(text.contains("(limits.max_attempts)"), "{text}");
        assert!(
            text.contains("# default (ENGAGE_DRAIN_TIMEOUT_S)"),
            "{text}"
        );
        assert!(!text.contains("ERROR"), "{text}");
    }

    #[test]
    fn shows_a_section_error() {
        let vars = [("ENGAGE_CONCURRENCY".to_owned(), "0".to_owned())];
        let report = Layers::build(None, vars).unwrap().report();
        let text = render(None, &report);
        assert!(
            text.contains("# ERROR: invalid value for limits.concurrency"),
            "{text}"
        );
    }
}
