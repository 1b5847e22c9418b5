//! What the HTTP implementations of the service clients share: a service's instances, their
//! health probe, calls to their internal API, and the error every service client returns.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::header::HeaderValue;
use serde::Serialize;

use crate::config::{Config, Secret};
use crate::health::CheckResult;
use crate::http::error::{ErrorBody, ErrorMessage};
use crate::http::request_id::{self, X_REQUEST_ID};
use crate::order::internal::X_INTERNAL_KEY;

/// Why a call to another service failed, whichever implementation made it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No instance could be reached, or it failed on its side: worth retrying later.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The service answered and refused the call (4xx): retrying the same call will not help.
    #[error("service refused the call ({status}): {message}")]
    Rejected { status: u16, message: String },
}

impl ClientError {
    /// As a bus handler's failure: a service that did not answer is a passing failure, which the
    /// handler rides out ([`PeerUnavailable`]); a refusal is the event's own.
    ///
    /// [`PeerUnavailable`]: crate::events::outage::PeerUnavailable
    pub fn into_handler_error(self) -> crate::events::bus::HandlerError {
        match self {
            ClientError::Unavailable(message) => {
                Box::new(crate::events::outage::PeerUnavailable(message))
            }
            refused => Box::new(refused),
        }
    }

    /// The refusal an in-process implementation gives: what the HTTP implementation would read
    /// from the internal API's answer to the same call.
    pub fn refused(error: crate::http::ApiError) -> Self {
        Self::Rejected {
            status: error.status().as_u16(),
            message: match error.body().message {
                crate::http::error::ErrorMessage::One(message) => message,
                crate::http::error::ErrorMessage::Many(messages) => messages.join("; "),
            },
        }
    }

    /// What another service's answer means to an API caller: its "not found" and its "conflict"
    /// pass through with their message; its silence, or a refusal of a call it should have
    /// taken, is a 503 naming `service` (`"print"`, `"shipping"`).
    pub fn into_api_error(self, service: &'static str) -> crate::http::ApiError {
        use crate::http::ApiError;
        match self {
            ClientError::Rejected {
                status: 404,
                message,
            } => ApiError::not_found(message),
            ClientError::Rejected {
                status: 409,
                message,
            } => ApiError::conflict(message),
            other => {
                tracing::warn!(error = %other, service, "a service did not answer");
                ApiError::service_unavailable(format!(
                    "The {service} service is unavailable; try again"
                ))
            }
        }
    }
}

/// The instances of one downstream service.
#[derive(Clone)]
pub struct ServiceEndpoints {
    pub http: reqwest::Client,
    pub instances: Vec<String>,
    pub health_timeout: Duration,
    timeout: Duration,
    internal_key: Option<Secret>,
}

