//! What the two ADS state machines ([`sotw`](super::sotw), [`delta`](super::delta)) have in
//! common: the [`Protocol`] trait the driver runs them through, the nonce counter, and the
//! record of the last response of a type with its ACK/NACK transitions.
//!
//! A state machine is a plain struct: a transition takes a request or a snapshot, returns the
//! responses to send, and reports protocol events to the observer it is given. It never
//! blocks, awaits, or touches the registry, the metrics or a socket: the driver
//! ([`server`](super::server)) does all of that.

use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;

use super::delta::DiffCache;
use super::events::{ProtocolEvent, ProtocolObserver};
use super::registry::Variant;
use super::wire::Framed;
use meshpilot_snapshot::{Snapshot, XdsType};

/// An ADS protocol variant as a state machine: requests and snapshot changes in, responses out.
pub(crate) trait Protocol: Send + 'static {
    type Request: Send + 'static;
    type Response: prost::Message + Framed + Send + 'static;
    const VARIANT: Variant;

    /// A stream's state before its first request. `connected_at` starts the convergence time
    /// of the first responses; `diffs` is the server's cache of Delta differences.
    fn new(connected_at: SystemTime, diffs: &Arc<DiffCache>) -> Self;

    fn node(req: &Self::Request) -> Option<&Node>;
    /// How many resource names a request carries (checked against the server's limit).
    fn resource_names(req: &Self::Request) -> usize;
    /// The type a request is about.
    fn type_url(req: &Self::Request) -> &str;

    /// Transition: one request; `snap` is the newest snapshot, `None` while it is being built.
    fn on_request(
        &mut self,
        req: Self::Request,
        snap: Option<&Snapshot>,
        events: &mut impl ProtocolObserver,
    ) -> Vec<Self::Response>;

    /// Transition: a new snapshot of the proxy's class.
    fn on_snapshot(
        &mut self,
        snap: &Snapshot,
        events: &mut impl ProtocolObserver,
    ) -> Vec<Self::Response>;

    /// Whether a change waits for Envoy to answer an earlier response (and goes out with the
    /// answer, from the newest snapshot): the driver need not look at snapshots meanwhile.
    fn deferring(&self) -> bool {
        false
    }
}

/// Nonces of one stream: a counter, unique within the stream across all types.
#[derive(Debug, Default)]
pub(crate) struct Nonces(u64);

impl Nonces {
    pub(crate) fn next(&mut self) -> String {
        self.0 += 1;
        self.0.to_string()
    }
}

/// The last response sent for one type on one stream (SotW: its `version_info`; Delta: its
/// `system_version_info`), and whether Envoy has answered it.
#[derive(Debug, Clone)]
pub(crate) struct LastResponse {
    pub version: String,
    pub nonce: String,
    /// Start of the convergence time for this response: when the change it carries was first
    /// seen, or when the stream connected if that was later.
    pub converging_since: SystemTime,
    /// Whether Envoy has answered it (only the first answer is timed).
    pub answered: bool,
}

impl LastResponse {
    pub fn new(
        version: String,
        nonce: String,
        connected_at: SystemTime,
        snap: &Snapshot,
    ) -> LastResponse {
        LastResponse {
            version,
            nonce,
            converging_since: snap.changed.max(connected_at),
            answered: false,
        }
    }

    /// Transition: Envoy applied this response.
    pub fn ack(&mut self, t: XdsType, events: &mut impl ProtocolObserver) {
        let first = !std::mem::replace(&mut self.answered, true);
        events.observe(ProtocolEvent::Acked {
            t,
            version: &self.version,
            nonce: &self.nonce,
            converging_since: first.then_some(self.converging_since),
        });
    }

    /// Transition: Envoy rejected this response. The caller keeps its state (this response
    /// included), so the same content is not sent again: only a change of content or of
    /// subscription produces the next response, which avoids a NACK loop.
    pub fn nack(&mut self, t: XdsType, error_detail: &str, events: &mut impl ProtocolObserver) {
        self.answered = true;
        events.observe(ProtocolEvent::Nacked {
            t,
            version: &self.version,
            nonce: &self.nonce,
            error_detail,
        });
    }
}
