//! Tests of the loader: layering order, the flat variables of the original
//! configuration, unknown names in errors, secrets never printed, and
//! per-worker validation.

use super::*;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn layers(file: Option<&std::path::Path>, pairs: &[(&str, &str)]) -> Layers {
    Layers::build(file, vars(pairs)).unwrap()
}

fn all(pairs: &[(&str, &str)]) -> Result<FleetConfig, ConfigError> {
    FleetConfig::from_layers(&Layers::build(None, vars(pairs))?, &Section::ALL)
}

fn toml(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("engage.toml");
    std::fs::write(&f, text).unwrap();
    (dir, f)
}

#[test]
fn defaults_without_any_layer() {
    let c = all(&[]).unwrap();
    assert_eq!(c.fleet.namespace, "engage");
    assert_eq!(c.limits.concurrency, 32);
    assert_eq!(
        c.broker.retry_delays_ms,
        vec![1_000, 5_000, 30_000, 120_000, 600_000]
    );
    assert_eq!(
        c.store.inline_read_bytes,
        crate::storage::DEFAULT_INLINE_READ_BYTES
    );
    assert_eq!(c.aggregate.weights, [0.4, 0.2, 0.4]);
    assert_eq!(c.gemini, GeminiSection::default());
    assert_eq!(c.drain_timeout(), Duration::from_secs(30));
}

/// Every variable of the README's configuration table, as the tests, bench
/// scripts, deploy manifests and docker-compose set them.
#[test]
fn flat_variables_of_the_original_configuration_keep_working() {
    let c = all(&[
        ("ENGAGE_AMQP_URL", "amqp://u:p@h:1/%2f"),
        ("ENGAGE_REDIS_URL", "redis://r:6380"),
        ("ENGAGE_REDIS_CLUSTER", "true"),
        ("ENGAGE_NAMESPACE", "t1"),
        ("ENGAGE_STORE", "s3://bkt/prefix"),
        ("ENGAGE_STORE_INLINE_READ_BYTES", "0"),
        ("ENGAGE_S3_ENDPOINT", "http://127.0.0.1:9000"),
        ("ENGAGE_S3_REGION", "eu-west-1"),
        ("ENGAGE_S3_FORCE_PATH_STYLE", "true"),
        ("ENGAGE_S3_ROOT", "/data/s3"),
        ("ENGAGE_AUDIO_BUCKETS", "a-bkt,b-bkt"),
        ("ENGAGE_ANALYZER", "gemini"),
        ("ENGAGE_CONCURRENCY", "8"),
        ("ENGAGE_METRICS_ADDR", "127.0.0.1:0"),
        ("ENGAGE_LOG_FORMAT", "json"),
        ("ENGAGE_MAX_ATTEMPTS", "3"),
        ("ENGAGE_RETRY_DELAYS_MS", "100,200"),
        ("ENGAGE_DELIVERY_LIMIT", "7"),
        ("ENGAGE_DRAIN_TIMEOUT_S", "20"),
        ("ENGAGE_MAX_PERMIT_WAIT_S", "2"),
        ("ENGAGE_CLEAN_PIECE_BYTES", "4096"),
        ("ENGAGE_PARTITIONS", "4"),
        ("ENGAGE_WEIGHTS", "0.5,0.25,0.25"),
        ("ENGAGE_GEMINI__MODEL", "gemini-x"),
        ("ENGAGE_GEMINI__BASE_URL", "http://127.0.0.1:1"),
        ("ENGAGE_GEMINI__INLINE_MAX_BYTES", "60000"),
        ("GEMINI_API_KEY", "AIzaKey"),
        ("ENGAGE_GEMINI_RPM", "11"),
        ("ENGAGE_GEMINI_TPM", "12"),
        ("ENGAGE_GEMINI_RPD", "0"),
        ("PATH", "/usr/bin"),
        ("AWS_REGION", "us-east-1"),
    ])
    .unwrap();
    assert_eq!(c.broker.amqp_url.expose(), "amqp://u:p@h:1/%2f");
    assert_eq!(c.redis.url.expose(), "redis://r:6380");
    assert!(c.redis.cluster);
    assert_eq!(c.fleet.namespace, "t1");
    assert_eq!(c.store.root, "s3://bkt/prefix");
    assert_eq!(c.store.inline_read_bytes, 0);
    assert_eq!(
        c.store.s3_endpoint.as_deref(),
        Some("http://127.0.0.1:9000")
    );
    assert_eq!(c.store.s3_region.as_deref(), Some("eu-west-1"));
    assert!(c.store.s3_force_path_style);
    assert_eq!(c.store.s3_root, Some(PathBuf::from("/data/s3")));
    assert_eq!(c.download.audio_buckets, vec!["a-bkt", "b-bkt"]);
    assert_eq!(c.analyze.analyzer, AnalyzerKind::Gemini);
    assert_eq!(c.limits.concurrency, 8);
    assert_eq!(c.telemetry.metrics_addr, "127.0.0.1:0");
    assert_eq!(c.telemetry.log_format, LogFormat::Json);
    assert_eq!(c.limits.max_attempts, 3);
    assert_eq!(c.broker.retry_delays_ms, vec![100, 200]);
    assert_eq!(c.broker.delivery_limit, 7);
    assert_eq!(c.limits.drain_timeout_s, 20);
    assert_eq!(c.analyze.max_permit_wait_s, 2);
    assert_eq!(c.clean.piece_bytes, 4096);
    assert_eq!(c.clean.partitions, 4);
    assert_eq!(c.aggregate.weights, [0.5, 0.25, 0.25]);
    assert_eq!(c.gemini.model, "gemini-x");
    assert_eq!(c.gemini.base_url, "http://127.0.0.1:1");
    assert_eq!(c.gemini.inline_max_bytes, 60_000);
    assert_eq!(c.gemini.api_key.expose(), "AIzaKey");
    assert_eq!((c.gemini.rpm, c.gemini.tpm, c.gemini.rpd), (11, 12, 0));
}

