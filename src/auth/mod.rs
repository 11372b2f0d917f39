//! Who may do what: access tokens (JWT, HS256, signed with a configured API key pair)
//! and their grants. Without keys the server runs in dev mode: rooms are open to anyone
//! who can reach it, which the server allows only on loopback (or with `--dev`).

pub mod cli;
mod grants;
mod token;
pub mod turn;

pub use grants::{Claims, Grants, Source};
pub use token::{claims_for, unix_now, KeySet, MAX_TOKEN_BYTES, MIN_SECRET_BYTES};

/// Why a token was refused. On the wire each is `unauthorized` with this message: clear
/// enough to fix a client, no more than that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required to join (this server does not run in dev mode)")]
    Missing,
    #[error("the token is not a valid JWT")]
    Malformed,
    #[error("the token is not signed with HS256")]
    BadAlgorithm,
    #[error("the token is signed with an unknown API key")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token does not grant joining this room")]
    WrongRoom,
    #[error("the token does not grant administering this room")]
    NotAdmin,
}
