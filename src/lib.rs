//! logplex: a log router and drain service compatible with Heroku's Logplex.
//!
//! Lines flow through the modules in this order: [`ingest`] (syslog TCP and UDP, HTTP
//! `POST /logs`) finds each token's channel in the [`registry`] and pushes the lines into
//! the [`channel`] (its history ring, its live tails, its taps); from there they leave by
//! [`session`]s (history and tails for `logplex logs` and the web [`console`]), [`drain`]s
//! and [`alert`] rules. The [`api`] changes the [`store`], and the registry applies each
//! change. [`config`] is read once at start; [`server`] wires it all in phases.
//!
//! [`start`] locks the data directory, binds every listener of the config, then opens the
//! store and returns the bound addresses; [`Server::wait`] serves until the shutdown token
//! is cancelled, then stops intake, ends sessions and saves history. [`run`] does both; the
//! binary and the integration tests call it (tests bind port 0 and read the addresses from
//! [`start`]).

#![deny(rustdoc::broken_intra_doc_links)]

pub mod admin_key;
pub mod alert;
pub mod api;
pub mod body;
pub mod channel;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conns;
pub mod console;
pub mod datadir;
pub mod drain;
pub mod http;
pub mod ingest;
pub mod line;
pub mod log;
pub mod logmetrics;
pub mod metrics;
pub mod names;
pub mod registry;
pub mod retry;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod store;

pub use server::{run, start, Addrs, Node, Server};
