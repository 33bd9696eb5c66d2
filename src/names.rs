//! The names users give things, each with its rule in one place: channel (app) names,
//! token names (the SOURCE of every line sent with the token), the `t.`/`d.` tokens
//! themselves, and the dyno filter shared by sessions (`logs -d`) and alert rules.

/// Is `name` a channel name: 2 to 63 of `a-z`, `0-9` and `-`, starting with a letter
/// (Heroku's app names)?
pub fn valid_channel_name(name: &str) -> bool {
    let b = name.as_bytes();
    (2..=63).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Is `name` a token name: 1 to 48 printable ASCII characters without `[` or `]`? It is
/// shown as SOURCE in `SOURCE[DYNO]:`, so a bracket would make that ambiguous.
pub fn valid_token_name(name: &str) -> bool {
    (1..=48).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'[' && b != b']')
}

/// What [`valid_token_name`] requires, as said to users.
pub const TOKEN_NAME_RULE: &str = "1 to 48 printable ASCII characters, no [ or ]";

/// Is `t` a token of the form `PREFIX` + a UUID (e.g. `t.` + UUIDv4)?
pub fn valid_token(t: &str, prefix: &str) -> bool {
    t.strip_prefix(prefix)
        .is_some_and(|u| u.len() == 36 && uuid::Uuid::parse_str(u).is_ok())
}

/// Does a line of dyno `procid` pass the dyno filter `filter`? `web` matches `web` and
/// `web.1`, `web.2`, …; `web.1` matches only `web.1`; `router` only `router`.
#[inline]
pub fn dyno_matches(filter: &[u8], procid: &[u8]) -> bool {
    procid == filter
        || (procid.len() > filter.len()
            && procid.starts_with(filter)
            && procid[filter.len()] == b'.'
            && !filter.contains(&b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        assert!(valid_channel_name("demo"));
        assert!(valid_channel_name("my-app-2"));
        assert!(!valid_channel_name("d"));
        assert!(!valid_channel_name("2app"));
        assert!(!valid_channel_name("Demo"));
    }

    #[test]
    fn token_names() {
        assert!(valid_token_name("app"));
        assert!(valid_token_name("heroku"));
        assert!(!valid_token_name(""));
        assert!(!valid_token_name("a b"));
        assert!(!valid_token_name("web[1]"));
        assert!(!valid_token_name(&"x".repeat(49)));
    }

    #[test]
    fn dyno_filter() {
        assert!(dyno_matches(b"web", b"web"));
        assert!(dyno_matches(b"web", b"web.1"));
        assert!(dyno_matches(b"web.1", b"web.1"));
        assert!(!dyno_matches(b"web.1", b"web.12"));
        assert!(!dyno_matches(b"web", b"worker.1"));
        assert!(!dyno_matches(b"web", b"webby"));
        assert!(!dyno_matches(b"router", b"web.1"));
    }
}
