//! The gRPC transport below the ADS protocol, shared by the server and the load tool: gRPC
//! messages cut from HTTP/2 DATA frames as they arrive ([`frames`]), a request stream decoded
//! from them ([`inbound`]), and a connection whose full-frame writes are gathered into fewer
//! socket writes ([`coalesce`]), with gathering buffers from a pool that the listener owns and
//! its connections share ([`coalesce::BufferPool`]). Nothing here knows what an xDS resource
//! is, and nothing here is a process-wide global.

pub mod coalesce;
pub mod frames;
pub mod inbound;
pub mod tls;