impl ServiceEndpoints {
    pub fn new(instances: Vec<String>, config: &Config) -> anyhow::Result<Self> {
        let http = crate::infra::tls::http_client()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_millis(config.services.timeout_ms))
            .build()?;
        Ok(Self {
            http,
            instances,
            health_timeout: Duration::from_millis(config.services.health_timeout_ms),
            timeout: Duration::from_millis(config.services.timeout_ms),
            internal_key: config.internal.key.clone(),
        })
    }

    /// `POST {instance}{path}` on the internal API (SPEC §7) with the internal key and the current
    /// request id; see [`ServiceEndpoints::call_internal`].
    pub async fn post_internal(
        &self,
        path: &str,
        body: &(impl Serialize + Sync),
    ) -> Result<reqwest::Response, ClientError> {
        self.call_internal(reqwest::Method::POST, path, Some(body))
            .await
    }

    /// `GET {instance}{path}` (query included in `path`) on the internal API.
    pub async fn get_internal(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        self.call_internal::<()>(reqwest::Method::GET, path, None)
            .await
    }

    /// A call to the internal API (SPEC §7) with the internal key and the current request id. The
    /// next instance is tried only when the connection was refused: the request surely never
    /// arrived, so it cannot be done twice. After a timeout or a 5xx it may have been, and these
    /// calls are not all idempotent, so the caller decides.
    pub async fn call_internal<B: Serialize + Sync + ?Sized>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<reqwest::Response, ClientError> {
        let key = self.internal_key_header()?;
        let mut refused = Vec::new();
        for base in &self.instances {
            let mut request = self.http.request(method.clone(), format!("{base}{path}"));
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(key) = &key {
                request = request.header(X_INTERNAL_KEY, key.clone());
            }
            if let Some(id) = request_id::current() {
                request = request.header(X_REQUEST_ID, id.header_value());
            }
            match request.send().await {
                Ok(response) => return answer(base, response).await,
                Err(e) if e.is_connect() => {
                    tracing::warn!(instance = %base, path, "instance unreachable, trying the next");
                    refused.push(format!("{base}: connection refused"));
                }
                Err(e) if e.is_timeout() => {
                    return Err(ClientError::Unavailable(format!(
                        "{base}: no answer within {:?}",
                        self.timeout
                    )));
                }
                Err(e) => return Err(ClientError::Unavailable(format!("{base}: {e}"))),
            }
        }
        Err(ClientError::Unavailable(if refused.is_empty() {
            "no instances configured".to_owned()
        } else {
            refused.join("; ")
        }))
    }

    /// The key as a header value marked sensitive, so no HTTP-level log ever prints it.
    fn internal_key_header(&self) -> Result<Option<HeaderValue>, ClientError> {
        let Some(key) = &self.internal_key else {
            return Ok(None);
        };
        let mut value = HeaderValue::from_str(key.expose()).map_err(|_| {
            ClientError::Unavailable("internal.key is not a valid header value".to_owned())
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// `GET /health/ready` on every instance at once: ok while at least one answers.
    pub async fn health(&self) -> CheckResult {
        let results = join_all(self.instances.iter().map(|base| self.probe(base))).await;
        let slowest_ok = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .max()
            .copied();
        let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        match slowest_ok {
            None => CheckResult::down(failures.join("; ")),
            Some(latency) if failures.is_empty() => CheckResult::ok(latency),
            Some(latency) => CheckResult::ok(latency)
                .with_message(format!(
                    "{} of {} instances down",
                    failures.len(),
                    self.instances.len()
                ))
                .with_detail(failures.join("; ")),
        }
    }

    async fn probe(&self, base: &str) -> Result<Duration, String> {
        let started = Instant::now();
        let mut request = self
            .http
            .get(format!("{base}/health/ready"))
            .timeout(self.health_timeout);
        if let Some(id) = request_id::current() {
            request = request.header(X_REQUEST_ID, id.header_value());
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok(started.elapsed()),
            Ok(response) => Err(format!("{base}: answered {}", response.status())),
            Err(e) if e.is_timeout() => Err(format!(
                "{base}: no answer within {:?}",
                self.health_timeout
            )),
            Err(e) if e.is_connect() => Err(format!("{base}: connection refused")),
            Err(e) => Err(format!("{base}: {e}")),
        }
    }
}

/// Reads a JSON answer of an internal call; an unreadable one is the service failing.
pub async fn json_of<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, ClientError> {
    response
        .json::<T>()
        .await
        .map_err(|e| ClientError::Unavailable(format!("unreadable answer: {e}")))
}

/// The answer's JSON, or `None` for a 404 of the internal API: what was asked for does not exist
/// (in that tenant).
pub async fn json_unless_absent<T: serde::de::DeserializeOwned>(
    answer: Result<reqwest::Response, ClientError>,
) -> Result<Option<T>, ClientError> {
    match answer {
        Ok(response) => json_of(response).await.map(Some),
        Err(ClientError::Rejected { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A 2xx passes; a 4xx is the service refusing (with its §4 message); a 5xx is unavailability.
async fn answer(base: &str, response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let message = match response.json::<ErrorBody>().await {
        Ok(body) => match body.message {
            ErrorMessage::One(message) => message,
            ErrorMessage::Many(messages) => messages.join("; "),
        },
        Err(_) => status.to_string(),
    };
    if status.is_server_error() {
        Err(ClientError::Unavailable(format!(
            "{base}: answered {status}: {message}"
        )))
    } else {
        Err(ClientError::Rejected {
            status: status.as_u16(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ClientError;

    #[test]
    fn a_services_not_found_and_conflict_pass_through_and_anything_else_is_a_503_naming_it() {
        let rejected = |status: u16| ClientError::Rejected {
            status,
            message: format!("refused with {status}"),
        };
        let answer = |error: ClientError| {
            let error = error.into_api_error("print");
            (error.status().as_u16(), error.body().message)
        };
        let unavailable = crate::http::error::ErrorMessage::One(
            "The print service is unavailable; try again".to_owned(),
        );
        for (status, message) in [(404, "refused with 404"), (409, "refused with 409")] {
            let (passed, said) = answer(rejected(status));
            assert_eq!(passed, status);
            assert_eq!(
                said,
                crate::http::error::ErrorMessage::One(message.to_owned())
            );
        }
        for error in [
            rejected(400),
            rejected(422),
            ClientError::Unavailable("connection refused".to_owned()),
        ] {
            assert_eq!(answer(error), (503, unavailable.clone()));
        }
    }
}