#[test]
fn sectioned_variables_reach_every_field() {
    let c = all(&[
        ("ENGAGE_LIMITS__CONCURRENCY", "5"),
        ("ENGAGE_FLEET__NAMESPACE", "sec"),
        ("ENGAGE_GEMINI__TEMPERATURE", "0.5"),
        ("ENGAGE_STORE__S3_ACCESS_KEY_ID", "0123"),
        ("ENGAGE_S3_SECRET_ACCESS_KEY", "000"),
    ])
    .unwrap();
    assert_eq!(c.limits.concurrency, 5);
    assert_eq!(c.fleet.namespace, "sec");
    assert_eq!(
        c.gemini.temperature, None,
        "gemini is not loaded for acoustic"
    );
    let l = layers(None, &[("ENGAGE_GEMINI__TEMPERATURE", "0.5")]);
    assert_eq!(l.typed::<GeminiSection>().unwrap().temperature, Some(0.5));
    // Text is kept verbatim: a key of digits keeps its leading zero.
    assert_eq!(
        c.store
            .s3_access_key_id
            .as_ref()
            .map(|s| s.expose().as_str()),
        Some("0123")
    );
    assert_eq!(
        c.store
            .s3_secret_access_key
            .as_ref()
            .map(|s| s.expose().as_str()),
        Some("000")
    );
}

#[test]
fn layering_order_is_default_then_file_then_env() {
    let (_d, f) =
        toml("[fleet]\nnamespace = \"from-file\"\n[limits]\nconcurrency = 3\nmax_attempts = 9\n");
    let l = layers(Some(&f), &[("ENGAGE_CONCURRENCY", "4")]);
    let c = FleetConfig::from_layers(&l, &[]).unwrap();
    assert_eq!(c.fleet.namespace, "from-file");
    assert_eq!(c.limits.concurrency, 4);
    assert_eq!(c.limits.max_attempts, 9);
    assert_eq!(c.limits.drain_timeout_s, 30);
    assert_eq!(c.source_file.as_deref(), Some(f.as_path()));
    assert_eq!(
        l.origin("limits", "concurrency"),
        Origin::Env("ENGAGE_CONCURRENCY".into())
    );
    assert!(
        matches!(l.origin("limits", "max_attempts"), Origin::File { key, .. } if key == "limits.max_attempts")
    );
    assert_eq!(l.origin("limits", "drain_timeout_s"), Origin::Default);
}

#[test]
fn flat_keys_of_an_original_file_move_into_their_sections() {
    let (_d, f) = toml(
        "namespace = \"old\"\nconcurrency = 3\nstore = \"file:///x\"\n[gemini]\nmodel = \"m\"\n",
    );
    let l = layers(Some(&f), &[]);
    let c = FleetConfig::from_layers(&l, &[]).unwrap();
    assert_eq!(c.fleet.namespace, "old");
    assert_eq!(c.limits.concurrency, 3);
    assert_eq!(c.store.root, "file:///x");
    assert_eq!(l.typed::<GeminiSection>().unwrap().model, "m");
    assert!(
        matches!(l.origin("limits", "concurrency"), Origin::File { key, .. } if key == "concurrency")
    );
}

