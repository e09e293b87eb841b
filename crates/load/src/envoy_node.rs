//! What Envoy 1.40 says about itself in the `Node` of the first request on each xDS stream —
//! user agent, build version, the list of its extensions and its client features — read from
//! `envoy-1.40-node.json` (captured from a real Envoy by `scripts/capture-envoy-node.sh`) and
//! encoded once, so that each simulated proxy's first request carries the same ~60 KB node a
//! real Envoy's does, at the cost of one copy per stream.

use std::collections::BTreeMap;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{
    BuildVersion, Extension, Node, node::UserAgentVersionType,
};
use envoy_types::pb::envoy::r#type::v3::SemanticVersion;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::Message;
use serde::Deserialize;

/// The node as Envoy 1.40's admin `/server_info` shows it, reduced to what it sends of itself.
const ENVOY_NODE_JSON: &str = include_str!("envoy-1.40-node.json");

/// Why the embedded node description could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyNodeError {
    /// The embedded JSON does not have the expected shape (regenerate it with
    /// `scripts/capture-envoy-node.sh`).
    #[error("the embedded Envoy node (envoy-1.40-node.json) is malformed: {0}")]
    Json(#[from] serde_json::Error),
}

/// `envoy-1.40-node.json`: the fields of `envoy.config.core.v3.Node` that describe Envoy itself.
#[derive(Debug, Deserialize)]
struct NodeJson {
    user_agent_name: String,
    user_agent_build_version: BuildVersionJson,
    #[serde(default)]
    client_features: Vec<String>,
    extensions: Vec<ExtensionJson>,
}

/// `BuildVersion`: the semantic version and the build's metadata (all strings in Envoy's).
#[derive(Debug, Deserialize)]
struct BuildVersionJson {
    version: SemanticVersionJson,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct SemanticVersionJson {
    major_number: u32,
    minor_number: u32,
    patch: u32,
}

/// One `Extension` as Envoy lists it: name, category and the config types it accepts.
#[derive(Debug, Deserialize)]
struct ExtensionJson {
    name: String,
    category: String,
    #[serde(default)]
    type_urls: Vec<String>,
}

/// The Envoy-wide part of every simulated proxy's node, decoded and encoded once at start-up.
#[derive(Debug, Clone)]
pub struct EnvoyNode {
    /// The node's Envoy-wide fields (user agent, build version, extensions, client features);
    /// the per-proxy fields (id, cluster, metadata, locality) are empty.
    node: Node,
    /// `node`'s encoding. All its fields come after id, cluster, metadata and locality in
    /// field-number order, so a proxy's own fields encoded and then these bytes are the encoding of its
    /// full node, in the order Envoy writes it (see `grpc::first_request_frame`).
    encoded: Bytes,
}

impl EnvoyNode {
    /// Reads the embedded description of Envoy 1.40.
    pub fn embedded() -> Result<EnvoyNode, EnvoyNodeError> {
        EnvoyNode::from_json(ENVOY_NODE_JSON)
    }

    fn from_json(json: &str) -> Result<EnvoyNode, EnvoyNodeError> {
        let j: NodeJson = serde_json::from_str(json)?;
        let v = j.user_agent_build_version;
        let metadata = Struct {
            fields: v
                .metadata
                .into_iter()
                .map(|(k, s)| {
                    (
                        k,
                        Value {
                            kind: Some(Kind::StringValue(s)),
                        },
                    )
                })
                .collect(),
        };
        let node = Node {
            user_agent_name: j.user_agent_name,
            user_agent_version_type: Some(UserAgentVersionType::UserAgentBuildVersion(
                BuildVersion {
                    version: Some(SemanticVersion {
                        major_number: v.version.major_number,
                        minor_number: v.version.minor_number,
                        patch: v.version.patch,
                    }),
                    metadata: Some(metadata),
                },
            )),
            extensions: j
                .extensions
                .into_iter()
                .map(|e| Extension {
                    name: e.name,
                    category: e.category,
                    type_urls: e.type_urls,
                    ..Default::default()
                })
                .collect(),
            client_features: j.client_features,
            ..Default::default()
        };
        let encoded = node.encode_to_vec().into();
        Ok(EnvoyNode { node, encoded })
    }

    /// The Envoy-wide fields, encoded (see the field's documentation).
    pub fn encoded(&self) -> &Bytes {
        &self.encoded
    }

    /// The Envoy-wide fields, decoded (for tests and reports).
    pub fn node(&self) -> &Node {
        &self.node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_envoy_node_parses_with_its_extension_list() {
        let envoy = EnvoyNode::embedded().expect("the embedded node parses");
        let node = envoy.node();
        assert_eq!(node.user_agent_name, "envoy");
        let Some(UserAgentVersionType::UserAgentBuildVersion(b)) = &node.user_agent_version_type
        else {
            panic!("a build version: {:?}", node.user_agent_version_type);
        };
        let v = b.version.expect("a semantic version");
        assert_eq!((v.major_number, v.minor_number), (1, 40));
        assert!(
            b.metadata
                .as_ref()
                .is_some_and(|m| m.fields.contains_key("revision.sha")),
            "{b:?}"
        );
        assert!(node.extensions.len() >= 100, "{}", node.extensions.len());
        assert!(
            node.extensions.iter().any(|e| e.name
                == "envoy.filters.network.http_connection_manager"
                && e.category == "envoy.filters.network"
                && !e.type_urls.is_empty()),
            "the HTTP connection manager is listed"
        );
        assert_eq!(Node::decode(&envoy.encoded()[..]).as_ref(), Ok(node));
    }

    #[test]
    fn a_malformed_description_is_an_error_not_a_panic() {
        let err = EnvoyNode::from_json(r#"{"user_agent_name": "envoy"}"#).expect_err("refused");
        assert!(err.to_string().contains("envoy-1.40-node.json"), "{err}");
    }
}
