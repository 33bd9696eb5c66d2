//! Sessions in Redis (`logplex:session:UUID`, the spec as JSON with the session's expiry),
//! so that a session URL made by one node streams from every node. The node that made a
//! session, or opened it, also keeps it in its own table (`crate::session::Sessions`);
//! Redis is asked only for one it does not know. Opening a session, and every
//! [`REFRESH`] while it streams, and its end, set the key's expiry again.

use super::{keys, Cluster};
use crate::session::{Spec, SESSION_TTL};
use std::time::Duration;

/// How often a streaming session's key gets its expiry again.
pub const REFRESH: Duration = Duration::from_secs(60);

/// How long a session's read or write in Redis may take before the node does without.
const WAIT: Duration = Duration::from_secs(1);

impl Cluster {
    /// Writes a new session; `false` when Redis could not take it (the session then works
    /// on this node only).
    pub async fn save_session(&self, id: &uuid::Uuid, spec: &Spec) -> bool {
        let json = match serde_json::to_string(spec) {
            Ok(j) => j,
            Err(_) => return false,
        };
        let set = async {
            let mut conn = self.reader().await?;
            redis::cmd("SET")
                .arg(keys::session(id))
                .arg(json)
                .arg("EX")
                .arg(SESSION_TTL.as_secs())
                .query_async::<()>(&mut conn)
                .await
        };
        match tokio::time::timeout(WAIT, set).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                self.reader_failed();
                tracing::warn!("cluster: session kept on this node only: {e}");
                false
            }
            Err(_) => {
                tracing::warn!("cluster: session kept on this node only: Redis did not answer");
                false
            }
        }
    }

    /// The session's spec, its expiry set again; `None` when Redis has none (or cannot be
    /// reached).
    pub async fn open_session(&self, id: &uuid::Uuid) -> Option<Spec> {
        let get = async {
            let mut conn = self.reader().await?;
            redis::cmd("GETEX")
                .arg(keys::session(id))
                .arg("EX")
                .arg(SESSION_TTL.as_secs())
                .query_async::<Option<String>>(&mut conn)
                .await
        };
        match tokio::time::timeout(WAIT, get).await {
            Ok(Ok(json)) => serde_json::from_str(&json?).ok(),
            Ok(Err(e)) => {
                self.reader_failed();
                tracing::debug!("cluster: cannot read a session: {e}");
                None
            }
            Err(_) => None,
        }
    }

    /// Sets the session's expiry again (it streams, or its stream just ended).
    pub async fn touch_session(&self, id: &uuid::Uuid) {
        let touch = async {
            let mut conn = self.reader().await?;
            redis::cmd("EXPIRE")
                .arg(keys::session(id))
                .arg(SESSION_TTL.as_secs())
                .query_async::<i64>(&mut conn)
                .await
        };
        if let Ok(Err(_)) = tokio::time::timeout(WAIT, touch).await {
            self.reader_failed();
        }
    }
}
