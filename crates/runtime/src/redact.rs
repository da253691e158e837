//! Removing credentials from anything printed: URLs, error chains, log lines
//! and panic messages.
//!
//! Two mechanisms, used together:
//!
//! - [`redact_url`] strips the password from every URL form the fleet accepts
//!   (`scheme://user:pw@host`, `scheme:user:pw@host`, `user:pw@host`,
//!   percent-encoded passwords, `redis://:pw@host`, `rediss://`, query
//!   parameters such as `?password=`, and comma-separated cluster seeds).
//! - A process-wide registry of secret values ([`register_secret`],
//!   [`register_url`]): [`redact_text`] replaces every occurrence of a
//!   registered value (and of its percent-decoded form) in arbitrary text,
//!   so an error chain that echoes a URL in a form no parser anticipated
//!   (lapin's "invalid URL" error quotes it whole) still prints no password.
//!
//! The workers register their URLs right after loading the configuration
//! (`app::main`), the CLI does the same for `enqueue`/`status`; every log line
//! goes through [`RedactingStderr`] and [`install_panic_hook`] redacts panic
//! messages.

use std::io::Write;
use std::sync::{OnceLock, RwLock};

/// What replaces a password.
pub const MASK: &str = "***";

/// Shortest value the registry redacts in free text: shorter values would
/// mask ordinary words and digits everywhere. URLs are still redacted by
/// [`redact_url`] whatever the password length.
pub const MIN_SECRET_LEN: usize = 3;

/// Query parameters whose values are credentials.
const SECRET_PARAMS: [&str; 10] = [
    "password", "passwd", "pass", "pwd", "secret", "token", "api_key", "apikey", "key", "auth",
];

/// Schemes recognised in the `scheme:user:pw@host` form (without `//`).
const SCHEMES: [&str; 8] = [
    "amqp",
    "amqps",
    "redis",
    "rediss",
    "redis+unix",
    "http",
    "https",
    "unix",
];

fn registry() -> &'static RwLock<Vec<String>> {
    static SECRETS: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| RwLock::new(Vec::new()))
}

