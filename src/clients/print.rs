//! How the order service reaches the print service (SPEC §1, §7): in-process while print lives in
//! the order role, over `/internal/print-jobs` once it runs apart. Both implementations pass one
//! contract suite (below).

use async_trait::async_trait;
use uuid::Uuid;

use super::http::{ClientError, ServiceEndpoints, json_of};
use crate::config::Config;
use crate::http::ApiError;
use crate::print::jobs::transitions::ChangeError;
use crate::print::jobs::{PrintJob, PrintJobStatus};
use crate::print::plan::PrintPlan;
use crate::print::{JobChange, PrintCore};

#[async_trait]
pub trait PrintClient: Send + Sync {
    /// Creates the jobs of `plan` that do not exist yet and returns those created (idempotent).
    async fn create_print_jobs(&self, plan: &PrintPlan) -> Result<Vec<PrintJob>, ClientError>;

    /// Cancels a job (idempotent); a job that completed or failed is refused (409).
    async fn cancel_print_job(&self, tenant_id: Uuid, id: Uuid) -> Result<PrintJob, ClientError>;

    /// Queues a failed or cancelled job again; any other is refused (409).
    async fn retry_print_job(&self, tenant_id: Uuid, id: Uuid) -> Result<PrintJob, ClientError>;

    /// Every job of an order, oldest first.
    async fn jobs_of_order(
        &self,
        tenant_id: Uuid,
        order_id: Uuid,
    ) -> Result<Vec<PrintJob>, ClientError>;
}

/// Print in this process.
pub struct InProcessPrintClient {
    core: PrintCore,
}

impl InProcessPrintClient {
    pub fn new(core: PrintCore) -> Self {
        Self { core }
    }

    async fn change(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        to: PrintJobStatus,
        reason: Option<String>,
    ) -> Result<PrintJob, ClientError> {
        match self.core.change(tenant_id, id, to, reason).await {
            Ok(JobChange::Changed(changed)) => Ok(changed.after),
            Ok(JobChange::Unchanged(job)) => Ok(*job),
            Ok(JobChange::NotFound) => Err(rejected(ApiError::not_found("Print job not found"))),
            Err(ChangeError::Illegal(e)) => Err(rejected(e.into())),
            Err(ChangeError::Db(e)) => Err(unavailable(e)),
        }
    }
}

/// The refusal the HTTP implementation would read from the internal API's answer.
fn rejected(error: ApiError) -> ClientError {
    ClientError::Rejected {
        status: error.status().as_u16(),
        message: match error.body().message {
            crate::http::error::ErrorMessage::One(message) => message,
            crate::http::error::ErrorMessage::Many(messages) => messages.join("; "),
        },
    }
}

fn unavailable(error: impl std::fmt::Display) -> ClientError {
    ClientError::Unavailable(format!("the print service's database: {error}"))
}

#[async_trait]
impl PrintClient for InProcessPrintClient {
    async fn create_print_jobs(&self, plan: &PrintPlan) -> Result<Vec<PrintJob>, ClientError> {
        self.core.create_jobs(plan).await.map_err(unavailable)
    }

    async fn cancel_print_job(&self, tenant_id: Uuid, id: Uuid) -> Result<PrintJob, ClientError> {
        let reason = Some("Cancelled by the order service".to_owned());
        self.change(tenant_id, id, PrintJobStatus::Cancelled, reason)
            .await
    }

    async fn retry_print_job(&self, tenant_id: Uuid, id: Uuid) -> Result<PrintJob, ClientError> {
        self.change(tenant_id, id, PrintJobStatus::Queued, None)
            .await
    }

    async fn jobs_of_order(
        &self,
        tenant_id: Uuid,
        order_id: Uuid,
    ) -> Result<Vec<PrintJob>, ClientError> {
        self.core
            .jobs_of_order(tenant_id, order_id)
            .await
            .map_err(unavailable)
    }
}

/// Print as a service of its own, over its internal API.
pub struct HttpPrintClient {
    endpoints: ServiceEndpoints,
}

impl HttpPrintClient {
    pub fn new(instances: Vec<String>, config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            endpoints: ServiceEndpoints::new(instances, config)?,
        })
    }
}

#[async_trait]
impl PrintClient for HttpPrintClient {
    async fn create_print_jobs(&self, plan: &PrintPlan) -> Result<Vec<PrintJob>, ClientError> {
        json_of(
            self.endpoints
                .post_internal("/internal/print-jobs", plan)
                .await?,
        )
        .await
    }

    async fn cancel_print_job(&self, tenant_id: Uuid, id: Uuid) -> Result<PrintJob, ClientError> {
        let path = format!("/internal/print-jobs/{id}?tenantId={tenant_id}");
        let response = self
            .endpoints
            .call_internal::<()>(reqwest::Method::DELETE, &path, None)
            .await?;
        json_of(response).await
    }

    async fn retry_print_job(&self, tenant_id: Uuid, id: Uuid) -> Result<PrintJob, ClientError> {
        let path = format!("/internal/print-jobs/{id}/retry?tenantId={tenant_id}");
        let response = self
            .endpoints
            .call_internal::<()>(reqwest::Method::POST, &path, None)
            .await?;
        json_of(response).await
    }

    async fn jobs_of_order(
        &self,
        tenant_id: Uuid,
        order_id: Uuid,
    ) -> Result<Vec<PrintJob>, ClientError> {
        let path = format!("/internal/print-jobs?tenantId={tenant_id}&orderId={order_id}");
        json_of(self.endpoints.get_internal(&path).await?).await
    }
}
