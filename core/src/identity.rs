//! Who a connection is (analysis/identity.py): its token fingerprint (from a redaction marker or
//! the raw token), the fingerprint of the JWT `sub` when the token is visible, its side (agent or
//! consumer) and the client host.

use serde_json::Value;

use crate::frame::as_list;
use crate::pyrepr::py_str;
use crate::record::{Record, Val};
use crate::redact::{fingerprint, has_jwt, jwt_sub, marked_tokens};

pub const AGENT: &str = "agent";
pub const CONSUMER: &str = "consumer";
const CONSUMER_AUTHENTICATION: &str = ".ams.headers.ConsumerAuthentication";
/// Request types only an agent sends (Messaging Agent API — Getting Started): they tell an agent
/// connection whose URL does not (an imported capture, a proxy that rewrote the path).
const AGENT_REQUESTS: [&str; 4] = [
    ".ams.routing.",
    ".ams.aam.",
    ".ams.userprofile.",
    ".ams.cm.AgentRequestConversation",
];
/// Upgrade headers read elsewhere, or not tokens.
const NOT_TOKEN_HEADERS: [&str; 2] = ["authorization", "cookie"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub fingerprint: String,
    pub sub: Option<String>,
}

/// Python's `str.isspace`, which `str.strip()` strips.
fn py_space(c: char) -> bool {
    matches!(c, '\t'..='\r' | '\x1c'..='\x1f' | ' ' | '\u{85}' | '\u{a0}' | '\u{1680}'
        | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
}

/// A token from a redaction marker or a raw token; `sub` is the fingerprint of its JWT `sub`.
pub fn token_of(credential: &str) -> Option<Token> {
    if let Some((fingerprint, sub)) = marked_tokens(credential).into_iter().next() {
        return Some(Token { fingerprint, sub });
    }
    let credential = credential.trim_matches(py_space);
    if credential.is_empty() {
        return None;
    }
    Some(Token {
        fingerprint: fingerprint(credential.as_bytes()),
        sub: jwt_sub(credential.as_bytes()).map(|sub| fingerprint(sub.as_bytes())),
    })
}

/// The upgrade request's headers that are [name, value] pairs, as Python's `str()` of each.
fn header_pairs(open: &Record) -> Vec<(String, String)> {
    let Some(raw) = open.request_headers.0 else {
        return Vec::new();
    };
    let Ok(Value::Array(pairs)) = serde_json::from_str::<Value>(raw) else {
        return Vec::new();
    };
    pairs
        .iter()
        .filter_map(|pair| match pair {
            Value::Array(p) if p.len() == 2 => Some((py_str(&p[0]), py_str(&p[1]))),
            _ => None,
        })
        .collect()
}

/// The token of the Authorization header of the WebSocket upgrade ("jwt <token>").
pub fn header_token(open: &Record) -> Option<Token> {
    let (_, value) = header_pairs(open)
        .into_iter()
        .find(|(name, _)| name.to_lowercase() == "authorization")?;
    match value.split_once(' ') {
        Some((_, credential)) if !credential.is_empty() => token_of(credential),
        Some((scheme, _)) => token_of(scheme),
        None => token_of(&value),
    }
}

/// The name of an upgrade header other than Authorization (and cookies) that carries a token (its
/// redaction marker, or a JWT in an unredacted capture): a client that sent its token where the
/// API does not look for it.
pub fn other_token_header(open: &Record) -> Option<String> {
    header_pairs(open)
        .into_iter()
        .find(|(name, value)| {
            !NOT_TOKEN_HEADERS.contains(&name.to_lowercase().as_str())
                && (!marked_tokens(value).is_empty() || has_jwt(value))
        })
        .map(|(name, _)| name)
}

/// The path of `urllib.parse.urlsplit(url)`: C0 controls and spaces stripped at the start, tab and
/// newlines removed, then scheme, `//netloc`, fragment and query split off. None where urlsplit
/// raises ValueError (a bracket without its pair in the netloc, or a bracketed host that is not an
/// IPv6 address).
fn urlsplit_path(url: &str) -> Option<String> {
    let url: String = url
        .trim_start_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
        .collect();
    let mut rest = url.as_str();
    if let Some(i) = rest.find(':') {
        let scheme = &rest[..i];
        let first_alpha = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic());
        if first_alpha
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            rest = &rest[i + 1..];
        }
    }
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let netloc = &after[..end];
        if netloc.contains('[') != netloc.contains(']') {
            return None;
        }
        if netloc.contains('[') && !bracketed_host_ok(netloc) {
            return None;
        }
        rest = &after[end..];
    }
    let rest = rest.split('#').next().unwrap_or_default();
    Some(rest.split('?').next().unwrap_or_default().to_owned())
}

/// urllib's `_check_bracketed_host`: `v<hex>.<anything>`, or an IPv6 address (a zone allowed).
fn bracketed_host_ok(netloc: &str) -> bool {
    let host = netloc
        .split_once('[')
        .map_or("", |(_, after)| after.split(']').next().unwrap_or_default());
    if let Some(future) = host.strip_prefix('v') {
        return future.split_once('.').is_some_and(|(hex, rest)| {
            !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) && !rest.is_empty()
        });
    }
    let address = host.split_once('%').map_or(host, |(address, _)| address);
    address.parse::<std::net::Ipv6Addr>().is_ok()
}

