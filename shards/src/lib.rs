//! Per-core state of corechat, and the mesh that links the cores.
//!
//! The server runs one executor per core, each owning a *shard*: a slice of the users
//! (chosen by [`route::shard_of`]) with their profiles, friends, chat lists, undelivered
//! messages and live sessions ([`state::ShardState`]). Nothing here is shared between cores:
//! a shard that needs something from another one sends a [`message::MeshMsg`] over the
//! channel mesh ([`mesh::Mesh`]), which never drops and never deadlocks.

pub mod ids;
pub mod mesh;
pub mod message;
pub mod route;
pub mod state;

pub use ids::MessageIds;
pub use mesh::Mesh;
pub use message::{CallOp, CallReply, Handoff, MeshMsg};
pub use route::shard_of;
pub use state::{ConnId, Profile, RuleError, ShardState};
