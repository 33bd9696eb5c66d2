//! Alert rules added through the API (config rules live in `config.toml`).

use super::{conflict, get_channel, now, Conn, StoreError};
use rusqlite::params;

/// Every alert rule added through the API, by app then creation.
pub fn list_alerts(conn: &mut Conn) -> Result<Vec<crate::alert::RuleSpec>, StoreError> {
    let mut stmt = conn.0.prepare_cached(
        "SELECT app, name, source, dyno, cond, regex, threshold, win, cooldown, webhook,
                metric, above
         FROM alerts ORDER BY app, created_at, name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(crate::alert::RuleSpec {
            app: r.get(0)?,
            name: r.get(1)?,
            source: r.get(2)?,
            dyno: r.get(3)?,
            where_: r.get(4)?,
            regex: r.get(5)?,
            metric: r.get(10)?,
            above: r.get(11)?,
            threshold: r.get::<_, i64>(6)?.max(0) as u64,
            window: r.get(7)?,
            cooldown: r.get(8)?,
            webhook: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Adds an alert rule (already validated). `NotFound` if its channel does not exist (unless
/// `app` is `*`), `Conflict` if the channel has a rule of that name.
pub fn create_alert(conn: &mut Conn, rule: &crate::alert::RuleSpec) -> Result<(), StoreError> {
    if rule.app != "*" {
        get_channel(conn, &rule.app)?;
    }
    write_alert(&conn.0, "INSERT", rule).map_err(conflict)?;
    Ok(())
}

/// Removes the rule `name` of `app` (a channel or `*`). `NotFound` if there is none.
pub fn delete_alert(conn: &mut Conn, app: &str, name: &str) -> Result<(), StoreError> {
    let n = conn.0.execute(
        "DELETE FROM alerts WHERE app = ?1 AND name = ?2",
        params![app, name],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Writes `rule` with `verb` (`INSERT`, which refuses a second rule of the name, or `INSERT
/// OR REPLACE`, which a replica uses to apply a change again).
pub(super) fn write_alert(
    conn: &rusqlite::Connection,
    verb: &str,
    rule: &crate::alert::RuleSpec,
) -> rusqlite::Result<usize> {
    conn.execute(
        &format!(
            "{verb} INTO alerts (app, name, source, dyno, cond, regex, threshold, win, cooldown,
                                 webhook, created_at, metric, above)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        ),
        params![
            rule.app,
            rule.name,
            rule.source,
            rule.dyno,
            rule.where_,
            rule.regex,
            i64::try_from(rule.threshold).unwrap_or(i64::MAX),
            rule.window,
            rule.cooldown,
            rule.webhook,
            now(),
            rule.metric,
            rule.above
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::RuleSpec;
    use crate::store::{create_channel, delete_channel, Store};

    fn rule(app: &str, name: &str) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            app: app.into(),
            source: Some("heroku".into()),
            dyno: None,
            where_: Some("status>=500".into()),
            regex: None,
            metric: None,
            above: None,
            threshold: 5,
            window: "1m".into(),
            cooldown: "5m".into(),
            webhook: Some("http://127.0.0.1:9/hook".into()),
        }
    }

    #[test]
    fn alerts_round_trip_and_go_with_their_channel() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("l.db")).unwrap();
        s.call_blocking(|c| {
            create_channel(c, "demo", &[])?;
            create_alert(c, &rule("demo", "a"))?;
            create_alert(c, &rule("*", "a"))?;
            assert!(matches!(
                create_alert(c, &rule("demo", "a")),
                Err(StoreError::Conflict)
            ));
            assert!(matches!(
                create_alert(c, &rule("nope", "a")),
                Err(StoreError::NotFound)
            ));
            let all = list_alerts(c)?;
            assert_eq!(all, vec![rule("*", "a"), rule("demo", "a")]);
            delete_channel(c, "demo")?;
            assert_eq!(list_alerts(c)?, vec![rule("*", "a")]);
            delete_alert(c, "*", "a")?;
            assert!(matches!(
                delete_alert(c, "*", "a"),
                Err(StoreError::NotFound)
            ));
            Ok(())
        })
        .unwrap();
    }
}
