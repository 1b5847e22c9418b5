//! The print service (SPEC §6.4): print jobs, and the print farm on SimplyPrint. In this part of
//! the split it runs inside the order role, reached by the order side only through
//! [`crate::clients::print::PrintClient`] and the bus, and it never reads the order side's tables:
//! moving it to a process of its own is a change of `services.print_url`.

pub mod internal;
pub mod jobs;
pub mod plan;
pub mod planner;
pub mod simplyprint;
pub mod stock;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use chrono::{DateTime, Utc};
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::config::{Config, SimplyPrintConfig};
use crate::events::internal::{self as internal_events, Dispatcher, InternalEvent};
use crate::events::outbox::RelayNotifier;
use crate::identity::context::ContextVerifier;
use crate::infra::db::{Db, DbError};
use crate::order::internal::InternalKey;
use crate::order::orders::state::Status;
use jobs::repository::Removal;
use jobs::transitions::{self, ChangeError, Changed, Reporter};
use jobs::{JobCounts, PrintJob, PrintJobStatus, repository};
use plan::PrintPlan;
use simplyprint::DispatchNotifier;

/// What every entry point of the print side works with: its database, the relay to wake after
/// committing bus events, the internal event dispatcher, and the SimplyPrint sender to wake when
/// there is something to send. Cheap to clone.
#[derive(Clone)]
pub struct PrintCore {
    pub db: Db,
    pub relay: RelayNotifier,
    pub events: Dispatcher,
    pub dispatch: DispatchNotifier,
    /// SimplyPrint, when connected: a job cancelled in forma leaves its queue too.
    pub simplyprint: simplyprint::Link,
}

/// What a request to change a job found.
#[derive(Debug)]
pub enum JobChange {
    Changed(Box<Changed>),
    /// The job was in the asked status already.
    Unchanged(Box<PrintJob>),
    NotFound,
}

impl PrintCore {
    /// A core on `db` that tells no one what it does: no relay, no dispatcher, no SimplyPrint.
    /// For reading (a benchmark, a contract test) and for tests that drive each step themselves.
    pub fn detached(db: Db) -> Self {
        Self {
            db,
            relay: RelayNotifier::default(),
            events: Dispatcher::default(),
            dispatch: DispatchNotifier::default(),
            simplyprint: None,
        }
    }

    /// Creates the jobs of `plan` that do not exist yet (idempotent) and returns those created.
    pub async fn create_jobs(&self, plan: &PrintPlan) -> Result<Vec<PrintJob>, DbError> {
        let mut tx = self.db.begin().await?;
        let created = repository::insert_planned(&mut tx, plan).await?;
        tx.commit().await?;
        self.announce_created(&created).await;
        Ok(created)
    }

    /// After a commit that created jobs: wake the sender, tell the process.
    pub async fn announce_created(&self, created: &[PrintJob]) {
        if created.is_empty() {
            return;
        }
        self.dispatch.notify();
        for job in created {
            if let Some(job_ref) = job_ref(job) {
                self.events
                    .emit(InternalEvent::PrintJobCreated(job_ref))
                    .await;
            }
        }
    }

    /// Moves job `id` of `tenant_id` to `to` in a transaction of its own.
    pub async fn change(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        to: PrintJobStatus,
        reason: Option<String>,
    ) -> Result<JobChange, ChangeError> {
        self.change_where(tenant_id, id, to, reason, Reporter::Forma, |_| true)
            .await
    }

    /// [`Self::change`] as the farm reports it, made only while the job still waits on SimplyPrint's item
    /// `simplyprint_id` (queued or printing as that item), checked under the job's lock: what
    /// SimplyPrint says of an item the job has left since (cancelled, retried, sent again as
    /// another item) changes nothing. Reconciliation's news is older than its answer: without
    /// this, a job cancelled meanwhile was queued again by a farm that still listed its item.
    pub async fn change_of_item(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        simplyprint_id: &str,
        to: PrintJobStatus,
        reason: Option<String>,
    ) -> Result<JobChange, ChangeError> {
        self.change_where(tenant_id, id, to, reason, Reporter::Farm, |job| {
            job.status.is_active() && job.simply_print_job_id.as_deref() == Some(simplyprint_id)
        })
        .await
    }

    async fn change_where(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        to: PrintJobStatus,
        reason: Option<String>,
        reporter: Reporter,
        applies: impl FnOnce(&PrintJob) -> bool,
    ) -> Result<JobChange, ChangeError> {
        let mut tx = self.db.begin().await?;
        let Some(job) = repository::lock(&mut tx, tenant_id, id).await? else {
            tx.rollback().await?;
            return Ok(JobChange::NotFound);
        };
        if !applies(&job) {
            tx.rollback().await?;
            return Ok(JobChange::Unchanged(Box::new(job)));
        }
        let changed = transitions::change(&mut tx, &job, to, reason, reporter).await;
        let changed = match changed {
            Ok(changed) => changed,
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        };
        tx.commit().await?;
        Ok(match changed {
            Some(changed) => {
                self.announce_changed(&changed).await;
                JobChange::Changed(Box::new(changed))
            }
            None => JobChange::Unchanged(Box::new(job)),
        })
    }

