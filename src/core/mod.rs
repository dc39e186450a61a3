//! The grant operations and the rules that must hold everywhere, apart
//! from any protocol: nothing here imports axum, hyper, http or pingora
//! (`tests/it/layering.rs` checks). The token service (`token/`, axum) and the
//! gateway (`gateway/`, pingora) are adapters: they turn requests into
//! these calls and [`Error`] into their responses, each in one place.
//!
//! - [`grants`]: [`Grants`], through which every write goes; it drops the
//!   cached lookups a write affects itself;
//! - [`error`]: the one error enum of the operations;
//! - [`issue`], [`refresh`], [`exchange`], [`rescope`], [`arbitrary`]: the
//!   grant types; [`device`]: RFC 8628 device authorization; [`custom`]: merge patches on custom data; [`kept`]: the
//!   subject tokens grants keep for external exchanges;
//! - [`rotation`]: the refresh grace/replay rule; [`version`]: the grant
//!   version check; [`scope`]: scope parameters and allowances.

pub mod arbitrary;
pub mod custom;
pub mod device;
pub mod error;
pub mod exchange;
pub mod grants;
pub mod issue;
pub mod kept;
pub mod refresh;
pub mod rescope;
pub mod rotation;
pub mod scope;
pub mod version;

pub use error::{Contention, Error};
pub use grants::Grants;
pub use issue::TokenResponse;
