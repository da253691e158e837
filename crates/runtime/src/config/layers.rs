//! The layered loader: defaults → the TOML file (`ENGAGE_CONFIG`) → the
//! environment, merged with the `config` crate, with the origin of every
//! value kept for error messages and `engage config show`.
//!
//! Keys and variable names are checked for every section at load time (an
//! unknown one is an error naming it); a section's values are typed and
//! validated only when a process asks for that section ([`Layers::section`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::ConfigError;
use super::env::{self, Var};
use super::sections::*;

/// Where a field's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The TOML file, under `key` (a flat key like `concurrency` or `limits.concurrency`).
    File {
        /// The file.
        path: PathBuf,
        /// The key as written in the file.
        key: String,
    },
    /// An environment variable (its name; the value is never kept here).
    Env(String),
}

impl std::fmt::Debug for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layers")
            .field("file", &self.file)
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, key } => write!(f, "file {} ({key})", path.display()),
            Origin::Env(name) => write!(f, "env {name}"),
        }
    }
}

/// The merged, not yet typed, configuration with the origin of every value.
/// Its `Debug` shows the file and the origins, never the raw values (which
/// hold the secrets in clear).
pub struct Layers {
    file: Option<PathBuf>,
    merged: config::Config,
    origins: BTreeMap<(String, String), Origin>,
}

/// The section names, in display order.
pub const SECTIONS: [&str; 11] = [
    FleetSection::NAME,
    BrokerSection::NAME,
    RedisSection::NAME,
    StoreSection::NAME,
    LimitsSection::NAME,
    TelemetrySection::NAME,
    CleanSection::NAME,
    DownloadSection::NAME,
    AnalyzeSection::NAME,
    GeminiSection::NAME,
    AggregateSection::NAME,
];

