//! Drain URLs: which transport, where, and with what credentials; validated with one
//! sentence per problem, as the API's 422 and config errors show it.

use std::fmt;

/// The transport of a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Syslog,
    SyslogTls,
    SyslogUdp,
    Http,
    Https,
}

impl Kind {
    /// The `type` label of the drain metrics.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Syslog => "syslog",
            Kind::SyslogTls => "syslog_tls",
            Kind::SyslogUdp => "syslog_udp",
            Kind::Http => "http",
            Kind::Https => "https",
        }
    }
}

/// A parsed, valid drain URL.
#[derive(Clone, PartialEq, Eq)]
pub struct DrainUrl {
    pub kind: Kind,
    pub host: String,
    pub port: u16,
    /// `#insecure`: no certificate verification (TLS kinds only).
    pub insecure: bool,
    /// userinfo (user, password), percent-decoded per RFC 3986 only (`%XX`; `+` and `&`
    /// are themselves), sent as Basic auth (HTTP kinds only).
    pub auth: Option<(Vec<u8>, Vec<u8>)>,
    /// For HTTP kinds: the URL to POST to, without userinfo and fragment.
    pub endpoint: String,
    /// The URL with any password replaced by `***`, for logs.
    pub redacted: String,
}

impl fmt::Debug for DrainUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl DrainUrl {
    pub fn parse(s: &str) -> Result<DrainUrl, String> {
        let u = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL ({e})."))?;
        let kind = match u.scheme() {
            "syslog" => Kind::Syslog,
            "syslog+tls" => Kind::SyslogTls,
            "syslog+udp" => Kind::SyslogUdp,
            "http" => Kind::Http,
            "https" => Kind::Https,
            other => {
                return Err(format!(
                    "Scheme {other:?} is not supported; use syslog://, syslog+tls://, syslog+udp://, http:// or https://."
                ))
            }
        };
        let host = match u.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
            _ => return Err(format!("{s:?} has no host.")),
        };
        let http = matches!(kind, Kind::Http | Kind::Https);
        let port = match (u.port(), kind) {
            (Some(0), _) => return Err("Port 0 is not a port to send to.".into()),
            (Some(p), _) => p,
            (None, Kind::Http) => 80,
            (None, Kind::Https) => 443,
            (None, _) => {
                return Err(format!(
                    "{s:?} needs a port, like syslog://logs.example.com:514."
                ))
            }
        };
        let has_auth = !u.username().is_empty() || u.password().is_some();
        if has_auth && !http {
            return Err("Credentials in a syslog drain URL are not supported; only http(s) drains send Basic auth.".into());
        }
        let insecure = match u.fragment() {
            None | Some("") => false,
            Some("insecure") if matches!(kind, Kind::SyslogTls | Kind::Https) => true,
            Some("insecure") => {
                return Err("#insecure only applies to syslog+tls:// and https:// drains.".into())
            }
            Some(f) => {
                return Err(format!(
                    "Unknown URL fragment #{f}; the only one known is #insecure."
                ))
            }
        };
        if !(http || u.path().is_empty() || u.path() == "/") {
            return Err("A syslog drain URL has no path.".into());
        }
        // The url crate keeps userinfo percent-encoded; RFC 3986 decoding is `%XX` only (a
        // form decoder would turn `+` into a space and cut at `&`).
        let decode = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
        let auth = has_auth.then(|| (decode(u.username()), decode(u.password().unwrap_or(""))));
        let mut plain = u.clone();
        let _ = plain.set_username("");
        let _ = plain.set_password(None);
        plain.set_fragment(None);
        let mut redacted = u.clone();
        if u.password().is_some() {
            let _ = redacted.set_password(Some("***"));
        }
        Ok(DrainUrl {
            kind,
            host,
            port,
            insecure,
            auth,
            endpoint: plain.to_string(),
            redacted: redacted.to_string(),
        })
    }
}

/// Checks an alert webhook URL by the rules of HTTP drain URLs (a host, a port from 1 to
/// 65535, userinfo for Basic auth, `#insecure` for https), schemes http:// and https://
/// only; the error is one sentence.
pub fn parse_webhook(s: &str) -> Result<DrainUrl, String> {
    if let Ok(u) = url::Url::parse(s) {
        if !matches!(u.scheme(), "http" | "https") {
            return Err(format!(
                "Scheme {:?} is not supported; use http:// or https://.",
                u.scheme()
            ));
        }
    }
    DrainUrl::parse(s)
}

