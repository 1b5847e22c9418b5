//! SimplyPrint's HTTP API, the part forma uses: add a file to the print queue (tagged with forma's
//! job id), find a queue item by that tag, remove one, and read a job's state. Every call carries
//! `X-API-KEY`; the company id is the first path segment. Answers are `{"status": true, …}` or
//! `{"status": false, "message": …}`.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{Config, Secret};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimplyPrintError {
    /// Not reached, timed out, rate limited or failed on its side: worth trying again later.
    #[error("SimplyPrint is unavailable: {0}")]
    Unavailable(String),
    /// SimplyPrint refused the call; the same call will be refused again.
    #[error("SimplyPrint refused the call: {0}")]
    Rejected(String),
}

/// A client of one SimplyPrint company.
pub struct SimplyPrint {
    http: reqwest::Client,
    /// `{base_url}/{company_id}`.
    company_url: String,
    api_key: Secret,
}

/// A job's state as SimplyPrint reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJob {
    pub id: String,
    pub status: String,
}

#[derive(Deserialize)]
struct Envelope {
    status: bool,
    #[serde(default)]
    message: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// SimplyPrint ids are numbers in some answers and strings in others.
pub fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

impl SimplyPrint {
    /// The client, when `simplyprint.api_key` and `simplyprint.company_id` are both set.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        let settings = &config.simplyprint;
        let (Some(api_key), Some(company)) = (&settings.api_key, &settings.company_id) else {
            return Ok(None);
        };
        let base = settings
            .base_url
            .as_deref()
            .unwrap_or(super::DEFAULT_BASE_URL)
            .trim_end_matches('/');
        let http = crate::infra::tls::http_client()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .build()?;
        Ok(Some(Self {
            http,
            company_url: format!("{base}/{}", company.trim()),
            api_key: api_key.clone(),
        }))
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<serde_json::Map<String, Value>, SimplyPrintError> {
        let response = request
            .header("X-API-KEY", self.api_key.expose())
            .send()
            .await
            .map_err(|e| SimplyPrintError::Unavailable(without_url(&e)))?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(SimplyPrintError::Unavailable(format!("answered {status}")));
        }
        let body: Envelope = response.json().await.map_err(|e| {
            SimplyPrintError::Unavailable(format!(
                "unreadable answer ({status}): {}",
                without_url(&e)
            ))
        })?;
        if !status.is_success() || !body.status {
            let message = body.message.unwrap_or_else(|| status.to_string());
            return Err(SimplyPrintError::Rejected(message));
        }
        Ok(body.rest)
    }

    /// Adds one print of `file_id` to the bottom of the queue, tagged `tag`; returns the queue
    /// item's id, which forma records as the job's SimplyPrint id.
    pub async fn add_queue_item(
        &self,
        file_id: &str,
        tag: &str,
    ) -> Result<String, SimplyPrintError> {
        let body = json!({"fileId": file_id, "amount": 1, "position": "bottom", "note": tag});
        let answer = self
            .call(
                self.http
                    .post(format!("{}/queue/AddItem", self.company_url))
                    .json(&body),
            )
            .await?;
        answer
            .get("created_id")
            .and_then(id_text)
            .ok_or_else(|| SimplyPrintError::Unavailable("AddItem answered no created_id".into()))
    }

    /// The id of the queue item tagged `tag`, if there is one: after a send whose answer was lost,
    /// this tells whether it arrived.
    pub async fn find_queue_item(&self, tag: &str) -> Result<Option<String>, SimplyPrintError> {
        let answer = self
            .call(
                self.http
                    .get(format!("{}/queue/GetItems", self.company_url)),
            )
            .await?;
        let items = answer
            .get("queue")
            .and_then(|q| q.get("items"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(items
            .iter()
            .find(|item| item.get("note").and_then(Value::as_str) == Some(tag))
            .and_then(|item| item.get("id"))
            .and_then(id_text))
    }

    /// Removes a queue item (a job cancelled in forma before it printed).
    pub async fn remove_queue_item(&self, id: &str) -> Result<(), SimplyPrintError> {
        let job: Value = id.parse::<u64>().map_or_else(|_| json!(id), |n| json!(n));
        self.call(
            self.http
                .post(format!("{}/queue/RemoveItem", self.company_url))
                .json(&json!({"job": job})),
        )
        .await
        .map(drop)
    }

    /// A job's state; `None` when SimplyPrint does not know the id.
    pub async fn job(&self, id: &str) -> Result<Option<RemoteJob>, SimplyPrintError> {
        let id_param: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let request = self.http.get(format!(
            "{}/jobs/GetDetails?id={id_param}",
            self.company_url
        ));
        match self.call(request).await {
            Ok(answer) => Ok(answer.get("job").and_then(|job| {
                Some(RemoteJob {
                    id: job.get("id").and_then(id_text)?,
                    status: job.get("status")?.as_str()?.to_owned(),
                })
            })),
            Err(SimplyPrintError::Rejected(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// reqwest's errors name the URL, which holds the company id; the logs need the cause only.
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "SimplyPrint");
    }
    text
}