    /// After a commit that changed a job: wake the relay (the bus events are in the outbox) and
    /// the sender (a retried job goes to the farm again), tell the process.
    pub async fn announce_changed(&self, changed: &Changed) {
        self.relay.notify();
        // Cancelled in the farm's queue: its item goes at once, or (on failure, or when it was
        // never recorded) by the sender, which tries until SimplyPrint has taken it out.
        if changed.before.status == PrintJobStatus::Queued
            && changed.after.status == PrintJobStatus::Cancelled
            && let Some(client) = &self.simplyprint
        {
            match &changed.before.simply_print_job_id {
                Some(item) => {
                    let removal = Removal {
                        id: changed.after.id,
                        item: item.clone(),
                        status: changed.after.status.as_str().to_owned(),
                        attempts: 1,
                    };
                    let taken = simplyprint::dispatch::take_out(&self.db, client, &removal);
                    if let Err(e) = taken.await {
                        tracing::warn!(job = %removal.id, error = %e, "could not record a farm item's removal; the sender tries again");
                    }
                }
                None => self.dispatch.notify(),
            }
        }
        if changed.after.status == PrintJobStatus::Queued {
            self.dispatch.notify();
        }
        let Some(job) = job_ref(&changed.after) else {
            return;
        };
        let status_changed =
            InternalEvent::PrintJobStatusChanged(internal_events::PrintJobStatusChanged {
                job,
                previous_status: changed.before.status.name().to_owned(),
                new_status: changed.after.status.name().to_owned(),
            });
        self.events.emit(status_changed).await;
        let specific = match changed.after.status {
            PrintJobStatus::Completed => Some(InternalEvent::PrintJobCompleted(job)),
            PrintJobStatus::Failed => Some(InternalEvent::PrintJobFailed(
                internal_events::PrintJobFailed {
                    job,
                    error_message: changed.after.error_message.clone().unwrap_or_default(),
                },
            )),
            PrintJobStatus::Cancelled => Some(InternalEvent::PrintJobCancelled(job)),
            PrintJobStatus::Queued if changed.before.status != PrintJobStatus::Queued => {
                Some(InternalEvent::PrintJobRetryRequested(job))
            }
            _ => None,
        };
        if let Some(event) = specific {
            self.events.emit(event).await;
        }
    }

    pub async fn jobs_of_order(
        &self,
        tenant_id: Uuid,
        order_id: Uuid,
    ) -> Result<Vec<PrintJob>, DbError> {
        repository::of_order(&self.db, tenant_id, order_id).await
    }

    /// One job of the tenant; `None` when it has none by that id.
    pub async fn job(&self, tenant_id: Uuid, id: Uuid) -> Result<Option<PrintJob>, DbError> {
        repository::find(&self.db, tenant_id, id).await
    }

    /// How many of the tenant's jobs created in `from..=to` are in each status.
    pub async fn job_counts(
        &self,
        tenant_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<JobCounts, DbError> {
        repository::counts_by_status(&self.db, tenant_id, from, to).await
    }
}

/// The internal events' reference to a job of an order; `None` for a stock job.
fn job_ref(job: &PrintJob) -> Option<internal_events::PrintJobRef> {
    Some(internal_events::PrintJobRef {
        tenant_id: job.tenant_id,
        print_job_id: job.id,
        order_id: job.order_id?,
        line_item_id: job.line_item_id?,
    })
}

/// The print service's router state: what its handlers use, and nothing else of the process.
#[derive(Clone)]
pub struct PrintState {
    pub core: PrintCore,
    /// `simplyprint.*`: the webhook's token.
    pub simplyprint: Arc<SimplyPrintConfig>,
    pub users: ContextVerifier,
    pub internal_key: InternalKey,
}

impl PrintState {
    /// The state of `core`'s routes, with what they read of `config` taken once.
    pub fn new(core: PrintCore, config: &Config) -> Self {
        Self {
            core,
            simplyprint: Arc::new(config.simplyprint.clone()),
            users: ContextVerifier::from_config(config),
            internal_key: InternalKey::from_config(config),
        }
    }
}

impl FromRef<PrintState> for ContextVerifier {
    fn from_ref(state: &PrintState) -> Self {
        state.users.clone()
    }
}

impl FromRef<PrintState> for InternalKey {
    fn from_ref(state: &PrintState) -> Self {
        state.internal_key.clone()
    }
}

/// The print service's public API (under `/api/v1`), as documented in the OpenAPI document.
pub fn api_routes() -> OpenApiRouter<PrintState> {
    OpenApiRouter::new()
        .merge(jobs::routes::routes())
        .merge(simplyprint::webhook::routes())
}

/// The print service's API as the gateway reaches it.
pub fn router(state: PrintState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    api.with_state(state)
}

/// The print service's internal API (SPEC §7): what the order service calls when split.
pub fn internal_router(state: PrintState) -> Router {
    internal::routes().with_state(state)
}
