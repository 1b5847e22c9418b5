//! The one place that decides what each role runs (SPEC §1): which routers are mounted and which
//! implementation stands behind each service client.
//!
//! | role | mounts |
//! | --- | --- |
//! | `all` | the gateway, reaching the order service in-process |
//! | `gateway` | the gateway, reaching the order service over HTTP |
//! | `order` | the order service and its internal API |

use std::sync::Arc;

use axum::Router;
use clap::ValueEnum;

use crate::app::AppContext;
use crate::clients::order::{HttpOrderClient, InProcessOrderClient, OrderClient};
use crate::events::outbox::{OutboxRelay, RelaySettings};
use crate::events::publish::EventPublisher;
use crate::gateway::GatewayState;
use crate::order::OrderState;
use crate::{gateway, http, openapi, order};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Gateway and order service in one process, on one port.
    All,
    /// The API gateway.
    Gateway,
    /// The order service.
    Order,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Gateway => "gateway",
            Role::Order => "order",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Role::All | Role::Gateway => 3000,
            Role::Order => 3001,
        }
    }
}

/// Builds the complete HTTP application of `role`, wrapped in the shared HTTP stack.
pub fn router(role: Role, ctx: Arc<AppContext>) -> anyhow::Result<Router> {
    let app = match role {
        Role::Order => {
            start_order_workers(&ctx)?;
            order::service_router(OrderState::new(ctx.clone()))
        }
        Role::Gateway => {
            let order: Arc<dyn OrderClient> =
                Arc::new(HttpOrderClient::new(ctx.config.order_urls(), &ctx.config)?);
            gateway::router(GatewayState::new(ctx.clone(), order, None)?)
        }
        Role::All => {
            start_order_workers(&ctx)?;
            let state = OrderState::new(ctx.clone());
            let order: Arc<dyn OrderClient> = Arc::new(InProcessOrderClient::new(state.clone()));
            let in_process = order::router(state);
            gateway::router(GatewayState::new(ctx.clone(), order, Some(in_process))?)
        }
    };
    Ok(http::stack(app.merge(openapi::docs_router()), &ctx.config))
}

/// The order service's background work: the event bus's workers and upkeep, and the outbox relay
/// that hands committed events to the bus. Without a bus, events wait in the outbox.
fn start_order_workers(ctx: &Arc<AppContext>) -> anyhow::Result<()> {
    if let Some(bus) = ctx.bus() {
        bus.start(&ctx.workers)?;
        bus.spawn_upkeep(&ctx.workers);
        let publisher: Arc<dyn EventPublisher> = bus.clone();
        OutboxRelay::new(ctx.db.clone(), publisher, RelaySettings::default()).spawn(&ctx.workers);
    }
    Ok(())
}
