//! `--decode full`: each received resource decoded into its Envoy type, as Envoy itself does
//! before it applies a response — so that a server's figures include no resource a real Envoy
//! could not read. Listeners' HTTP connection managers (an `Any` inside each filter) are
//! decoded too: they hold most of a listener's configuration.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener, filter::ConfigType};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use prost::Message;

use meshpilot_snapshot::XdsType;

const HCM_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// A resource that is not a well-formed message of its type.
#[derive(Debug, thiserror::Error)]
pub enum FullDecodeError {
    /// The resource itself does not decode.
    #[error("{t:?} resource: {source}")]
    Resource {
        t: XdsType,
        source: prost::DecodeError,
    },
    /// A listener's filter `name` holds an HTTP connection manager that does not decode.
    #[error("listener {listener:?}, filter {filter:?}: {source}")]
    ConnectionManager {
        listener: String,
        filter: String,
        source: prost::DecodeError,
    },
}

/// Decodes `body` as a resource of type `t` (and a listener's connection managers).
pub fn full(t: XdsType, body: &[u8]) -> Result<(), FullDecodeError> {
    let resource = |source| FullDecodeError::Resource { t, source };
    match t {
        XdsType::Cluster => Cluster::decode(body).map(drop).map_err(resource),
        XdsType::Endpoint => ClusterLoadAssignment::decode(body)
            .map(drop)
            .map_err(resource),
        XdsType::Route => RouteConfiguration::decode(body).map(drop).map_err(resource),
        XdsType::Secret => {
            envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret::decode(body)
                .map(drop)
                .map_err(resource)
        }
        XdsType::Listener => {
            let listener = Listener::decode(body).map_err(resource)?;
            let chains = listener
                .filter_chains
                .iter()
                .chain(listener.default_filter_chain.as_ref());
            for filter in chains.flat_map(|c| &c.filters) {
                connection_manager(&listener.name, filter)?;
            }
            Ok(())
        }
    }
}

/// Decodes the HTTP connection manager a filter holds, if it holds one.
fn connection_manager(listener: &str, filter: &Filter) -> Result<(), FullDecodeError> {
    match &filter.config_type {
        Some(ConfigType::TypedConfig(any)) if any.type_url == HCM_TYPE_URL => {
            HttpConnectionManager::decode(&any.value[..])
                .map(drop)
                .map_err(|source| FullDecodeError::ConnectionManager {
                    listener: listener.to_string(),
                    filter: filter.name.clone(),
                    source,
                })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::listener::v3::FilterChain;
    use envoy_types::pb::google::protobuf::Any;

    #[test]
    fn well_formed_resources_decode_and_corrupted_ones_do_not() {
        let cluster = Cluster {
            name: "outbound|80||a".into(),
            ..Default::default()
        }
        .encode_to_vec();
        assert!(full(XdsType::Cluster, &cluster).is_ok());
        // Field 2 (the discovery type, a varint) sent as bytes: a wire-type mismatch.
        assert!(full(XdsType::Cluster, &[0x12, 0x01, 0x00]).is_err());
        assert!(full(XdsType::Endpoint, &cluster[..cluster.len() - 1]).is_err());

        let listener = |hcm: Vec<u8>| {
            Listener {
                name: "0.0.0.0_80".into(),
                filter_chains: vec![FilterChain {
                    filters: vec![Filter {
                        name: "envoy.filters.network.http_connection_manager".into(),
                        config_type: Some(ConfigType::TypedConfig(Any {
                            type_url: HCM_TYPE_URL.into(),
                            value: hcm,
                        })),
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }
            .encode_to_vec()
        };
        let hcm = HttpConnectionManager {
            stat_prefix: "outbound_0.0.0.0_80".into(),
            ..Default::default()
        }
        .encode_to_vec();
        assert!(full(XdsType::Listener, &listener(hcm.clone())).is_ok());
        let cut = listener(hcm[..hcm.len() - 1].to_vec());
        let err = full(XdsType::Listener, &cut).expect_err("a cut connection manager");
        assert!(err.to_string().contains("0.0.0.0_80"), "{err}");
    }
}
