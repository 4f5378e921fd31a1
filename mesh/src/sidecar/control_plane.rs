//! The sidecar's side of the control plane's `/sidecar/v1` API: every call
//! carries the sidecar's dataplane token, and a refusal (a missing, revoked
//! or wrong token) is told apart from a control plane that is away, which
//! the sidecar rides out.

use std::fmt;
use std::time::Duration;

use http::HeaderValue;

use super::SidecarError;
use crate::api::{CertificateRequest, CertificateResponse, Registration, SidecarConfig};

/// Why a call to the control plane did not work.
#[derive(Debug)]
pub(crate) enum CallError {
    /// It answered 401 or 403: waiting will not help.
    Refused(String),
    /// Unreachable, or any other failure: worth retrying.
    Failed(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(message) | Self::Failed(message) => f.write_str(message),
        }
    }
}

impl From<String> for CallError {
    fn from(message: String) -> Self {
        Self::Failed(message)
    }
}

/// The control plane's `/sidecar/v1` API.
pub(crate) struct ControlPlaneClient {
    base: String,
    http: reqwest::Client,
    /// `Bearer <token>`, when the sidecar has one.
    authorization: Option<HeaderValue>,
}

impl ControlPlaneClient {
    /// A client of the control plane at `base`, trusting only `ca_pem` for
    /// an `https://` one, presenting `token` on every call.
    pub(crate) fn new(
        base: &str,
        ca_pem: Option<&[u8]>,
        token: Option<&str>,
    ) -> Result<Self, SidecarError> {
        let https = base.starts_with("https://");
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tls_built_in_root_certs(false);
        match (https, ca_pem) {
            (true, Some(pem)) => {
                for certificate in reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| SidecarError::Invalid(format!("--control-plane-ca: {e}")))?
                {
                    builder = builder.add_root_certificate(certificate);
                }
            }
            (true, None) => {
                return Err(SidecarError::Invalid(
                    "an https:// control plane needs --control-plane-ca, the CA that issued its certificate".to_string(),
                ))
            }
            (false, Some(_)) => {
                return Err(SidecarError::Invalid(
                    "--control-plane-ca is for an https:// control plane".to_string(),
                ))
            }
            (false, None) => {}
        }
        if token.is_some() && !https && !is_loopback_url(base) {
            tracing::warn!(control_plane = %base, "the dataplane token goes to the control plane in clear text: give it TLS (https://… with --control-plane-ca)");
        }
        let authorization = token
            .map(|token| {
                let mut value =
                    HeaderValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
                        SidecarError::Invalid(
                            "the token has characters a header cannot carry".to_string(),
                        )
                    })?;
                value.set_sensitive(true);
                Ok::<_, SidecarError>(value)
            })
            .transpose()?;
        Ok(Self {
            authorization,
            base: base.trim_end_matches('/').to_string(),
            http: builder
                .build()
                .map_err(|e| SidecarError::Invalid(format!("control plane client: {e}")))?,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.authorization {
            Some(value) => request.header(http::header::AUTHORIZATION, value.clone()),
            None => request,
        }
    }

    pub(crate) async fn certificate(
        &self,
        service: &str,
        csr: String,
    ) -> Result<CertificateResponse, CallError> {
        let response = self
            .request(reqwest::Method::POST, "/sidecar/v1/certificate")
            .timeout(Duration::from_secs(10))
            .json(&CertificateRequest {
                service: service.to_string(),
                csr,
            })
            .send()
            .await
            .map_err(|e| CallError::Failed(format!("{}: {e}", self.base)))?;
        answer(response)
            .await?
            .json()
            .await
            .map_err(|e| CallError::Failed(e.to_string()))
    }

    pub(crate) async fn register(
        &self,
        instance: &str,
        registration: &Registration,
    ) -> Result<(), CallError> {
        let response = self
            .request(
                reqwest::Method::PUT,
                &format!("/sidecar/v1/dataplanes/{instance}"),
            )
            .timeout(Duration::from_secs(5))
            .json(registration)
            .send()
            .await
            .map_err(|e| CallError::Failed(format!("{}: {e}", self.base)))?;
        answer(response).await.map(drop)
    }

    /// The config, or `None` when `version` is still current after `wait`.
    pub(crate) async fn config(
        &self,
        version: Option<&str>,
        wait: Duration,
    ) -> Result<Option<SidecarConfig>, CallError> {
        let mut query = vec![("wait", humantime::format_duration(wait).to_string())];
        if let Some(version) = version {
            query.push(("version", version.to_string()));
        }
        let response = self
            .request(reqwest::Method::GET, "/sidecar/v1/config")
            .query(&query)
            .timeout(wait + Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| CallError::Failed(format!("{}: {e}", self.base)))?;
        if response.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        let config: SidecarConfig = answer(response)
            .await?
            .json()
            .await
            .map_err(|e| CallError::Failed(e.to_string()))?;
        Ok(Some(config))
    }
}

/// Whether `url`'s host is this machine (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    match uri.host() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

async fn answer(response: reqwest::Response) -> Result<reqwest::Response, CallError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|json| json["message"].as_str().map(str::to_string))
        .unwrap_or(body);
    let message = format!("the control plane answered {status}: {message}");
    Err(match status {
        reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
            CallError::Refused(message)
        }
        _ => CallError::Failed(message),
    })
}

#[cfg(test)]
mod tests {
    use super::is_loopback_url;

    #[test]
    fn loopback_control_planes_are_told_apart() {
        for url in [
            "http://127.0.0.1:5681",
            "http://localhost:5681/",
            "http://[::1]:5681",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:5681",
            "http://cp.mesh.internal:5681",
            "not a url",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }
}
