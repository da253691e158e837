//! Fleet configuration, in sections: defaults, then an optional TOML file
//! (`ENGAGE_CONFIG`), then environment variables.
//!
//! - [`sections`]: one struct per concern (`[fleet]`, `[broker]`, `[redis]`,
//!   `[store]`, `[limits]`, `[telemetry]`, `[clean]`, `[download]`,
//!   `[analyze]`, `[gemini]`, `[aggregate]`); their `///` field docs are the
//!   user documentation (`docs/configuration.md`).
//! - [`env`]: which variable sets which field; the flat names of the original
//!   configuration (`ENGAGE_CONCURRENCY`, `GEMINI_API_KEY`, …) keep working.
//! - [`layers`]: the loader, which also remembers where every value came from.
//!
//! Unknown keys and unknown `ENGAGE_*` variables are errors naming them, in
//! every process. Values are typed and validated per section, and a process
//! validates only the sections it uses ([`FleetConfig::load_for_stage`]): a
//! clean worker does not fail on a bad Gemini setting.

pub mod env;
mod gemini;
pub mod layers;
pub mod report;
pub mod sections;

use std::path::PathBuf;
use std::time::Duration;

use engage_model::envelope::StageName;
use engage_model::input_policy::InputPolicy;
use engage_model::uri::{ObjectUri, UriError};

pub use layers::{Layers, Origin};
pub use sections::*;

/// Errors while loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or the layers not merged.
    #[error("cannot read configuration: {0}")]
    Read(#[from] config::ConfigError),
    /// An `ENGAGE_*` variable that is not a setting.
    #[error("unknown environment variable {name}: {hint}")]
    UnknownVariable {
        /// The variable's name, as set.
        name: String,
        /// What might be meant.
        hint: String,
    },
    /// A key of the TOML file that is not a setting.
    #[error("unknown key `{key}` in {file}")]
    UnknownKey {
        /// The key (`section.field`, or a top-level key).
        key: String,
        /// The file.
        file: String,
    },
    /// One field set by two names in the same layer.
    #[error("{key} is set twice, by {first} and by {second}")]
    SetTwice {
        /// `section.field`.
        key: String,
        /// The first name.
        first: String,
        /// The second name.
        second: String,
    },
    /// A section's values do not have the schema's types.
    #[error("invalid [{section}] settings ({origins}): {why}")]
    Section {
        /// The section.
        section: &'static str,
        /// Which of its fields were set, and where.
        origins: String,
        /// The type error.
        why: String,
    },
    /// A value is present but not acceptable.
    #[error("invalid value for {section}.{field} (from {origin}): {why}")]
    Value {
        /// The section.
        section: &'static str,
        /// The field.
        field: &'static str,
        /// Where the value came from (`env ENGAGE_CONCURRENCY`, `file …`, `default`).
        origin: String,
        /// What is wrong with it.
        why: String,
    },
}

/// A section a process may or may not use (the first six are used by every worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `[clean]`.
    Clean,
    /// `[download]`.
    Download,
    /// `[analyze]`.
    Analyze,
    /// `[gemini]`: validated only when `analyze.analyzer` is `gemini`.
    Gemini,
    /// `[aggregate]`.
    Aggregate,
}

impl Section {
    /// The stage sections a worker of `stage` validates (besides the common ones).
    pub fn for_stage(stage: StageName) -> &'static [Section] {
        match stage {
            StageName::Clean => &[Section::Clean],
            StageName::Match => &[],
            StageName::Download => &[Section::Download],
            StageName::Analyze => &[Section::Analyze, Section::Gemini],
            StageName::Aggregate => &[Section::Aggregate],
        }
    }

    /// Every stage section.
    pub const ALL: [Section; 5] = [
        Section::Clean,
        Section::Download,
        Section::Analyze,
        Section::Gemini,
        Section::Aggregate,
    ];
}

/// The configuration of one process. The common sections (`fleet`, `broker`,
/// `redis`, `store`, `limits`, `telemetry`) are always loaded and validated;
/// a stage section a process did not ask for holds its defaults.
#[derive(Debug, Clone, Default)]
pub struct FleetConfig {
    /// The TOML file this configuration was read from, if any (`ENGAGE_CONFIG`).
    pub source_file: Option<PathBuf>,
    /// `[fleet]`.
    pub fleet: FleetSection,
    /// `[broker]`.
    pub broker: BrokerSection,
    /// `[redis]`.
    pub redis: RedisSection,
    /// `[store]`.
    pub store: StoreSection,
    /// `[limits]`.
    pub limits: LimitsSection,
    /// `[telemetry]`.
    pub telemetry: TelemetrySection,
    /// `[clean]` (defaults unless loaded for the clean stage).
    pub clean: CleanSection,
    /// `[download]` (defaults unless loaded for the download stage).
    pub download: DownloadSection,
    /// `[analyze]` (defaults unless loaded for the analyze stage).
    pub analyze: AnalyzeSection,
    /// `[gemini]` (defaults unless loaded for analyze with `analyzer = "gemini"`).
    pub gemini: GeminiSection,
    /// `[aggregate]` (defaults unless loaded for the aggregate stage).
    pub aggregate: AggregateSection,
}

impl FleetConfig {
    /// Loads the common sections from the process (`ENGAGE_CONFIG` file, environment):
    /// what the CLI's fleet commands need.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_layers(&Layers::from_process()?, &[])
    }

    /// Loads the common sections and those a `stage` worker uses.
    pub fn load_for_stage(stage: StageName) -> Result<Self, ConfigError> {
        Self::from_layers(&Layers::from_process()?, Section::for_stage(stage))
    }

    /// Types and validates the common sections and `uses` from loaded layers.
    pub fn from_layers(layers: &Layers, uses: &[Section]) -> Result<Self, ConfigError> {
        let mut c = FleetConfig {
            source_file: layers.file().map(std::path::Path::to_path_buf),
            fleet: layers.section()?,
            broker: layers.section()?,
            redis: layers.section()?,
            store: layers.section()?,
            limits: layers.section()?,
            telemetry: layers.section()?,
            ..FleetConfig::default()
        };
        if uses.contains(&Section::Clean) {
            c.clean = layers.section()?;
        }
        if uses.contains(&Section::Download) {
            c.download = layers.section()?;
        }
        if uses.contains(&Section::Analyze) {
            c.analyze = layers.section()?;
        }
        if uses.contains(&Section::Gemini) && c.analyze.analyzer == AnalyzerKind::Gemini {
            c.gemini = layers.section()?;
        }
        if uses.contains(&Section::Aggregate) {
            c.aggregate = layers.section()?;
        }
        Ok(c)
    }

    /// The drain timeout as a duration.
    pub fn drain_timeout(&self) -> Duration {
        self.limits.drain_timeout()
    }

    /// The input allow-list: `fleet.input_prefixes` plus the store's own
    /// `inputs/` folder (both validated at load time).
    pub fn input_policy(&self) -> Result<InputPolicy, UriError> {
        let policy = InputPolicy::parse_list(&self.fleet.input_prefixes.join(","))?;
        let inputs = ObjectUri::parse(&self.store.root)?.join("inputs")?;
        Ok(policy.with(inputs))
    }
}

#[cfg(test)]
mod tests;
