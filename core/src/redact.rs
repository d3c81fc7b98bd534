//! Redaction of secrets in payloads (docs/capture-format.md "Redaction"): a secret is replaced by
//! `[redacted sha256:<12 hex digits of sha256(secret)>]`, plus ` sub:<12 hex digits>` for a JWT
//! with a `sub` claim.
//!
//! A token is found however it is written: a JWT also with any of its characters JSON-escaped
//! (`\u0065yJ…`, also escaped twice for JSON carried in a JSON string) or percent-encoded (once or
//! twice), the value of a `"jwt"` member in the raw text (so a duplicated key, which a JSON parser
//! would drop, cannot hide it), and a binary payload like a text one (one character a byte).
//! Its marker is the plain token's.
//!
//! Each function returns its input borrowed when there was nothing to redact, and looks for cheap
//! substrings before anything else.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem;
use regex::Regex;
use sha2::{Digest, Sha256};

use crate::json_value::{parse, Value};

const MARKER_PREFIX: &str = "[redacted sha256:";

/// A redaction marker: the token's fingerprint, then its `sub`'s when it had one.
static MARKER_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[redacted sha256:([0-9a-f]{12})(?: sub:([0-9a-f]{12}))?\]").unwrap()
});

/// Three base64url segments, the first one a JSON object ("eyJ" is base64 of '{"'). The signature
/// may be empty (alg "none"). Matches are replaced whole.
static JWT_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*").unwrap());

/// The string value of a "jwt" member (the jwt of `.ams.headers.ConsumerAuthentication`), key
/// possibly escaped, found in the raw text rather than by a JSON parser: a parser keeps only the
/// last of duplicated keys ("headers", "jwt", "type") while the server may read the first, and a
/// payload that is not JSON at all may still carry one. The blanks around the colon are what
/// Python's `\s` matches (`str.isspace`), which the captures written so far were redacted with.
static JWT_MEMBER_RE: LazyLock<Regex> = LazyLock::new(|| {
    let blank = r"[\t\n\x0B\x0C\r\x1C-\x1F \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]";
    Regex::new(&format!(
        r#""(?:j|\\u006[aA])(?:w|\\u0077)(?:t|\\u0074)"{blank}*:{blank}*"([^"\\]*(?:\\.[^"\\]*)*)""#
    ))
    .unwrap()
});

/// First 12 hex digits of the SHA-256 of the secret (its UTF-8 bytes).
pub fn fingerprint(secret: &[u8]) -> String {
    Sha256::digest(secret)[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn marker(secret: &[u8]) -> String {
    match jwt_sub(secret) {
        Some(sub) => format!(
            "{MARKER_PREFIX}{} sub:{}]",
            fingerprint(secret),
            fingerprint(sub.as_bytes())
        ),
        None => format!("{MARKER_PREFIX}{}]", fingerprint(secret)),
    }
}

pub fn is_marker(value: &str) -> bool {
    value.starts_with(MARKER_PREFIX)
        && MARKER_RE
            .find(value)
            .is_some_and(|m| m.start() == 0 && m.end() == value.len())
}

/// (token fingerprint, sub fingerprint) of every redaction marker in `text`, in order.
pub fn marked_tokens(text: &str) -> Vec<(String, Option<String>)> {
    if !text.contains(MARKER_PREFIX) {
        return Vec::new();
    }
    MARKER_RE
        .captures_iter(text)
        .map(|c| (c[1].to_owned(), c.get(2).map(|s| s.as_str().to_owned())))
        .collect()
}

/// Whether `text` holds a plain JWT.
pub fn has_jwt(text: &str) -> bool {
    JWT_RE.is_match(text)
}

/// The `sub` claim of a JWT-shaped token, if it has one. The claims segment is decoded as Python's
/// `base64.urlsafe_b64decode` does (characters outside the alphabet skipped), and read as orjson does.
pub fn jwt_sub(token: &[u8]) -> Option<String> {
    let mut parts = token.split(|&b| b == b'.');
    let (header, claims) = (parts.next()?, parts.next()?);
    if parts.next().is_none()
        || parts.next().is_some()
        || !header.starts_with(b"eyJ")
        || !claims.is_ascii()
    {
        return None;
    }
    let mut padded = claims.to_vec();
    padded.resize(claims.len() + (4 - claims.len() % 4) % 4, b'=');
    let decoded = a2b_base64(&padded)?;
    match parse(std::str::from_utf8(&decoded).ok()?)?.get("sub") {
        Value::Str(sub) => Some(sub.to_string()),
        _ => None,
    }
}

/// CPython's `binascii.a2b_base64` in its default (not strict) mode, after the url-safe alphabet
/// was translated: None where it raises.
fn a2b_base64(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 4 * 3);
    let (mut quad_pos, mut left, mut pads) = (0u8, 0u32, 0u8);
    for &c in data {
        if c == b'=' {
            if quad_pos >= 2 {
                pads += 1;
                if quad_pos + pads >= 4 {
                    return Some(out);
                }
            }
            continue;
        }
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => continue,
        } as u32;
        pads = 0;
        match quad_pos {
            0 => left = v,
            1 => {
                out.push(((left << 2) | (v >> 4)) as u8);
                left = v & 0x0f;
            }
            2 => {
                out.push(((left << 4) | (v >> 2)) as u8);
                left = v & 0x03;
            }
            _ => out.push(((left << 6) | v) as u8),
        }
        quad_pos = (quad_pos + 1) % 4;
    }
    (quad_pos == 0).then_some(out)
}

