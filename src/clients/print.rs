//! How the order service reaches the print service (SPEC §1, §7): in-process while print lives in
//! the order role, over `/internal/print-jobs` once it runs apart. Both implementations pass one
//! contract suite (below).

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use super::http::{ClientError, ServiceEndpoints, json_of, json_unless_absent};
use crate::config::Config;
use crate::http::ApiError;
use crate::order::retry_queue::RetryEntry;
use crate::print::jobs::transitions::ChangeError;
use crate::print::jobs::{JobCounts, PrintJob, PrintJobStatus};
use crate::print::plan::PrintPlan;
use crate::print::simplyprint::retries;
use crate::print::{JobChange, PrintCore};

#[async_trait]
pub trait PrintClient: Send + Sync {
    /// Creates the jobs of `plan` that do not exist yet and returns those created (idempotent).
    async fn create_print_jobs(&self, plan: &PrintPlan) -> Result<Vec<PrintJob>, ClientError>;

    /// Cancels a job (idempotent), or gives up a failed one; a completed job is refused (409).
    async fn cancel_print_job(&self, tenant_id: Uuid, id: Uuid) -> Result<PrintJob, ClientError>;

    /// Queues a failed or cancelled job again (a queued one is returned as it is); a printing or
    /// completed one is refused (409).
    async fn retry_print_job(&self, tenant_id: Uuid, id: Uuid) -> Result<PrintJob, ClientError>;

    /// One job of the tenant; `None` when it has none by that id.
    async fn print_job(&self, tenant_id: Uuid, id: Uuid) -> Result<Option<PrintJob>, ClientError>;

    /// Every job of an order, oldest first.
    async fn jobs_of_order(
        &self,
        tenant_id: Uuid,
        order_id: Uuid,
    ) -> Result<Vec<PrintJob>, ClientError>;

    /// How many of the tenant's jobs (for orders and for stock) created in `from..=to` are in
    /// each status; a status without jobs is absent.
    async fn job_counts(
        &self,
        tenant_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<JobCounts, ClientError>;

    /// The tenant's jobs SimplyPrint did not take, waiting to be sent again (the retry queue).
    async fn failed_sends(&self, tenant_id: Uuid) -> Result<Vec<RetryEntry>, ClientError>;

    /// Sends a job whose send failed again now; 404 when it has no failed send waiting.
    async fn send_again(&self, tenant_id: Uuid, id: Uuid) -> Result<(), ClientError>;

    /// Stops trying to send the job (it fails); 404 when it has no failed send waiting.
    async fn give_up_send(&self, tenant_id: Uuid, id: Uuid) -> Result<(), ClientError>;
}

/// 404 for an entry that is not (or no longer) in the retry queue.
pub(crate) fn not_waiting() -> ClientError {
    ClientError::refused(crate::order::retry_queue::not_waiting())
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
            Ok(JobChange::NotFound) => Err(ClientError::refused(ApiError::not_found(
                "Print job not found",
            ))),
            Err(ChangeError::Illegal(e)) => Err(ClientError::refused(e.into())),
            Err(ChangeError::Db(e)) => Err(unavailable(e)),
        }
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

