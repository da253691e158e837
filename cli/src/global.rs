//! The flags every `engage` command takes — `--namespace` and `--config` —
//! and how they enter the configuration: as if the environment said so
//! (`ENGAGE_NAMESPACE`, `ENGAGE_CONFIG`), so a flag and its variable are one
//! setting with one precedence (the flag wins over the variable, which wins
//! over the file).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use engage_runtime::config::env::{self, FLAT, Var};
use engage_runtime::config::{FleetConfig, Layers};

/// Flags shared by every command.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Namespace of the fleet's queues and Redis keys (overrides the file's
    /// `[fleet] namespace`).
    #[arg(long, global = true, env = "ENGAGE_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,
    /// The TOML configuration file (`engage config show` prints what it sets).
    #[arg(long, global = true, env = "ENGAGE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// True for a variable that sets `fleet.namespace` (flat or sectioned).
fn sets_namespace(name: &str) -> bool {
    matches!(env::classify(name), Var::Field { section, field } if section == "fleet" && field == "namespace")
}

impl GlobalArgs {
    /// The configuration layers: the file (`--config`, else `ENGAGE_CONFIG`)
    /// and the process environment, with `--namespace` in place of any
    /// namespace variable.
    pub(crate) fn layers(&self) -> anyhow::Result<Layers> {
        let mut vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        if let Some(ns) = &self.namespace {
            vars.retain(|(k, _)| !sets_namespace(k));
            vars.push(("ENGAGE_NAMESPACE".into(), ns.clone()));
        }
        Layers::build(self.config.as_deref(), vars).context("loading the configuration")
    }

    /// The fleet configuration the CLI's fleet commands use.
    pub(crate) fn config(&self) -> anyhow::Result<FleetConfig> {
        Ok(FleetConfig::from_layers(&self.layers()?, &[])?)
    }
}

/// The `--help` epilogue: every configuration variable and the setting it
/// sets (the flat names; every field also reads `ENGAGE_<SECTION>__<FIELD>`).
pub(crate) fn variables_help() -> String {
    let mut out = String::from(
        "Configuration (defaults < the --config file < environment < flags); \
         `engage config show` prints the effective values and their origins.\n\
         Environment variables:\n",
    );
    out.push_str(&format!(
        "  {:<32} the TOML file (--config)\n",
        env::FILE_VAR
    ));
    for (var, section, field) in FLAT {
        out.push_str(&format!("  {var:<32} {section}.{field}\n"));
    }
    out.push_str(
        "  ENGAGE_<SECTION>__<FIELD>        any other field (e.g. ENGAGE_LIMITS__CONCURRENCY)\n",
    );
    for var in env::COMMAND_VARS {
        out.push_str(&format!(
            "  {var:<32} read by one command (see its --help)\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_flag_replaces_every_namespace_variable() {
        assert!(sets_namespace("ENGAGE_NAMESPACE"));
        assert!(sets_namespace("ENGAGE_FLEET__NAMESPACE"));
        assert!(!sets_namespace("ENGAGE_STORE"));
        assert!(!sets_namespace("PATH"));
    }

    #[test]
    fn help_lists_the_variables() {
        let h = variables_help();
        for v in [
            "ENGAGE_NAMESPACE",
            "ENGAGE_AMQP_URL",
            "ENGAGE_CONFIG",
            "GEMINI_API_KEY",
        ] {
            assert!(h.contains(v), "{v} missing from:\n{h}");
        }
    }
}