/// A character of a JWT (A-Z a-z 0-9 - _ .).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

/// The token character two hex digits stand for.
fn token_code(s: &[u8], at: usize) -> Option<u8> {
    let hex = std::str::from_utf8(s.get(at..at + 2)?).ok()?;
    let c = u8::from_str_radix(hex, 16)
        .ok()
        .filter(|_| hex.bytes().all(|b| b.is_ascii_hexdigit()))?;
    is_token_char(c).then_some(c)
}

/// One JWT character written as an escape at `at` of `s`, and its length: `\u00XX`, `\\u00XX` (JSON
/// carried in a JSON string; an escaped backslash before it is left alone, so the first backslash
/// counts only when no backslash precedes it), `%XX` or `%25XX` (percent-encoded twice).
fn escaped_at(s: &[u8], at: usize) -> Option<(u8, usize)> {
    let rest = &s[at..];
    if rest.starts_with(b"\\\\u00") && (at == 0 || s[at - 1] != b'\\') {
        if let Some(c) = token_code(s, at + 5) {
            return Some((c, 7));
        }
    }
    if rest.starts_with(b"\\u00") {
        return token_code(s, at + 4).map(|c| (c, 6));
    }
    if rest.starts_with(b"%25") {
        if let Some(c) = token_code(s, at + 3) {
            return Some((c, 5));
        }
    }
    if rest.starts_with(b"%") {
        return token_code(s, at + 1).map(|c| (c, 3));
    }
    None
}

/// Whether some JWT character is written as an escape (what lets a text into the slow path).
fn has_escaped_token_char(s: &[u8]) -> bool {
    s.iter().enumerate().any(|(at, &b)| {
        (b == b'\\' && s[at..].starts_with(b"\\u00") && token_code(s, at + 4).is_some())
            || (b == b'%'
                && (token_code(s, at + 1).is_some()
                    || (s[at..].starts_with(b"%25") && token_code(s, at + 3).is_some())))
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memmem::find(hay, needle).is_some()
}

// The searchers of `may_hold_token`, built once (building one costs as much as a short search).
static EYJ: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"eyJ"));
static JWT_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"jwt\""));
static ESCAPE: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"\\u00"));

fn replace_plain_jwts(text: &str) -> Cow<'_, str> {
    JWT_RE.replace_all(text, |m: &regex::Captures| marker(m[0].as_bytes()))
}

/// `text` with every JWT replaced, plain or with escaped characters (escapes first: a plain match
/// would stop at the first escape and leave the rest of the token).
pub fn replace_jwts(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let mut out = Cow::Borrowed(text);
    if (contains(b, b"\\u00") || b.contains(&b'%')) && has_escaped_token_char(b) {
        out = replace_escaped_jwts(text);
    }
    if out.contains("eyJ") {
        if let Cow::Owned(clean) = replace_plain_jwts(&out) {
            out = Cow::Owned(clean);
        }
    }
    out
}