/// Registers a secret value: from now on [`redact_text`] masks it (and its
/// percent-decoded form). Values shorter than [`MIN_SECRET_LEN`] are ignored.
pub fn register_secret(value: &str) {
    let mut candidates = vec![value.to_string()];
    let decoded = percent_decode(value);
    if decoded != value {
        candidates.push(decoded);
    }
    let Ok(mut reg) = registry().write() else {
        return;
    };
    for c in candidates {
        if c.len() >= MIN_SECRET_LEN && !reg.contains(&c) {
            reg.push(c);
        }
    }
    // Longest first, so a value containing another is masked whole.
    reg.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Registers a URL (or comma-separated seed list) holding credentials: the
/// whole string and each password in it.
pub fn register_url(url: &str) {
    if url.contains('@') || url.contains('=') {
        register_secret(url);
    }
    for seed in url.split(',') {
        for pw in passwords_in(seed) {
            register_secret(&pw);
        }
    }
}

/// Masks every registered secret in `text`, then every password in
/// URL-like tokens ([`redact_url`]).
pub fn redact_text(text: &str) -> String {
    let mut out = text.to_string();
    if let Ok(reg) = registry().read() {
        for s in reg.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
    }
    // Defence in depth for unregistered values: URL-looking tokens.
    out.split_inclusive(char::is_whitespace)
        .map(|tok| {
            let word = tok.trim_end();
            if word.contains('@') || word.contains('=') {
                let (lead, rest) = split_leading_punct(word);
                let (core, trail) = split_trailing_punct(rest);
                format!("{lead}{}{trail}{}", redact_url(core), &tok[word.len()..])
            } else {
                tok.to_string()
            }
        })
        .collect()
}

/// [`redact_text`] of an error's whole chain (`{:#}` form).
pub fn redact_error(e: &anyhow::Error) -> String {
    redact_text(&format!("{e:#}"))
}

/// Strips passwords from a URL or comma-separated list of seed URLs, keeping
/// scheme, user name, host, port and path so the endpoint can be named.
pub fn redact_url(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match split_userinfo(base) {
        Some((scheme, userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}{user}:{MASK}@{host}"),
            // `scheme:secret@host` (no `//`): the single part is a password.
            None if !scheme.ends_with("//") && !scheme.is_empty() => {
                format!("{scheme}{MASK}@{host}")
            }
            None => base.to_string(),
        },
        None => base.to_string(),
    };
    if let Some(q) = query {
        out.push('?');
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                    format!("{k}={MASK}")
                }
                _ => p.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

/// Splits `base` (no query) into `(scheme prefix, userinfo, host and path)`
/// when it carries a userinfo (`…@`). The scheme prefix is `scheme://`,
/// `scheme:` or empty.
fn split_userinfo(base: &str) -> Option<(&str, &str, &str)> {
    let (scheme_len, rest) = match base.find("://") {
        Some(i) => (i + 3, &base[i + 3..]),
        None => {
            let known = base
                .split_once(':')
                .filter(|(s, _)| SCHEMES.contains(&s.to_ascii_lowercase().as_str()));
            match known {
                Some((s, r)) => (s.len() + 1, r),
                None => (0, base),
            }
        }
    };
    // The userinfo ends at the last `@` before the path.
    let path_at = rest.find('/').unwrap_or(rest.len());
    let at = rest[..path_at].rfind('@').or_else(|| rest.rfind('@'))?;
    Some((&base[..scheme_len], &rest[..at], &rest[at + 1..]))
}

/// The passwords in one URL (raw, as written).
fn passwords_in(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    if let Some((scheme, userinfo, _)) = split_userinfo(base) {
        match userinfo.split_once(':') {
            Some((_, pw)) => out.push(pw.to_string()),
            None if !scheme.ends_with("//") => out.push(userinfo.to_string()),
            None => {}
        }
    }
    for p in query.into_iter().flat_map(|q| q.split('&')) {
        if let Some((k, v)) = p.split_once('=')
            && SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str())
        {
            out.push(v.to_string());
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

fn split_leading_punct(s: &str) -> (&str, &str) {
    let i = s
        .find(|c: char| !matches!(c, '"' | '\'' | '(' | '[' | '<' | '`'))
        .unwrap_or(s.len());
    s.split_at(i)
}

fn split_trailing_punct(s: &str) -> (&str, &str) {
    let i = s
        .trim_end_matches(['"', '\'', ')', ']', '>', '`', '.', ';', ':'])
        .len();
    s.split_at(i)
}

/// Decodes `%XX` escapes (invalid escapes are kept as written).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `tracing` writer that masks secrets in every log line before it reaches
/// stderr (one buffered event per writer, redacted and written on drop).
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactingStderr;

/// One log event being formatted; see [`RedactingStderr`].
#[derive(Debug, Default)]
pub struct RedactingLine(Vec<u8>);

impl Write for RedactingLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = redact_text(&String::from_utf8_lossy(&self.0));
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingLine;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingLine::default()
    }
}

/// Replaces the panic hook with one that prints the same message (thread,
/// location, payload) with secrets masked. Idempotent enough: installing
/// twice just replaces the hook again.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".into());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        let msg = format!("thread '{name}' panicked{location}:\n{payload}\n");
        let _ = std::io::stderr().write_all(redact_text(&msg).as_bytes());
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "S3cretPW";

    #[test]
    fn every_url_form_loses_its_password() {
        for (url, want) in [
            (
                "amqp://guest:S3cretPW@h:5672/%2f",
                "amqp://guest:***@h:5672/%2f",
            ),
            ("amqp:guest:S3cretPW@host:5672", "amqp:guest:***@host:5672"),
            ("guest:S3cretPW@host", "guest:***@host"),
            ("redis://:S3cretPW@h:6379", "redis://:***@h:6379"),
            ("rediss://u:S3cretPW@h:6380/0", "rediss://u:***@h:6380/0"),
            ("amqp:S3cretPW@host", "amqp:***@host"),
            ("amqp://u:S3cr%40tPW@h/%2f", "amqp://u:***@h/%2f"),
            ("amqp://u:S3cr@tPW@h/v", "amqp://u:***@h/v"),
            (
                "redis://h:6379/?password=S3cretPW&db=1",
                "redis://h:6379/?password=***&db=1",
            ),
            (
                "redis://:S3cretPW@a:1,redis://:S3cretPW@b:2",
                "redis://:***@a:1,redis://:***@b:2",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://user@h", "redis://user@h"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn registered_secrets_are_masked_in_any_text() {
        register_url("amqp:guest:Zq9%2Fsecret@host:5672");
        let chain = "connecting: invalid URL \"amqp:guest:Zq9%2Fsecret@host:5672\": \
                     decoded password Zq9/secret";
        let got = redact_text(chain);
        assert!(!got.contains("Zq9"), "{got}");
        assert!(got.contains("connecting: invalid URL"), "{got}");
        // Unregistered URL in free text: the token scrub still catches it.
        let got = redact_text(&format!("at (amqp://u:{PW}@h/v). retrying"));
        assert!(!got.contains(PW), "{got}");
        assert!(got.ends_with(". retrying"), "{got}");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b%2Fc%zz%4"), "a@b/c%zz%4");
    }
}