    async fn print_job(&self, tenant_id: Uuid, id: Uuid) -> Result<Option<PrintJob>, ClientError> {
        self.core.job(tenant_id, id).await.map_err(unavailable)
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

    async fn job_counts(
        &self,
        tenant_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<JobCounts, ClientError> {
        self.core
            .job_counts(tenant_id, from, to)
            .await
            .map_err(unavailable)
    }

    async fn failed_sends(&self, tenant_id: Uuid) -> Result<Vec<RetryEntry>, ClientError> {
        retries::entries(&self.core, tenant_id)
            .await
            .map_err(unavailable)
    }

    async fn send_again(&self, tenant_id: Uuid, id: Uuid) -> Result<(), ClientError> {
        match retries::send_now(&self.core, tenant_id, id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(not_waiting()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn give_up_send(&self, tenant_id: Uuid, id: Uuid) -> Result<(), ClientError> {
        match retries::give_up(&self.core, tenant_id, id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(not_waiting()),
            Err(ChangeError::Illegal(e)) => Err(ClientError::refused(e.into())),
            Err(ChangeError::Db(e)) => Err(unavailable(e)),
        }
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

    async fn print_job(&self, tenant_id: Uuid, id: Uuid) -> Result<Option<PrintJob>, ClientError> {
        let path = format!("/internal/print-jobs/{id}?tenantId={tenant_id}");
        json_unless_absent(self.endpoints.get_internal(&path).await).await
    }

    async fn jobs_of_order(
        &self,
        tenant_id: Uuid,
        order_id: Uuid,
    ) -> Result<Vec<PrintJob>, ClientError> {
        let path = format!("/internal/print-jobs?tenantId={tenant_id}&orderId={order_id}");
        json_of(self.endpoints.get_internal(&path).await?).await
    }

    async fn job_counts(
        &self,
        tenant_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<JobCounts, ClientError> {
        // RFC 3339 in UTC ("Z"), to the nanosecond when given: nothing in it needs escaping.
        let instant = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let path = format!(
            "/internal/print-jobs/counts?tenantId={tenant_id}&from={}&to={}",
            instant(from),
            instant(to)
        );
        json_of(self.endpoints.get_internal(&path).await?).await
    }

    async fn failed_sends(&self, tenant_id: Uuid) -> Result<Vec<RetryEntry>, ClientError> {
        let path = format!("/internal/print-jobs/failed-sends?tenantId={tenant_id}");
        json_of(self.endpoints.get_internal(&path).await?).await
    }

    async fn send_again(&self, tenant_id: Uuid, id: Uuid) -> Result<(), ClientError> {
        let path = format!("/internal/print-jobs/{id}/send-again?tenantId={tenant_id}");
        self.endpoints
            .call_internal::<()>(reqwest::Method::POST, &path, None)
            .await
            .map(drop)
    }

    async fn give_up_send(&self, tenant_id: Uuid, id: Uuid) -> Result<(), ClientError> {
        let path = format!("/internal/print-jobs/{id}/give-up?tenantId={tenant_id}");
        self.endpoints
            .call_internal::<()>(reqwest::Method::POST, &path, None)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::config::Role;
    use crate::order::mappings::PrintFile;
    use crate::print::plan::PlannedLine;
    use crate::testing::{self, TestApp};

    fn plan(tenant_id: Uuid, order_id: Uuid, line_item_id: Uuid, generation: u32) -> PrintPlan {
        PrintPlan {
            tenant_id,
            order_id,
            lines: vec![PlannedLine {
                line_item_id,
                generation,
                quantity: 3,
                print_files: vec![PrintFile {
                    file_id: "f-cube".into(),
                    file_name: "cube.gcode".into(),
                    quantity: 1,
                    units_per_print: 2,
                    print_profile: Some("PLA".into()),
                }],
            }],
        }
    }

    /// What every implementation of `PrintClient` must do (SPEC §7: one suite for both).
    async fn contract(client: &dyn PrintClient) {
        let (tenant, order, line) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let created = client
            .create_print_jobs(&plan(tenant, order, line, 1))
            .await
            .expect("jobs are created");
        assert_eq!(created.len(), 2, "3 units at 2 a print");
        assert!(created.iter().all(|j| j.status == PrintJobStatus::Queued
            && j.order_id == Some(order)
            && j.line_item_id == Some(line)
            && j.print_profile.as_deref() == Some("PLA")));
        let again = client
            .create_print_jobs(&plan(tenant, order, line, 1))
            .await
            .unwrap();
        assert!(again.is_empty(), "planning twice creates nothing twice");
        let next = client
            .create_print_jobs(&plan(tenant, order, line, 2))
            .await
            .unwrap();
        assert_eq!(next.len(), 2, "a new plan generation has jobs of its own");

        let jobs = client.jobs_of_order(tenant, order).await.unwrap();
        assert_eq!(jobs.len(), 4);
        assert!(
            client
                .jobs_of_order(Uuid::new_v4(), order)
                .await
                .unwrap()
                .is_empty(),
            "tenant-scoped"
        );

        // One job, by its id, within its tenant.
        let one = client.print_job(tenant, jobs[1].id).await.unwrap();
        assert_eq!(one.as_ref(), Some(&jobs[1]));
        assert_eq!(client.print_job(Uuid::new_v4(), jobs[1].id).await, Ok(None));
        assert_eq!(client.print_job(tenant, Uuid::new_v4()).await, Ok(None));

        // Counted over the period of their creation, both ends included, and per tenant.
        let created_at = || jobs.iter().map(|j| j.created_at);
        let (first, last) = (created_at().min().unwrap(), created_at().max().unwrap());
        let counts = client.job_counts(tenant, first, last).await.unwrap();
        assert_eq!(counts, JobCounts::from([(PrintJobStatus::Queued, 4)]));
        let before = first - chrono::TimeDelta::microseconds(1);
        assert!(
            client
                .job_counts(tenant, before - chrono::TimeDelta::days(1), before)
                .await
                .unwrap()
                .is_empty(),
            "nothing was created before"
        );
        assert!(
            client
                .job_counts(Uuid::new_v4(), first, last)
                .await
                .unwrap()
                .is_empty(),
            "tenant-scoped"
        );

        let id = created[0].id;
        let cancelled = client.cancel_print_job(tenant, id).await.unwrap();
        assert_eq!(cancelled.status, PrintJobStatus::Cancelled);
        assert_eq!(
            client.job_counts(tenant, first, last).await.unwrap(),
            JobCounts::from([(PrintJobStatus::Queued, 3), (PrintJobStatus::Cancelled, 1)])
        );
        let twice = client.cancel_print_job(tenant, id).await.unwrap();
        assert_eq!(twice.status, PrintJobStatus::Cancelled, "idempotent");
        let retried = client.retry_print_job(tenant, id).await.unwrap();
        assert_eq!(
            (retried.status, retried.attempts),
            (PrintJobStatus::Queued, 2)
        );
        let again = client.retry_print_job(tenant, id).await.unwrap();
        assert_eq!(
            (again.status, again.attempts),
            (PrintJobStatus::Queued, 2),
            "idempotent"
        );
        let unknown = client
            .cancel_print_job(tenant, Uuid::new_v4())
            .await
            .unwrap_err();
        assert_eq!(
            unknown,
            ClientError::Rejected {
                status: 404,
                message: "Print job not found".into()
            }
        );
        let elsewhere = client
            .cancel_print_job(Uuid::new_v4(), id)
            .await
            .unwrap_err();
        assert!(
            matches!(elsewhere, ClientError::Rejected { status: 404, .. }),
            "another tenant's job: 404"
        );

        // The retry queue: a job whose send never failed is not in it.
        assert!(client.failed_sends(tenant).await.unwrap().is_empty());
        for refused in [
            client.send_again(tenant, id).await,
            client.give_up_send(tenant, id).await,
        ] {
            assert_eq!(refused, Err(not_waiting()));
        }
    }

    #[tokio::test]
    async fn the_in_process_client_keeps_the_contract() {
        let app = TestApp::spawn(Role::All, crate::infra::db::Backend::Sqlite).await;
        let core = PrintCore::detached(app.ctx.db.clone());
        contract(&InProcessPrintClient::new(core)).await;
    }

    #[tokio::test]
    async fn the_http_client_keeps_the_contract() {
        let order = TestApp::spawn(Role::Order, crate::infra::db::Backend::Postgres).await;
        let config = testing::config(&order.database.url);
        let client = HttpPrintClient::new(vec![order.url("")], &config).unwrap();
        contract(&client).await;
        // The internal API wants the key.
        let response = testing::client()
            .post(order.url("/internal/print-jobs"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
}
