//! The effective configuration, section by section, with where each value
//! came from: what `engage config show` prints. Secrets are redacted (values
//! are taken from the typed sections, whose `Secret` fields serialise as
//! `[REDACTED]`), and only variable names, never values, name an origin.

use serde::Serialize;
use serde_json::Value;

use super::env;
use super::layers::{Layers, Origin};
use super::sections::*;

/// One field of a section.
#[derive(Debug, Clone, Serialize)]
pub struct FieldReport {
    /// Field name (the TOML key inside the section).
    pub field: String,
    /// The effective value; secrets are `"[REDACTED]"`, unset optionals `null`.
    pub value: Value,
    /// `default`, `file PATH (key)` or `env NAME`.
    pub origin: String,
    /// The environment variable that sets it.
    pub variable: String,
}

/// One section.
#[derive(Debug, Clone, Serialize)]
pub struct SectionReport {
    /// Section name.
    pub section: &'static str,
    /// Its fields, in declaration order.
    pub fields: Vec<FieldReport>,
    /// Why the section cannot be used as set (type or value error), if so.
    pub error: Option<String>,
    /// A remark (e.g. that the section is only checked for one analyzer).
    pub note: Option<String>,
}

impl Layers {
    /// Reports every section. A section that does not type-check reports its
    /// error and no values; one that fails validation reports both.
    pub fn report(&self) -> Vec<SectionReport> {
        let analyzer = self
            .typed::<AnalyzeSection>()
            .map(|a| a.analyzer)
            .unwrap_or_default();
        let mut out = vec![
            self.report_one::<FleetSection>(true),
            self.report_one::<BrokerSection>(true),
            self.report_one::<RedisSection>(true),
            self.report_one::<StoreSection>(true),
            self.report_one::<LimitsSection>(true),
            self.report_one::<TelemetrySection>(true),
            self.report_one::<CleanSection>(true),
            self.report_one::<DownloadSection>(true),
            self.report_one::<AnalyzeSection>(true),
            self.report_one::<GeminiSection>(analyzer == AnalyzerKind::Gemini),
            self.report_one::<AggregateSection>(true),
        ];
        if analyzer != AnalyzerKind::Gemini
            && let Some(g) = out.iter_mut().find(|s| s.section == GeminiSection::NAME)
        {
            g.note = Some("used and validated only when analyze.analyzer is \"gemini\"".into());
        }
        out
    }

    fn report_one<T: SectionSpec>(&self, validate: bool) -> SectionReport {
        let mut r = SectionReport {
            section: T::NAME,
            fields: Vec::new(),
            error: None,
            note: None,
        };
        let typed = match self.typed::<T>() {
            Ok(t) => t,
            Err(e) => {
                r.error = Some(e.to_string());
                return r;
            }
        };
        if validate && let Err(e) = self.section::<T>() {
            r.error = Some(e.to_string());
        }
        if let Ok(Value::Object(o)) = serde_json::to_value(&typed) {
            for (field, value) in o {
                let origin = self.origin(T::NAME, &field);
                let variable = match &origin {
                    Origin::Env(name) => name.clone(),
                    _ => env::var_for(T::NAME, &field),
                };
                r.fields.push(FieldReport {
                    origin: origin.to_string(),
                    variable,
                    field,
                    value,
                });
            }
        }
        r
    }
}