/// Every run of token characters, some escaped, that holds a JWT once decoded: decoded with its
/// JWTs marked; the rest as it was.
fn replace_escaped_jwts(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let mut out = String::new();
    let (mut copied, mut at) = (0, 0);
    while at < b.len() {
        let start = at;
        loop {
            if at < b.len() && is_token_char(b[at]) {
                at += 1;
            } else if let Some((_, len)) = (at < b.len()).then(|| escaped_at(b, at)).flatten() {
                at += len;
            } else {
                break;
            }
        }
        if at == start {
            at += 1;
            continue;
        }
        let run = &b[start..at];
        if !run.contains(&b'\\') && !run.contains(&b'%') {
            continue;
        }
        let decoded = decode_escapes(run);
        if !decoded.contains("eyJ") {
            continue;
        }
        if let Cow::Owned(clean) = replace_plain_jwts(&decoded) {
            out.push_str(&text[copied..start]);
            out.push_str(&clean);
            copied = at;
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

fn decode_escapes(run: &[u8]) -> String {
    let mut decoded = String::with_capacity(run.len());
    let mut at = 0;
    while at < run.len() {
        match escaped_at(run, at) {
            Some((c, len)) => {
                decoded.push(c as char);
                at += len;
            }
            None => {
                decoded.push(run[at] as char); // a token character
                at += 1;
            }
        }
    }
    decoded
}

/// `redact_text` of a string owned, in place (left alone when it holds no token).
pub fn redact_string(value: &mut String) {
    if let Cow::Owned(clean) = redact_text(value) {
        *value = clean;
    }
}

/// A text payload with JWTs (however escaped) and "jwt" member values replaced.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    redact_text_of(text, false)
}

/// Lone surrogates (which a Python string may hold and a Rust one cannot) stand in the text as
/// `SURROGATE_BASE + (unit - 0xD800)`, a private-use character, when the text says so.
pub const SURROGATE_BASE: u32 = 0xF0000;

fn is_stand_in(c: char) -> bool {
    (SURROGATE_BASE..SURROGATE_BASE + 0x800).contains(&(c as u32))
}

/// A string's bytes as Python's `encode("utf-8", "surrogatepass")` gives them.
pub fn surrogatepass_bytes(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        if is_stand_in(c) {
            let unit = c as u32 - SURROGATE_BASE + 0xD800;
            out.extend_from_slice(&[
                0xE0 | (unit >> 12) as u8,
                0x80 | ((unit >> 6) & 0x3F) as u8,
                0x80 | (unit & 0x3F) as u8,
            ]);
        } else {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
    }
    out
}

/// `redact_text`, for a text whose lone surrogates stand in as private-use characters when
/// `surrogates`: a member value holding one is not JSON to orjson, so it is fingerprinted as written.
pub fn redact_text_of(text: &str, surrogates: bool) -> Cow<'_, str> {
    if !may_hold_token(text.as_bytes()) {
        return Cow::Borrowed(text); // most texts: a few SIMD scans instead of the regexes
    }
    let members = if text.contains("\"jwt\"") || text.contains("\\u00") {
        JWT_MEMBER_RE.replace_all(text, |m: &regex::Captures| {
            let (whole, raw) = (m.get(0).unwrap(), m.get(1).unwrap());
            let quoted = format!("\"{}\"", raw.as_str());
            let stand_in = surrogates && raw.as_str().chars().any(is_stand_in);
            let value = match parse(&quoted).filter(|_| !stand_in) {
                Some(Value::Str(value)) => value,
                _ => Cow::Borrowed(raw.as_str()),
            };
            if value.is_empty() || is_marker(&value) {
                return whole.as_str().to_owned();
            }
            let secret = if stand_in {
                surrogatepass_bytes(&value)
            } else {
                value.as_bytes().to_vec()
            };
            format!("{}{}\"", &text[whole.start()..raw.start()], marker(&secret))
        })
    } else {
        Cow::Borrowed(text)
    };
    match members {
        // A member whose value is empty or already a marker is kept: matched, yet nothing changed.
        Cow::Owned(members) if members != text => Cow::Owned(replace_jwts(&members).into_owned()),
        _ => replace_jwts(text),
    }
}

/// False when `redact_text` would certainly find nothing in `content` (read one character a byte).
pub fn may_hold_token(content: &[u8]) -> bool {
    // Each pattern below holds one of these bytes, and most short strings (ids, names) hold none:
    // a plain loop over them costs less than setting up any searcher (the tables have millions).
    let suspect = |b: &u8| matches!(b, b'J' | b'"' | b'%' | b'\\');
    let clear = if content.len() < 64 {
        !content.iter().any(suspect)
    } else {
        memchr::memchr3(b'J', b'"', b'%', content).is_none()
            && memchr::memchr(b'\\', content).is_none()
    };
    if clear {
        return false;
    }
    EYJ.find(content).is_some()
        || JWT_KEY.find(content).is_some()
        || ((ESCAPE.find(content).is_some() || memchr::memchr(b'%', content).is_some())
            && has_escaped_token_char(content))
}

/// `content` with its secrets redacted, or None when it holds none: UTF-8 as text, anything else
/// one character a byte (markers are ASCII, so the bytes around them stay as they were).
pub fn redacted_bytes(content: &[u8]) -> Option<Vec<u8>> {
    match std::str::from_utf8(content) {
        Ok(text) => match redact_text(text) {
            Cow::Owned(clean) => Some(clean.into_bytes()),
            Cow::Borrowed(_) => None,
        },
        Err(_) => {
            let text: String = content.iter().map(|&b| b as char).collect();
            match redact_text(&text) {
                Cow::Owned(clean) => Some(clean.chars().map(|c| c as u8).collect()),
                Cow::Borrowed(_) => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // header {"alg":"none"}, claims {"sub":"alice"}
    const JWT: &str = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.sig";

    #[test]
    fn jwt_marker_carries_sub() {
        assert_eq!(jwt_sub(JWT.as_bytes()).as_deref(), Some("alice"));
        let m = marker(JWT.as_bytes());
        assert!(is_marker(&m));
        assert!(m.contains(" sub:"));
        assert_eq!(jwt_sub(b"eyJx.y"), None);
    }

    #[test]
    fn escaped_and_encoded_tokens_are_found() {
        let want = marker(JWT.as_bytes());
        let escaped = JWT.replacen('e', "\\u0065", 1);
        let twice = JWT.replacen('e', "\\\\u0065", 1);
        let percent = JWT.replace('.', "%2E");
        let percent_twice = JWT.replace('.', "%252e");
        for text in [JWT.to_string(), escaped, twice, percent, percent_twice] {
            assert_eq!(
                redact_text(&format!("a {text} b")),
                format!("a {want} b"),
                "{text}"
            );
        }
        assert_eq!(
            redact_text("nothing \\u0041 here"),
            Cow::Borrowed("nothing \\u0041 here")
        );
    }

    #[test]
    fn jwt_members_with_escaped_keys() {
        let text = r#"{"\u006awt" : "opaque\"x", "jwt":"[redacted sha256:0123456789ab]"}"#;
        let clean = redact_text(text);
        assert!(!clean.contains("opaque"));
        assert!(clean.contains(&marker(b"opaque\"x")));
        assert!(clean.contains("[redacted sha256:0123456789ab]"));
    }

    #[test]
    fn binary_payloads_are_read_one_character_a_byte() {
        let mut content = vec![0xff, 0x00];
        content.extend_from_slice(JWT.as_bytes());
        let clean = redacted_bytes(&content).unwrap();
        assert_eq!(&clean[..2], &[0xff, 0x00]);
        assert_eq!(&clean[2..], marker(JWT.as_bytes()).as_bytes());
        assert!(may_hold_token(&content));
        assert!(!may_hold_token(b"plain %20 \\u0020"));
    }

    #[test]
    fn the_quick_check_lets_every_written_form_through() {
        // Each form holds one of J " % \ (the bytes `may_hold_token` looks for first), short or long.
        let member = |key: &str, pad: usize| format!("{}{{{key}:\"opaque\"}}", "x".repeat(pad));
        for pad in [0, 100] {
            for key in [
                r#""j\u0077t""#,
                r#""jw\u0074""#,
                r#""\u006Awt""#,
                r#""jwt""#,
            ] {
                let text = member(key, pad);
                assert!(may_hold_token(text.as_bytes()), "{text}");
                assert!(!redact_text(&text).contains("opaque"), "{text}");
            }
            let escaped = format!("{}{}", "x".repeat(pad), JWT.replacen('J', "\\u004a", 1));
            let encoded = format!("{}{}", "x".repeat(pad), JWT.replacen('J', "%4A", 1));
            for text in [escaped, encoded] {
                assert!(may_hold_token(text.as_bytes()), "{text}");
                assert_eq!(
                    redact_text(&text).trim_start_matches('x'),
                    marker(JWT.as_bytes())
                );
            }
            assert!(!may_hold_token(
                format!("{}abc-123_def", "x".repeat(pad)).as_bytes()
            ));
        }
    }
}
