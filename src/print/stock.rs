//! Stock print jobs (SPEC §6.5b): the order service's replenishment scheduler announces each job
//! it wants with `inventory.stock-replenishment-scheduled`; the print side creates it, with the id
//! the order service chose (so a redelivery, or two replicas hearing it, create it once), and sends
//! it to SimplyPrint like any job, after the order jobs waiting (the dispatch's order).
//!
//! What to print comes from the order service ([`OrderClient::stock_job`]), which owns the product
//! mappings.

use super::PrintCore;
use super::jobs::repository;
use crate::clients::http::ClientError;
use crate::clients::order::OrderClient;
use crate::events::bus::HandlerError;
use crate::events::catalog::{Event, EventPayload};
use crate::events::idempotency::handle_once_returning;

/// The consumer name of the dedupe records.
pub const CONSUMER: &str = "print.stock";

/// `inventory.stock-replenishment-scheduled`: the stock job, created once.
pub async fn create_stock_job(
    core: &PrintCore,
    orders: &dyn OrderClient,
    event: &Event,
) -> Result<(), HandlerError> {
    let EventPayload::StockReplenishmentScheduled(scheduled) = &event.payload else {
        return Ok(());
    };
    let Some((tenant_id, job_id)) = event.tenant_and(&scheduled.print_job_id) else {
        return Ok(());
    };
    // Read before the transaction: a call to another service never holds a write lock.
    let Some(plan) = orders
        .stock_job(tenant_id, job_id)
        .await
        .map_err(ClientError::into_handler_error)?
    else {
        tracing::warn!(job = %job_id, "a stock job the order service does not know; ignored");
        return Ok(());
    };
    let created = handle_once_returning(&core.db, event, CONSUMER, |tx| {
        Box::pin(async move { Ok::<_, HandlerError>(repository::insert_stock(tx, &plan).await?) })
    })
    .await?;
    core.announce_created(&created.flatten().into_iter().collect::<Vec<_>>())
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;
    use uuid::Uuid;

    use super::repository;
    use crate::config::Config;
    use crate::each_database;
    use crate::order::flow_tests::integrations;
    use crate::order::inventory::StockJobPlan;
    use crate::order::mappings::PrintFile;
    use crate::print::plan::{PlannedLine, PrintPlan};
    use crate::print::simplyprint::{SimplyPrint, dispatch};
    use crate::simulators::simplyprint::SimplyPrintSim;
    use crate::testing::{TestDatabase, config};

    each_database! {
        async fn order_jobs_go_to_the_farm_before_stock_jobs_waiting_longer(backend: Backend) {
            let stop = CancellationToken::new();
            let _guard = stop.clone().drop_guard();
            let farm = SimplyPrintSim::start("4242", "simplyprint-api-key-for-tests", stop)
                .await
                .unwrap();
            let database = TestDatabase::create(backend).await;
            let db = crate::infra::db::Db::connect(&database.url, 5).await.unwrap();
            db.migrate().await.unwrap();
            let tenant = Uuid::new_v4();
            // Twelve stock jobs wait; then an order job arrives. One pass sends ten jobs.
            let mut tx = db.begin().await.unwrap();
            for _ in 0..12 {
                let plan = StockJobPlan {
                    tenant_id: tenant,
                    print_job_id: Uuid::now_v7(),
                    stock_batch_id: Uuid::now_v7(),
                    file_id: "f-stock".into(),
                    file_name: "stock.gcode".into(),
                    print_profile: None,
                };
                assert!(repository::insert_stock(&mut tx, &plan).await.unwrap().is_some());
                // The same job again creates nothing.
                assert!(repository::insert_stock(&mut tx, &plan).await.unwrap().is_none());
            }
            let plan = PrintPlan {
                tenant_id: tenant,
                order_id: Uuid::new_v4(),
                lines: vec![PlannedLine {
                    line_item_id: Uuid::new_v4(),
                    generation: 1,
                    quantity: 1,
                    print_files: vec![PrintFile {
                        file_id: "f-order".into(),
                        file_name: "order.gcode".into(),
                        quantity: 1,
                        units_per_print: 1,
                        print_profile: None,
                    }],
                }],
            };
            let order_jobs = repository::insert_planned(&mut tx, &plan).await.unwrap();
            tx.commit().await.unwrap();

            let mut settings: Config = config(&database.url);
            integrations(&mut settings, Some(&farm));
            let client = SimplyPrint::from_config(&settings).unwrap().unwrap();
            assert_eq!(dispatch::pass(&db, &client).await.unwrap(), 10);
            let sent = farm.items();
            assert_eq!(sent.len(), 10);
            assert!(
                sent.iter().any(|i| i.note == order_jobs[0].id.to_string()),
                "the order job is among the first sent: {sent:?}"
            );
            assert_eq!(sent.iter().filter(|i| i.file_id == "f-stock").count(), 9);

            // A job cancelled in the farm's queue: the next pass sends the rest and takes the
            // cancelled job's item out.
            let core = crate::print::PrintCore::detached(db.clone());
            let cancelled = core
                .change(tenant, order_jobs[0].id, crate::print::jobs::PrintJobStatus::Cancelled, None)
                .await
                .unwrap();
            assert!(matches!(cancelled, crate::print::JobChange::Changed(_)));
            assert_eq!(dispatch::pass(&db, &client).await.unwrap(), 3 + 1);
            let items = farm.items();
            let order_item = items.iter().find(|i| i.note == order_jobs[0].id.to_string());
            assert_eq!(order_item.map(|i| i.status.as_str()), Some("removed"));
            assert_eq!(dispatch::pass(&db, &client).await.unwrap(), 0);
            db.close().await;
        }
    }
}
