//! Runs every fuzz target on random bytes and on mutated seeds, and replays
//! the saved crashes, under an address-space limit so that an allocation sized
//! from an untrusted header aborts here instead of passing on a big machine.
//!
//! Cases per target: `PROPTEST_CASES` (default 256 here; a long run:
//! `PROPTEST_CASES=200000 cargo test --release -p engage-fuzz`). A failing
//! input is shrunk by proptest and printed; save it under
//! `regressions/TARGET/` so it is replayed by every later run.

use std::path::{Path, PathBuf};
use std::sync::Once;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The address-space limit of this test process: far above what any target
/// needs on the inputs here, far below what a header claiming gigabytes of
/// samples would reserve.
const ADDRESS_SPACE_LIMIT: u64 = 6 << 30;

fn limit_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use nix::sys::resource::{Resource, setrlimit};
        setrlimit(
            Resource::RLIMIT_AS,
            ADDRESS_SPACE_LIMIT,
            ADDRESS_SPACE_LIMIT,
        )
        .expect("setrlimit RLIMIT_AS");
    });
}

fn dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target)
}

fn files(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir(kind, target)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| e.file_name() != ".gitkeep")
        .map(|e| {
            let bytes = std::fs::read(e.path()).expect("read seed");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    out
}

/// One edit of a seed: flip, overwrite, insert, delete, truncate, repeat.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Repeat(usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let interesting = prop::sample::select(vec![
        0u8, 0xff, 0x7f, 0x80, b'"', b'\\', b'\n', b'\r', b',', b'[', b']', b'{', b'}', b'=', b'@',
        b'#', b'/', b'.', b'%', b':',
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), interesting).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1usize..32, 1usize..64).prop_map(|(i, n, k)| Edit::Repeat(i, n, k)),
    ]
}

fn apply(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = b.len();
        let at = |i: usize| if len == 0 { 0 } else { i % len };
        match e {
            Edit::Flip(i, x) if len > 0 => b[at(*i)] ^= x,
            Edit::Set(i, x) if len > 0 => b[at(*i)] = *x,
            Edit::Insert(i, v) => {
                let p = if len == 0 { 0 } else { i % (len + 1) };
                b.splice(p..p, v.iter().copied());
            }
            Edit::Delete(i, n) if len > 0 => {
                let p = at(*i);
                b.drain(p..(p + n).min(len));
            }
            Edit::Truncate(i) => b.truncate(if len == 0 { 0 } else { i % len }),
            Edit::Repeat(i, n, k) if len > 0 => {
                let p = at(*i);
                let chunk = b[p..(p + n).min(len)].to_vec();
                for _ in 0..*k {
                    b.splice(p..p, chunk.iter().copied());
                }
            }
            _ => {}
        }
    }
    b
}

fn fuzz(target: &'static str) {
    limit_memory();
    for (name, bytes) in files("regressions", target) {
        eprintln!("replaying regressions/{target}/{name}");
        engage_fuzz::run(target, &bytes);
    }
    let seeds = files("seeds", target);
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let random = prop::collection::vec(any::<u8>(), 0..2048).boxed();
    let strategy = if seeds.is_empty() {
        random
    } else {
        let seeds: Vec<Vec<u8>> = seeds.into_iter().map(|(_, b)| b).collect();
        let mutated = (
            prop::sample::select(seeds),
            prop::collection::vec(edit(), 0..8),
        )
            .prop_map(|(seed, edits)| apply(seed, &edits));
        prop_oneof![1 => random, 3 => mutated].boxed()
    };
    let result = runner.run(&strategy, |bytes| {
        engage_fuzz::run(target, &bytes);
        Ok(())
    });
    if let Err(e) = result {
        panic!("fuzz target {target} failed: {e}");
    }
}

#[test]
fn activity() {
    fuzz("activity");
}

#[test]
fn sessions() {
    fuzz("sessions");
}

#[test]
fn envelope() {
    fuzz("envelope");
}

#[test]
fn audio() {
    fuzz("audio");
}

#[test]
fn gemini() {
    fuzz("gemini");
}

#[test]
fn links() {
    fuzz("links");
}

#[test]
fn every_target_has_seeds() {
    for t in engage_fuzz::TARGETS {
        assert!(!files("seeds", t).is_empty(), "no seeds for {t}");
    }
}