/// The defaults of every section as one tree, with the secret defaults in
/// clear (the `Secret` serializer redacts, which would make the redacted text
/// the default). Unset optional fields are `null`: the tree is also the schema.
pub fn defaults_tree() -> Map<String, Value> {
    fn put<T: SectionSpec>(tree: &mut Map<String, Value>) {
        let v = serde_json::to_value(T::default()).unwrap_or(Value::Null);
        tree.insert(T::NAME.to_owned(), v);
    }
    let mut t = Map::new();
    put::<FleetSection>(&mut t);
    put::<BrokerSection>(&mut t);
    put::<RedisSection>(&mut t);
    put::<StoreSection>(&mut t);
    put::<LimitsSection>(&mut t);
    put::<TelemetrySection>(&mut t);
    put::<CleanSection>(&mut t);
    put::<DownloadSection>(&mut t);
    put::<AnalyzeSection>(&mut t);
    put::<GeminiSection>(&mut t);
    put::<AggregateSection>(&mut t);
    let mut set = |s: &str, f: &str, v: &str| {
        if let Some(o) = t.get_mut(s).and_then(Value::as_object_mut) {
            o.insert(f.to_owned(), Value::String(v.to_owned()));
        }
    };
    set(
        "broker",
        "amqp_url",
        BrokerSection::default().amqp_url.expose(),
    );
    set("redis", "url", RedisSection::default().url.expose());
    set(
        "gemini",
        "api_key",
        GeminiSection::default().api_key.expose(),
    );
    t
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn has_field(schema: &Map<String, Value>, section: &str, field: &str) -> bool {
    schema
        .get(section)
        .and_then(Value::as_object)
        .is_some_and(|o| o.contains_key(field))
}

fn fields_of(schema: &Map<String, Value>, section: &str) -> String {
    schema
        .get(section)
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

impl Layers {
    /// Loads from the process: the file named by `ENGAGE_CONFIG` (if set) and
    /// the process environment.
    pub fn from_process() -> Result<Self, ConfigError> {
        let file = std::env::var_os(env::FILE_VAR).map(PathBuf::from);
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Self::build(file.as_deref(), vars)
    }

    /// Loads from an explicit file and environment (tests pass their own).
    pub fn build(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let schema = defaults_tree();
        let mut origins = BTreeMap::new();
        let mut builder = config::Config::builder().add_source(config::Config::try_from(
            &strip_nulls(&Value::Object(schema.clone())),
        )?);
        if let Some(path) = file {
            let tree = read_file(path, &schema, &mut origins)?;
            builder = builder.add_source(config::Config::try_from(&Value::Object(tree))?);
        }

        // Environment: typed values go through the `config` crate's parsing
        // (as before the split into sections); text is set verbatim.
        let mut parsed = HashMap::new();
        let mut text: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
        let mut sorted: Vec<(String, String)> = vars.into_iter().collect();
        sorted.sort();
        for (name, value) in sorted {
            let (section, field) = match env::classify(&name) {
                Var::Other | Var::File => continue,
                Var::Unknown => {
                    return Err(ConfigError::UnknownVariable {
                        hint: env::unknown_hint(&name),
                        name,
                    });
                }
                Var::Field { section, field } => (section, field),
            };
            if !has_field(&schema, &section, &field) {
                let hint = if schema.contains_key(&section) {
                    format!(
                        "section [{section}] has no field `{field}` (fields: {})",
                        fields_of(&schema, &section)
                    )
                } else {
                    format!(
                        "there is no section [{section}] (sections: {})",
                        SECTIONS.join(", ")
                    )
                };
                return Err(ConfigError::UnknownVariable { name, hint });
            }
            let is_key_var = name.eq_ignore_ascii_case(env::GEMINI_KEY_VAR);
            if is_key_var && value.is_empty() {
                continue; // `GEMINI_API_KEY=` (compose's `${GEMINI_API_KEY:-}`) means unset
            }
            let key = (section.clone(), field.clone());
            if let Some(Origin::Env(first)) = origins.get(&key) {
                let first_is_key_var = first.eq_ignore_ascii_case(env::GEMINI_KEY_VAR);
                if first_is_key_var {
                    continue; // GEMINI_API_KEY wins over ENGAGE_GEMINI__API_KEY
                }
                if !is_key_var {
                    return Err(ConfigError::SetTwice {
                        key: format!("{section}.{field}"),
                        first: first.clone(),
                        second: name,
                    });
                }
            }
            origins.insert(key.clone(), Origin::Env(name.clone()));
            let is_text = schema[&section][&field].is_string()
                || env::OPTIONAL_TEXT_FIELDS.contains(&(section.as_str(), field.as_str()));
            if is_text {
                parsed.remove(&env::sectioned_var(&section, &field));
                text.insert(key, (name, value));
            } else {
                text.remove(&key);
                parsed.insert(env::sectioned_var(&section, &field), value);
            }
        }
        let mut environment = config::Environment::with_prefix("ENGAGE")
            .source(Some(parsed))
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",");
        for (s, f) in env::LIST_FIELDS {
            environment = environment.with_list_parse_key(&format!("{s}.{f}"));
        }
        builder = builder.add_source(environment);
        for ((section, field), (_, value)) in text {
            builder = builder.set_override(format!("{section}.{field}"), value)?;
        }
        Ok(Self {
            file: file.map(Path::to_path_buf),
            merged: builder.build()?,
            origins,
        })
    }

    /// The TOML file the configuration was read from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Where `section.field` came from.
    pub fn origin(&self, section: &str, field: &str) -> Origin {
        self.origins
            .get(&(section.to_owned(), field.to_owned()))
            .cloned()
            .unwrap_or(Origin::Default)
    }

    /// The non-default origins of a section, for error messages.
    fn section_origins(&self, section: &str) -> String {
        let o: Vec<String> = self
            .origins
            .iter()
            .filter(|((s, _), _)| s == section)
            .map(|((_, f), o)| format!("{f} from {o}"))
            .collect();
        if o.is_empty() {
            "all defaults".to_owned()
        } else {
            o.join(", ")
        }
    }

    /// The section typed, without value checks (`config show` reports those separately).
    pub fn typed<T: SectionSpec>(&self) -> Result<T, ConfigError> {
        match self.merged.get::<T>(T::NAME) {
            // A section whose every default is empty (`download`'s empty list)
            // and that no layer set is absent from the merged tree.
            Err(config::ConfigError::NotFound(_)) => Ok(T::default()),
            other => other,
        }
        .map_err(|e| ConfigError::Section {
            section: T::NAME,
            origins: self.section_origins(T::NAME),
            why: e.to_string(),
        })
    }

    /// The section typed and validated; errors name the field and where its value came from.
    pub fn section<T: SectionSpec>(&self) -> Result<T, ConfigError> {
        let v = self.typed::<T>()?;
        v.validate().map_err(|(field, why)| ConfigError::Value {
            section: T::NAME,
            field,
            origin: self.origin(T::NAME, field).to_string(),
            why,
        })?;
        Ok(v)
    }
}

/// Reads the TOML file into a sectioned tree: flat keys of the original
/// configuration (`concurrency = 4`, `store = "s3://…"`) move into their
/// section; any other unknown key is an error naming it.
fn read_file(
    path: &Path,
    schema: &Map<String, Value>,
    origins: &mut BTreeMap<(String, String), Origin>,
) -> Result<Map<String, Value>, ConfigError> {
    let raw: Map<String, Value> = config::Config::builder()
        .add_source(config::File::from(path).required(true))
        .build()?
        .try_deserialize()?;
    let unknown = |key: String| ConfigError::UnknownKey {
        key,
        file: path.display().to_string(),
    };
    let mut out = Map::new();
    let mut put = |section: &str, field: &str, key: String, v: Value| {
        let k = (section.to_owned(), field.to_owned());
        if let Some(Origin::File { key: first, .. }) = origins.get(&k) {
            return Err(ConfigError::SetTwice {
                key: format!("{section}.{field}"),
                first: format!("file key {first}"),
                second: format!("file key {key}"),
            });
        }
        origins.insert(
            k,
            Origin::File {
                path: path.to_path_buf(),
                key,
            },
        );
        let table = out
            .entry(section.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(t) = table.as_object_mut() {
            t.insert(field.to_owned(), v);
        }
        Ok(())
    };
    for (key, value) in raw {
        match value {
            Value::Object(table) if schema.contains_key(&key) => {
                for (field, v) in table {
                    if !has_field(schema, &key, &field) {
                        return Err(unknown(format!("{key}.{field}")));
                    }
                    put(&key, &field, format!("{key}.{field}"), v)?;
                }
            }
            v => match env::flat_file_key(&key) {
                Some((s, f)) => put(s, f, key, v)?,
                None => return Err(unknown(key)),
            },
        }
    }
    Ok(out)
}
