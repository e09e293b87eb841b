//! What the protocol state machines report besides the responses they return: one
//! [`ProtocolEvent`] per protocol fact (a request opened a type, a subscription changed, a
//! response went out, the proxy ACKed or NACKed it), handed to a [`ProtocolObserver`] that the
//! driver supplies. The sync-status registry and the metrics are such observers; tests record
//! the events instead.
//!
//! Events borrow what they describe (versions, nonces, Envoy's message) from the state machine
//! and the request, so reporting them copies nothing: the observer copies what it keeps.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::resources::Names;
use meshpilot_snapshot::{TypeSet, XdsType};

/// How a response names the versions of its resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions<'a> {
    /// SotW: every resource carries the response's `version_info`, the content hash of the
    /// complete set the proxy holds after the response (which, for EDS and RDS, may carry only
    /// the resources that changed).
    Sotw(&'a str),
    /// Delta: each resource carries its own version.
    Delta,
}

/// One protocol fact of one stream, in the order it happened.
#[derive(Debug)]
pub(crate) enum ProtocolEvent<'a> {
    /// A request without a nonce for `t`: the type's first request on this stream, or (SotW)
    /// Envoy asking again after reconnecting. `wildcard`: the stream receives every resource.
    InitialRequest { t: XdsType, wildcard: bool },
    /// The subscription of `t` changed: now every resource (`wildcard`) and/or `names`.
    Subscribed {
        t: XdsType,
        wildcard: bool,
        names: &'a Names,
    },
    /// A request answered a response that is no longer the newest of its type; ignored.
    StaleNonce { t: XdsType, nonce: &'a str },
    /// A response went out (for a Delta difference split into several responses: the last).
    Sent {
        t: XdsType,
        /// SotW: the response's `version_info`; Delta: its `system_version_info`.
        version: &'a str,
        /// The nonce Envoy's answer must carry.
        nonce: &'a str,
        versions: Versions<'a>,
        /// What the proxy holds of the type once it applies the response.
        holds: Arc<TypeSet>,
        /// Encoded size of the response(s).
        bytes: usize,
        /// Time taken to build the response(s).
        took: Duration,
    },
    /// Envoy applied the response `nonce` (`version`).
    Acked {
        t: XdsType,
        version: &'a str,
        nonce: &'a str,
        /// For the first answer to this response: when the change it carries was first seen
        /// (or the stream connected, if later). The convergence time runs from there.
        converging_since: Option<SystemTime>,
    },
    /// Envoy rejected the response `nonce` (`version`) and keeps its previous configuration.
    Nacked {
        t: XdsType,
        version: &'a str,
        nonce: &'a str,
        /// Envoy's `error_detail.message`, verbatim.
        error_detail: &'a str,
    },
}

/// Something that follows a stream's protocol events. The state machines call it as each
/// fact happens, before they return the responses of the transition.
pub(crate) trait ProtocolObserver {
    fn observe(&mut self, event: ProtocolEvent<'_>);
}