#[test]
fn gemini_api_key_wins_and_empty_means_unset() {
    let both = layers(
        None,
        &[
            ("ENGAGE_GEMINI__API_KEY", "from-engage"),
            ("GEMINI_API_KEY", "from-conventional"),
        ],
    );
    let g = both.typed::<GeminiSection>().unwrap();
    assert_eq!(g.api_key.expose(), "from-conventional");
    let (_d, f) = toml("[gemini]\napi_key = \"from-file\"\n");
    let g = layers(Some(&f), &[("GEMINI_API_KEY", "")])
        .typed::<GeminiSection>()
        .unwrap();
    assert_eq!(g.api_key.expose(), "from-file");
}

#[test]
fn unknown_variables_are_errors_naming_them() {
    for name in [
        "ENGAGE_CLEAN_SERVICE_HOST",
        "ENGAGE_CONCURENCY",
        "ENGAGE_GEMINI__MODLE",
        "ENGAGE_NOPE__X",
    ] {
        let e = Layers::build(None, vars(&[(name, "1")])).unwrap_err();
        assert!(matches!(e, ConfigError::UnknownVariable { .. }), "{e}");
        assert!(e.to_string().contains(name), "{e}");
    }
    let e = Layers::build(None, vars(&[("ENGAGE_CLEAN_SERVICE_HOST", "10.0.0.1")])).unwrap_err();
    assert!(e.to_string().contains("enableServiceLinks"), "{e}");
    let e = Layers::build(None, vars(&[("ENGAGE_GEMINI__MODLE", "x")])).unwrap_err();
    assert!(e.to_string().contains("model"), "lists the fields: {e}");
}

#[test]
fn unknown_file_keys_are_errors_naming_them() {
    for (text, key) in [
        ("namespase = \"typo\"\n", "namespase"),
        ("[limits]\nconcurency = 1\n", "limits.concurency"),
        ("[gemini]\nmodle = \"x\"\n", "gemini.modle"),
        ("[nope]\nx = 1\n", "nope"),
    ] {
        let (_d, f) = toml(text);
        let e = Layers::build(Some(&f), vars(&[])).unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnknownKey { key: k, .. } if k == key),
            "{e}"
        );
        assert!(e.to_string().contains(key), "{e}");
    }
    let e = Layers::build(
        Some(std::path::Path::new("/nonexistent/engage.toml")),
        vars(&[]),
    );
    assert!(matches!(e, Err(ConfigError::Read(_))));
}

#[test]
fn one_field_set_by_two_names_is_an_error() {
    let e = Layers::build(
        None,
        vars(&[
            ("ENGAGE_CONCURRENCY", "1"),
            ("ENGAGE_LIMITS__CONCURRENCY", "2"),
        ]),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("ENGAGE_CONCURRENCY") && msg.contains("ENGAGE_LIMITS__CONCURRENCY"),
        "{msg}"
    );
}

#[test]
fn bad_values_name_the_field_and_its_origin() {
    let e = all(&[("ENGAGE_CONCURRENCY", "0")]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("limits.concurrency") && msg.contains("ENGAGE_CONCURRENCY"),
        "{msg}"
    );
    let e = all(&[("ENGAGE_CONCURRENCY", "lots")]).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Section {
                section: "limits",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("ENGAGE_CONCURRENCY"), "{e}");
    assert!(all(&[("ENGAGE_NAMESPACE", "a b")]).is_err());
    assert!(all(&[("ENGAGE_WEIGHTS", "0,0,0")]).is_err());
    assert!(all(&[("ENGAGE_PARTITIONS", "0")]).is_err());
    assert!(
        all(&[("ENGAGE_S3_ACCESS_KEY_ID", "id")]).is_err(),
        "key id without secret"
    );
}

#[test]
fn each_worker_validates_only_its_sections() {
    let bad_gemini = [("ENGAGE_GEMINI_RPM", "many"), ("ENGAGE_PARTITIONS", "0")];
    let l = layers(None, &bad_gemini);
    // match uses neither [clean] nor [gemini].
    assert!(FleetConfig::from_layers(&l, Section::for_stage(StageName::Match)).is_ok());
    // clean fails on its own bad partitions, not on gemini.
    let e = FleetConfig::from_layers(&l, Section::for_stage(StageName::Clean)).unwrap_err();
    assert!(e.to_string().contains("clean.partitions"), "{e}");
    let l = layers(None, &[("ENGAGE_GEMINI_RPM", "many")]);
    assert!(FleetConfig::from_layers(&l, Section::for_stage(StageName::Clean)).is_ok());
    // analyze with the acoustic analyzer does not look at [gemini] either ...
    assert!(FleetConfig::from_layers(&l, Section::for_stage(StageName::Analyze)).is_ok());
    // ... but with gemini it does, and needs a key.
    let l = layers(None, &[("ENGAGE_ANALYZER", "gemini")]);
    let e = FleetConfig::from_layers(&l, Section::for_stage(StageName::Analyze)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("gemini.api_key") && msg.contains("GEMINI_API_KEY"),
        "{msg}"
    );
    let l = layers(
        None,
        &[("ENGAGE_ANALYZER", "gemini"), ("GEMINI_API_KEY", "k")],
    );
    let c = FleetConfig::from_layers(&l, Section::for_stage(StageName::Analyze)).unwrap();
    assert_eq!(c.gemini.api_key.expose(), "k");
    // A clean worker never fails for want of a Gemini key.
    assert!(FleetConfig::from_layers(&l, Section::for_stage(StageName::Clean)).is_ok());
}