/// `analysis.capture.split_url(url).path`: where urlsplit refuses a stray bracket in the host,
/// the URL is split with its brackets escaped.
pub fn url_path(url: &str) -> String {
    urlsplit_path(url).unwrap_or_else(|| {
        urlsplit_path(&url.replace('[', "%5B").replace(']', "%5D")).unwrap_or_default()
    })
}

/// A token carried in the URL path or query: an agent's bearer rides in the path after
/// `/messaging/brand/` (opaque, not JWT-shaped), a v2 consumer's after `/messaging/consumer/`.
pub fn url_token(url: &Val) -> Option<Token> {
    let url = url.as_str()?;
    if let Some((fingerprint, sub)) = marked_tokens(url).into_iter().next() {
        return Some(Token { fingerprint, sub });
    }
    let path = url_path(url);
    let segments: Vec<&str> = path.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if segment.starts_with("eyJ") && segment.matches('.').count() == 2 {
            return token_of(segment);
        }
        if (*segment == "brand" || *segment == "consumer")
            && i > 0
            && segments[i - 1] == "messaging"
            && i + 1 < segments.len()
        {
            return token_of(segments[i + 1]);
        }
    }
    None
}

/// `agent` for a brand connection (`/messaging/brand/`), `consumer` for `/messaging/consumer`,
/// None when the URL does not tell.
pub fn side_of_url(url: &Val) -> Option<&'static str> {
    let path = url_path(url.as_str()?);
    if path.contains("/messaging/brand/") {
        Some(AGENT)
    } else if path.contains("/messaging/consumer") {
        Some(CONSUMER)
    } else {
        None
    }
}

pub fn is_agent_request(type_: Option<&str>) -> bool {
    type_.is_some_and(|t| AGENT_REQUESTS.iter().any(|p| t.starts_with(p)))
}

/// The jwt of the ConsumerAuthentication header object of an InitConnection request.
pub fn init_connection_token(payload: Option<&Value>) -> Option<Token> {
    let payload = payload?.as_object()?;
    let jwt = as_list(payload.get("headers")).iter().find_map(|header| {
        let header = header.as_object()?;
        if header.get("type")?.as_str()? != CONSUMER_AUTHENTICATION {
            return None;
        }
        header.get("jwt")?.as_str()
    })?;
    token_of(jwt) // the first string jwt decides, even a blank one
}

pub fn client_host(open: &Record) -> Option<String> {
    let client = open.client.as_str()?;
    match client.rsplit_once(':') {
        Some((host, _)) if !host.is_empty() => Some(host.to_owned()),
        _ => Some(client.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Val<'static> {
        Val::Str(s.to_owned().into())
    }

    #[test]
    fn paths_as_urlsplit_gives_them() {
        assert_eq!(url_path("wss://h:1/ws_api/x?v=3#f"), "/ws_api/x");
        assert_eq!(url_path("  \twss://h/a\nb"), "/ab");
        assert_eq!(url_path("wss://[::1]:8/p"), "/p");
        assert_eq!(url_path("wss://[host/p[1]"), "/p%5B1%5D");
        assert_eq!(url_path("wss://[v1.x]/q"), "/q");
        assert_eq!(url_path("1ws://h/p"), "1ws://h/p");
        for (url, path) in [
            (
                "wss://h/ws_api/account/1/messaging/brand/x?v=2",
                "/ws_api/account/1/messaging/brand/x",
            ),
            ("  \twss://h/a#/messaging/brand/", "/a"),
            ("//messaging/brand/x", "/brand/x"),
            ("messaging/brand/x", "messaging/brand/x"),
            ("1ws://h/p", "1ws://h/p"),
            ("ws://h?q/messaging/brand/", ""),
            ("w\ns://h/p", "/p"),
        ] {
            assert_eq!(url_path(url), path, "{url}");
        }
    }

    #[test]
    fn sides_and_url_tokens() {
        let agent = url("wss://h/ws_api/account/1/messaging/brand/opaque?v=2");
        assert_eq!(side_of_url(&agent), Some(AGENT));
        assert_eq!(
            url_token(&agent).unwrap().fingerprint,
            fingerprint(b"opaque")
        );
        let consumer = url("wss://h/ws_api/account/1/messaging/consumer?v=3");
        assert_eq!(side_of_url(&consumer), Some(CONSUMER));
        assert_eq!(url_token(&consumer), None);
        let marked = url("wss://h/messaging/brand/[redacted sha256:0123456789ab]");
        assert_eq!(url_token(&marked).unwrap().fingerprint, "0123456789ab");
        assert_eq!(side_of_url(&Val::Null), None);
    }

    #[test]
    fn tokens_and_hosts() {
        assert_eq!(token_of(" \u{1f} "), None);
        let marked = token_of("x [redacted sha256:0123456789ab sub:ba9876543210]").unwrap();
        assert_eq!(marked.sub.as_deref(), Some("ba9876543210"));
        assert!(is_agent_request(Some(".ams.routing.UpdateRingState")));
        assert!(!is_agent_request(Some("ms.PublishEvent")));
        let payload: Value = serde_json::from_str(
            r#"{"headers":[{"type":"x"},{"type":".ams.headers.ConsumerAuthentication","jwt":5},
                {"type":".ams.headers.ConsumerAuthentication","jwt":"abc"}]}"#,
        )
        .unwrap();
        assert_eq!(
            init_connection_token(Some(&payload)).unwrap().fingerprint,
            fingerprint(b"abc")
        );
        let open = Record {
            client: Val::Str("[::1]:5000".into()),
            ..Record::default()
        };
        assert_eq!(client_host(&open).as_deref(), Some("[::1]"));
    }
}
