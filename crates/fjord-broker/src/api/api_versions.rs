//! ApiVersions (key 18): the versions of every API this broker serves, from [`super::SUPPORTED`].

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::{Ctx, SUPPORTED};

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*lo)
                .with_max_version(*hi)
        })
        .collect()
}

pub fn handle(_ctx: &Ctx<'_>, _req: ApiVersionsRequest) -> ApiVersionsResponse {
    // No supported/finalized features are sent: kafka-protocol omits tagged fields left at their defaults,
    // which librdkafka 2.0 (Debian's kcat) needs to parse a v3 response.
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

/// The KIP-511 answer to an ApiVersions request of a version we do not speak (always encoded as v0).
pub fn unsupported_version_response() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys())
}
