//! [`Change`]: one entry of the change stream, as JSON in its `c` field. The channel id
//! Redis gave is beside it in the entry (`id`), since the script that decides the change
//! is the one that knows it.

use crate::alert::RuleSpec;
use serde::{Deserialize, Serialize};

/// What a change did, with every value the replicas need to write it as decided (tokens,
/// drain ids and times are made by the node that asked, before the script ran).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// A channel made, with its tokens (name, token).
    Create {
        name: String,
        created_at: i64,
        metrics: bool,
        tokens: Vec<(String, String)>,
    },
    /// A channel declared in a node's config: created or updated; read whole from Redis
    /// when applied.
    Declare {
        name: String,
    },
    Destroy {
        name: String,
    },
    Token {
        channel: String,
        name: String,
        token: String,
        created_at: i64,
    },
    Metrics {
        channel: String,
        on: bool,
    },
    Drain {
        channel: String,
        drain: String,
        token: String,
        url: String,
        created_at: i64,
    },
    Undrain {
        channel: String,
        drain: String,
    },
    Alert {
        rule: RuleSpec,
    },
    Unalert {
        app: String,
        name: String,
    },
    /// The whole config was written anew (an empty Redis filled from a node's replica):
    /// load it all.
    Reload,
}

impl Change {
    pub fn to_json(&self) -> String {
        // Plain data: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}
