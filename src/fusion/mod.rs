//! Couchbase Fusion as it stands today, beside the seed's protocol that [`crate::control`] speaks:
//! kv_engine's current request bodies, ns_server's AccelerationPlans and the `fusion` stats group.
//! Each is foreign input turned into lazysnap's own requests and answers here, validated as
//! kv_engine and the accelerator validate it, so the daemon and the CLI never see these shapes.
//!
//! - [`bodies`]: the bodies of opcodes 0x70-0x78, checked key by key, into control requests.
//! - [`plan`]: an AccelerationPlan, one node's volumes in it, split into guest volumes.
//! - [`stats`]: the `fusion <group> [<vbid>|detail]` keys and the JSON each answers.

pub mod bodies;
pub mod plan;
pub mod stats;

/// What is wrong with a body, a plan or a stat key: always the caller's input (Einval), naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FusionError(pub String);

impl FusionError {
    pub fn invalid(message: impl Into<String>) -> FusionError {
        FusionError(message.into())
    }
}
