//! CSV injection end to end: `engage run` on generated data where one learner's
//! id is a spreadsheet formula and its phase is `=1+2`. The CSV outputs carry
//! the cells neutralised (a leading `'`), `report.json` keeps the raw values.

use std::path::Path;

use crate::support::fleet::{engage_run, gen_data};

const EVIL_ID: &str = "@SUM(1+1)*cmd|' /C calc'!A0";
const EVIL_PHASE: &str = "=1+2";

/// Renames learner `id` to [`EVIL_ID`] in the activity log (its id fields
/// only, not its audio paths) and in the sessions file, where its phase
/// becomes [`EVIL_PHASE`].
fn plant(activity: &Path, sessions: &Path, id: &str) {
    let text = std::fs::read_to_string(activity).expect("activity");
    let text = text
        .replace(
            &format!("\"user_id\":\"{id}\""),
            &format!("\"user_id\":\"{EVIL_ID}\""),
        )
        .replace(
            &format!("\"learner_id\":\"{id}\""),
            &format!("\"learner_id\":\"{EVIL_ID}\""),
        );
    std::fs::write(activity, text).expect("write activity");
    let text = std::fs::read_to_string(sessions).expect("sessions");
    let mut out = String::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() == 7 && fields[0] == id {
            let mut f = fields.clone();
            f[0] = EVIL_ID;
            f[6] = EVIL_PHASE;
            out.push_str(&f.join(","));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    std::fs::write(sessions, out).expect("write sessions");
}

/// The rows of a CSV file as header-keyed maps.
fn rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).expect("csv");
    let header = r.headers().expect("header").clone();
    r.records()
        .map(|rec| {
            let rec = rec.expect("record");
            header
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn formula_ids_and_phases_are_neutralised_in_csv_but_raw_in_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = gen_data(&dir.path().join("data"), 6, 4, 11).expect("gen-data");
    let sessions = std::fs::read_to_string(&data.sessions).expect("sessions");
    let id = sessions
        .lines()
        .nth(1)
        .and_then(|l| l.split(',').next())
        .expect("a learner")
        .to_string();
    plant(&data.activity, &data.sessions, &id);
    let out = engage_run(&data, &dir.path().join("out")).expect("engage run");

    let safe_id = format!("'{EVIL_ID}");
    let safe_phase = format!("'{EVIL_PHASE}");
    let report = rows(&out.join("report.csv"));
    let evil: Vec<_> = report.iter().filter(|r| r["user_id"] == safe_id).collect();
    assert!(!evil.is_empty(), "no neutralised learner row in report.csv");
    assert!(
        evil.iter().any(|r| r["phase"] == safe_phase),
        "phase not neutralised: {evil:?}"
    );
    let matched = rows(&out.join("matched.csv"));
    let evil: Vec<_> = matched.iter().filter(|r| r["user_id"] == safe_id).collect();
    assert!(
        !evil.is_empty(),
        "no neutralised learner row in matched.csv"
    );
    assert!(
        evil.iter().any(|r| r["phase"] == safe_phase),
        "phase not neutralised: {evil:?}"
    );
    // No text cell anywhere still starts a formula; numbers (gaps may be
    // negative) stay numbers.
    for (file, table) in [("report.csv", &report), ("matched.csv", &matched)] {
        for row in table.iter() {
            for (col, v) in row.iter() {
                if v.starts_with('-') {
                    assert!(v.parse::<f64>().is_ok(), "{file} {col}: {v:?}");
                } else {
                    assert!(
                        !v.starts_with(['=', '+', '@', '\t', '\r']),
                        "{file} {col}: {v:?}"
                    );
                }
            }
        }
    }

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json"))
            .expect("valid JSON");
    let raw: Vec<&serde_json::Value> = json
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["user_id"] == EVIL_ID)
        .collect();
    assert!(!raw.is_empty(), "report.json lost the raw learner id");
    assert!(raw.iter().any(|r| r["phase"] == EVIL_PHASE), "{raw:?}");
}
