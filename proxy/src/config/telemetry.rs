//! `[telemetry]`: where `spillway serve` sends its traces (OTLP over HTTP, JSON).

use std::time::Duration;

use crate::config::secret::ApiKey;

/// The default `service_name`: the `service.name` every span's resource carries.
pub const DEFAULT_SERVICE_NAME: &str = "spillway";

/// The default `timeout`: the longest one export may take before its spans are dropped.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// `[telemetry]`, validated.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The URL spans are posted to: the collector's base URL with `/v1/traces` appended
    /// (unless it already ends so). It may carry credentials (when given by `env:`): never
    /// logged.
    pub traces_url: ApiKey,
    /// The resource's `service.name`.
    pub service_name: String,
    /// Headers each export sends (a vendor's API key, by `env:` reference): name and value.
    pub headers: Vec<(String, ApiKey)>,
    /// The longest one export may take.
    pub timeout: Duration,
}

/// `endpoint` as the URL spans go to: `/v1/traces` appended to a base URL.
pub fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    if trimmed.ends_with("/v1/traces") {
        trimmed.to_string()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_appended_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://api.example.com/otlp/v1/traces"),
            "https://api.example.com/otlp/v1/traces"
        );
    }
}