#[test]
fn secrets_never_print() {
    let secrets = [
        "amqp-pw-1",
        "redis-pw-2",
        "AIzaKey3",
        "AKIDKEY4",
        "s3secret5",
    ];
    let l = layers(
        None,
        &[
            ("ENGAGE_AMQP_URL", "amqp://u:amqp-pw-1@h:1/%2f"),
            ("ENGAGE_REDIS_URL", "redis://:redis-pw-2@r:6379"),
            ("GEMINI_API_KEY", "AIzaKey3"),
            ("ENGAGE_S3_ACCESS_KEY_ID", "AKIDKEY4"),
            ("ENGAGE_S3_SECRET_ACCESS_KEY", "s3secret5"),
            ("ENGAGE_ANALYZER", "gemini"),
        ],
    );
    let c = FleetConfig::from_layers(&l, &Section::ALL).unwrap();
    let report = l.report();
    let texts = [
        format!("{c:?}"),
        format!("{l:?}"),
        format!("{report:?}"),
        serde_json::to_string(&report).unwrap(),
        serde_json::to_string(&c.gemini).unwrap(),
        serde_json::to_string(&c.store).unwrap(),
    ];
    for t in &texts {
        for s in secrets {
            assert!(!t.contains(s), "{s} leaked in {t}");
        }
    }
    assert!(texts[3].contains("[REDACTED]"));
}

#[test]
fn report_names_every_origin() {
    let (_d, f) = toml("[limits]\nmax_attempts = 9\n");
    let l = layers(Some(&f), &[("ENGAGE_CONCURRENCY", "4")]);
    let r = l.report();
    assert_eq!(r.len(), layers::SECTIONS.len());
    let limits = r.iter().find(|s| s.section == "limits").unwrap();
    let field = |n: &str| limits.fields.iter().find(|f| f.field == n).unwrap();
    assert_eq!(field("concurrency").origin, "env ENGAGE_CONCURRENCY");
    assert!(field("max_attempts").origin.starts_with("file "));
    assert_eq!(field("drain_timeout_s").origin, "default");
    assert_eq!(field("drain_timeout_s").variable, "ENGAGE_DRAIN_TIMEOUT_S");
    let gemini = r.iter().find(|s| s.section == "gemini").unwrap();
    assert!(gemini.error.is_none(), "no key needed for acoustic");
    assert!(gemini.note.is_some());
}

#[test]
fn defaults_tree_is_the_schema_of_every_section() {
    let t = layers::defaults_tree();
    assert_eq!(t.keys().count(), layers::SECTIONS.len());
    for (section, fields) in &t {
        for (field, v) in fields.as_object().unwrap() {
            assert_ne!(
                v, "[REDACTED]",
                "{section}.{field}: secret default must be exposed"
            );
            if v.is_null() {
                let k = (section.as_str(), field.as_str());
                assert!(
                    env::OPTIONAL_TEXT_FIELDS.contains(&k)
                        || env::OPTIONAL_NUMBER_FIELDS.contains(&k),
                    "{section}.{field}: optional field must be listed as text or number"
                );
            }
        }
    }
    for (var, s, f) in env::FLAT {
        assert!(
            t[*s].get(*f).is_some(),
            "{var} maps to a missing field {s}.{f}"
        );
    }
}

#[test]
fn docs_list_every_field_and_flat_variable() {
    let docs = include_str!("../../../../docs/configuration.md");
    for (section, fields) in &layers::defaults_tree() {
        assert!(
            docs.contains(&format!("`[{section}]`")),
            "docs miss section {section}"
        );
        for field in fields.as_object().unwrap().keys() {
            assert!(
                docs.contains(&format!("`{section}.{field}`")),
                "docs miss {section}.{field}"
            );
        }
    }
    for (var, _, _) in env::FLAT {
        assert!(docs.contains(&format!("`{var}`")), "docs miss {var}");
    }
}
