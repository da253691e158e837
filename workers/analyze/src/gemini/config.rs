//! [`GeminiConfig`]: where and how the Gemini client calls the API.
//!
//! It is the fleet configuration's typed `[gemini]` section
//! ([`GeminiSection`], loaded and validated by the runtime's one loader:
//! `ENGAGE_GEMINI__MODEL=…`, `GEMINI_API_KEY`), so every setting is declared
//! once; the API key is a [`Secret`](engage_runtime::secret::Secret) that
//! never prints. Tests and tools build it directly.

use engage_runtime::config::GeminiSection;

/// Gemini client settings: the `[gemini]` section itself.
pub type GeminiConfig = GeminiSection;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemini::prompt::PROMPT_VERSION;
    use engage_runtime::secret::Secret;

    #[test]
    fn deserialises_partial_tables_and_rejects_unknown_fields() {
        let c: GeminiConfig = serde_json::from_value(
            serde_json::json!({"model": "models/gemini-2.5-pro", "api_key": "k"}),
        )
        .unwrap();
        assert_eq!(c.model_id(), "gemini-2.5-pro");
        assert_eq!(c.analyzer_id(), "gemini:gemini-2.5-pro:p1");
        assert_eq!(c.api_key.expose(), "k");
        assert_eq!(c.inline_max_bytes, 15_000_000);
        let bad = serde_json::from_value::<GeminiConfig>(serde_json::json!({"modle": "x"}));
        let e = bad.unwrap_err();
        assert!(e.to_string().contains("unknown field `modle`"), "{e}");
    }

    #[test]
    fn the_default_prompt_is_one_this_build_knows() {
        assert_eq!(GeminiConfig::default().prompt_version, PROMPT_VERSION);
    }

    #[test]
    fn key_never_printed() {
        let c = GeminiConfig {
            api_key: Secret::new("AIzaSecretKey".to_owned()),
            ..GeminiConfig::default()
        };
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("AIzaSecretKey"), "{dbg}");
        assert!(dbg.contains("[REDACTED]"));
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("AIzaSecretKey"));
    }
}