/// The URL as shown to users (API answers, CLI output): the password, if any, replaced by
/// `***`; any other URL as given.
pub fn redact(url: &str) -> std::borrow::Cow<'_, str> {
    match url::Url::parse(url) {
        Ok(u) if u.password().is_some() => {
            let mut r = u.clone();
            let _ = r.set_password(Some("***"));
            std::borrow::Cow::Owned(r.to_string())
        }
        _ => std::borrow::Cow::Borrowed(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_urls() {
        let d = DrainUrl::parse("syslog://logs.example.com:514").unwrap();
        assert_eq!(
            (d.kind, d.host.as_str(), d.port, d.insecure),
            (Kind::Syslog, "logs.example.com", 514, false)
        );
        let d = DrainUrl::parse("syslog+tls://127.0.0.1:6514#insecure").unwrap();
        assert!(d.insecure && d.kind == Kind::SyslogTls);
        let d = DrainUrl::parse("https://user:s%40cret@example.com/logs?x=1").unwrap();
        assert_eq!(d.auth, Some((b"user".to_vec(), b"s@cret".to_vec())));
        assert_eq!(d.endpoint, "https://example.com/logs?x=1");
        assert_eq!(d.port, 443);
        assert!(d.redacted.contains("***") && !d.redacted.contains("cret"));
        assert_eq!(
            DrainUrl::parse("syslog+udp://[::1]:514").unwrap().host,
            "::1"
        );
    }

    #[test]
    fn userinfo_is_percent_decoded_only() {
        for (url, user, pass) in [
            ("http://user:a+b&c@h/in", "user", "a+b&c"),
            ("http://us%2Ber:pa%20ss@h/", "us+er", "pa ss"),
            ("http://u:p%3Aw%25@h/", "u", "p:w%"),
            ("http://u:%E2%82%AC;=,!$'()*@h/", "u", "€;=,!$'()*"),
            ("http://u:@h/", "u", ""),
            ("https://:only-pass@h/", "", "only-pass"),
        ] {
            let d = DrainUrl::parse(url).unwrap();
            let (u, p) = d.auth.unwrap();
            assert_eq!(
                (String::from_utf8(u).unwrap(), String::from_utf8(p).unwrap()),
                (user.to_string(), pass.to_string()),
                "{url}"
            );
            assert!(!d.endpoint.contains('@'), "{}", d.endpoint);
        }
    }

    #[test]
    fn passwords_are_redacted_for_display() {
        assert_eq!(
            redact("https://user:a+b&c@example.com/logs"),
            "https://user:***@example.com/logs"
        );
        assert_eq!(redact("syslog://h:514"), "syslog://h:514");
        assert_eq!(redact("http://user@h/x"), "http://user@h/x");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn webhooks_are_checked_like_http_drains() {
        let w = parse_webhook("https://u:a+b@hooks.example.com/x#insecure").unwrap();
        assert_eq!((w.kind, w.port, w.insecure), (Kind::Https, 443, true));
        assert_eq!(w.auth, Some((b"u".to_vec(), b"a+b".to_vec())));
        assert_eq!(w.endpoint, "https://hooks.example.com/x");
        for (u, e) in [
            (
                "ftp://x/hook",
                "Scheme \"ftp\" is not supported; use http:// or https://.",
            ),
            (
                "syslog://x:1",
                "Scheme \"syslog\" is not supported; use http:// or https://.",
            ),
            ("http://x:0/hook", "Port 0 is not a port to send to."),
            (
                "http://x:65536/hook",
                "\"http://x:65536/hook\" is not a URL (invalid port number).",
            ),
            ("http://", "\"http://\" is not a URL (empty host)."),
            (
                "http://x/hook#nope",
                "Unknown URL fragment #nope; the only one known is #insecure.",
            ),
        ] {
            assert_eq!(parse_webhook(u).unwrap_err(), e, "{u}");
        }
    }

    #[test]
    fn bad_urls_say_why() {
        for (u, needle) in [
            ("ftp://x:1", "Scheme \"ftp\""),
            ("syslog://x", "needs a port"),
            ("syslog://u:p@x:1", "Credentials"),
            ("syslog://x:1#insecure", "#insecure only"),
            ("https://x#nope", "Unknown URL fragment"),
            ("not a url", "is not a URL"),
            ("syslog://x:1/path", "no path"),
        ] {
            let e = DrainUrl::parse(u).unwrap_err();
            assert!(e.contains(needle), "{u}: {e}");
        }
    }
}
