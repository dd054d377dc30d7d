//! corechat's engine: the network, the protocol, and the runtime that ties the shards
//! together.
//!
//! Data flows one way: socket -> [`frame`] -> [`protocol`] request -> [`dispatch`] on the
//! owning [`shard`] -> (mesh) -> the receiver's shard -> frame -> socket; and shard ->
//! persistence queue -> database (`corechat-persist`). Where to look:
//!
//! | what | where |
//! |---|---|
//! | a frame is decoded | [`frame`] |
//! | a request is parsed and validated | [`protocol`] |
//! | a request is served | [`dispatch`] |
//! | a user lives | `corechat-shards`'s `state` |
//! | a message crosses cores | `corechat-shards`'s `mesh`, [`shard::Shard::on_mesh`] |
//! | a row is written | `corechat-persist`'s `backend` |
//! | passwords | [`auth`] |
//! | start and stop | [`runtime`] |

pub mod admin;
pub mod anonymous;
pub mod auth;
pub mod client;
pub mod config;
pub mod connection;
pub mod dispatch;
pub mod frame;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod runtime;
pub mod shard;

pub use config::{Config, Options};
pub use runtime::{Server, ServerError};
