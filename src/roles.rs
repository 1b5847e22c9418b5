//! The one place that decides what each role runs (SPEC §1): which routers are mounted, which
//! implementation stands behind each service client, and which background work starts.
//!
//! | role | mounts |
//! | --- | --- |
//! | `all` | the gateway, reaching the order service (and print, inside it) in-process |
//! | `gateway` | the gateway, reaching the order service over HTTP |
//! | `order` | the order service, the print and shipping services while `services.print_url` / `services.shipping_url` are unset, and their internal APIs |

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::app::{AppContext, BusHandle, Readiness};
use crate::clients::order::{HttpOrderClient, InProcessOrderClient, OrderClient};
use crate::clients::print::{HttpPrintClient, InProcessPrintClient, PrintClient};
use crate::clients::shipping::{HttpShippingClient, InProcessShippingClient, ShippingClient};
use crate::config::Role;
use crate::events::idempotency;
use crate::events::internal::Dispatcher;
use crate::events::outbox::{OutboxRelay, RelayNotifier, RelaySettings};
use crate::events::publish::EventPublisher;
use crate::gateway::{GatewayPorts, GatewayState};
use crate::infra::workers::Wakeup;
use crate::order::fulfillment::{self, Fulfiller};
use crate::order::{OrderCore, OrderState, orchestration};
use crate::print::simplyprint::{self, DispatchNotifier, SimplyPrint};
use crate::print::{PrintCore, PrintState, planner};
use crate::shipping::sendcloud::Sendcloud;
use crate::shipping::{ShippingCore, ShippingState};
use crate::{gateway, http, identity, openapi, order, print, shipping};

/// What a role serves: its HTTP application, and what must be closed as soon as shutdown begins.
pub struct App {
    /// The role's router inside the shared conventions.
    pub router: http::Stacked,
    /// The Socket.IO server of the order service, when the role runs it: its idle long-polls
    /// would otherwise hold graceful shutdown for up to the ping interval.
    pub realtime: Option<order::realtime::Realtime>,
}

/// Builds the complete HTTP application of `role`, wrapped in the shared HTTP stack.
pub fn router(role: Role, ctx: Arc<AppContext>) -> anyhow::Result<http::Stacked> {
    app(role, ctx).map(|app| app.router)
}

/// [`router`], with what the server closes when shutdown begins.
pub fn app(role: Role, ctx: Arc<AppContext>) -> anyhow::Result<App> {
    let (app, realtime) = match role {
        Role::Order => {
            let services = OrderServices::start(&ctx)?;
            let router = services.api().merge(services.internal());
            (router, Some(services.realtime))
        }
        Role::Gateway => {
            // A lone gateway only reads the bus (the queue dashboard); it still opens it late.
            ctx.when_bus_ready(|_| Ok(()))?;
            let order: Arc<dyn OrderClient> =
                Arc::new(HttpOrderClient::new(ctx.config.order_urls(), &ctx.config)?);
            (
                gateway::router(GatewayState::new(gateway_ports(&ctx), order, None)?),
                None,
            )
        }
        Role::All => {
            let services = OrderServices::start(&ctx)?;
            let order: Arc<dyn OrderClient> = Arc::new(InProcessOrderClient::of(&ctx));
            let router = gateway::router(GatewayState::new(
                gateway_ports(&ctx),
                order,
                Some(services.api()),
            )?);
            (router, Some(services.realtime))
        }
    };
    Ok(App {
        router: http::stack(app.merge(openapi::docs_router()), &ctx.config),
        realtime,
    })
}

/// The gateway's share of the process: its configuration and ports.
pub(crate) fn gateway_ports(ctx: &Arc<AppContext>) -> GatewayPorts {
    GatewayPorts {
        config: ctx.config.clone(),
        db: ctx.db.clone(),
        redis: ctx.redis.clone(),
        workers: ctx.workers.clone(),
        readiness: Readiness::of(ctx),
        bus: BusHandle::of(ctx),
    }
}

/// How often the idempotency records past their retention are deleted.
const DEDUPE_CLEANUP_EVERY: Duration = Duration::from_secs(60 * 60);
/// How often Sendcloud is asked about parcels whose webhook may have been missed.
const SENDCLOUD_RECONCILE_EVERY: Duration = Duration::from_secs(5 * 60);
/// How often SimplyPrint is asked about jobs whose webhook may have been missed, by default.
const RECONCILE_EVERY: Duration = Duration::from_secs(60);

/// What the order role runs: the order service and, while `services.print_url` and
/// `services.shipping_url` are unset, the print and shipping services, wired to each other
/// (in-process clients), to the bus, to SimplyPrint and to Sendcloud.
struct OrderServices {
    order: OrderState,
    /// `None` when the print service runs elsewhere.
    print: Option<PrintState>,
    /// `None` when the shipping service runs elsewhere.
    shipping: Option<ShippingState>,
    /// Socket.IO (`/socket.io`, SPEC §6.6), fed by the internal events.
    realtime: order::realtime::Realtime,
}

impl OrderServices {
    fn start(ctx: &Arc<AppContext>) -> anyhow::Result<Self> {
        let events = Dispatcher::new();
        // Handed out now; the relay it wakes starts with the bus, which may be later.
        let relay_notifier = RelayNotifier::default();

        let print_urls = &ctx.config.services.print_url;
        let (print_client, print): (Arc<dyn PrintClient>, Option<PrintState>) =
            if print_urls.is_empty() {
                let core = PrintCore {
                    db: ctx.db.clone(),
                    relay: relay_notifier.clone(),
                    events: events.clone(),
                    dispatch: DispatchNotifier::default(),
                    simplyprint: SimplyPrint::from_config(&ctx.config)?.map(Arc::new),
                };
                let state = PrintState::new(core.clone(), &ctx.config);
                (Arc::new(InProcessPrintClient::new(core)), Some(state))
            } else {
                let client = HttpPrintClient::new(print_urls.0.clone(), &ctx.config)?;
                (Arc::new(client), None)
            };
        let shipping_urls = &ctx.config.services.shipping_url;
        let (shipping_client, shipping): (Arc<dyn ShippingClient>, Option<ShippingState>) =
            if shipping_urls.is_empty() {
                let core = ShippingCore {
                    db: ctx.db.clone(),
                    relay: relay_notifier.clone(),
                    events: events.clone(),
                    parcels: Wakeup::default(),
                    sendcloud: Sendcloud::from_config(&ctx.config)?.map(Arc::new),
                };
                let state = ShippingState::new(core.clone(), &ctx.config);
                (Arc::new(InProcessShippingClient::new(core)), Some(state))
            } else {
                let client = HttpShippingClient::new(shipping_urls.0.clone(), &ctx.config)?;
                (Arc::new(client), None)
            };
        let order_core = OrderCore {
            db: ctx.db.clone(),
            relay: relay_notifier.clone(),
            events,
            print: print_client,
            shipping: shipping_client,
            fulfillments: Wakeup::default(),
            emails: Wakeup::default(),
        };

        // The bus's subscribers, workers and relay start together, when the bus runs: at once, or
        // once its storage answers (events wait in the outbox meanwhile).
        let (wiring_ctx, core, print_core, shipping_core) = (
            ctx.clone(),
            order_core.clone(),
            print.as_ref().map(|p| p.core.clone()),
            shipping.as_ref().map(|s| s.core.clone()),
        );
        let notifier = relay_notifier.clone();
        match Fulfiller::from_config(&ctx.config)?.map(Arc::new) {
            Some(fulfiller) => fulfillment::sender::spawn(
                &ctx.workers,
                order_core.clone(),
                fulfiller,
                order_core.fulfillments.clone(),
            ),
            None => tracing::info!(
                "Shopify fulfillment is disconnected (shopify.shop_domain and shopify.access_token, or installed shops with shopify.token_key): shipped orders stay SHIPPED"
            ),
        }
        order::notifications::start(&ctx.workers, &ctx.config.smtp, &order_core)?;
        order::notifications::push::start(ctx, &order_core)?;
        ctx.when_bus_ready(move |bus| {
            let ctx = wiring_ctx;
            orchestration::subscribe(&bus, core.clone())?;
            fulfillment::subscribe(&bus, core)?;
            if let Some(print_core) = print_core {
                let orders: Arc<dyn OrderClient> = Arc::new(InProcessOrderClient::of(&ctx));
                planner::subscribe(&bus, print_core, orders)?;
            }
            if let Some(shipping_core) = shipping_core {
                let orders: Arc<dyn OrderClient> = Arc::new(InProcessOrderClient::of(&ctx));
                shipping::subscriber::subscribe(&bus, shipping_core, orders)?;
            }
            bus.start(&ctx.workers)?;
            bus.spawn_upkeep(&ctx.workers);
            let publisher: Arc<dyn EventPublisher> = bus;
            OutboxRelay::new(ctx.db.clone(), publisher, RelaySettings::default())
                .with_notifier(notifier)
                .spawn(&ctx.workers);
            Ok(())
        })?;
        // Every record that only guards against repeats is kept while repeats can come, no longer.
        idempotency::spawn_cleanup(ctx.db.clone(), &ctx.workers, DEDUPE_CLEANUP_EVERY);
        order::inventory::scheduler::spawn(&ctx.workers, order_core.clone(), &ctx.config);
        order::orders::replanning::spawn(&ctx.workers, order_core.clone());
        let db = ctx.db.clone();
        ctx.workers.every(
            "shopify-delivery-retention",
            DEDUPE_CLEANUP_EVERY,
            move || {
                let db = db.clone();
                async move {
                    order::shopify::forget_old_deliveries(&db)
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
            },
        );
        if print.is_some() {
            let db = ctx.db.clone();
            ctx.workers.every(
                "simplyprint-delivery-retention",
                DEDUPE_CLEANUP_EVERY,
                move || {
                    let db = db.clone();
                    async move {
                        simplyprint::webhook::forget_old_deliveries(&db)
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string())
                    }
                },
            );
        }
        if let Some(print) = &print {
            match &print.core.simplyprint {
                Some(client) => {
                    simplyprint::dispatch::spawn(
                        &ctx.workers,
                        ctx.db.clone(),
                        client.clone(),
                        print.core.dispatch.clone(),
                    );
                    let every = ctx
                        .config
                        .simplyprint
                        .reconcile_secs
                        .map_or(RECONCILE_EVERY, Duration::from_secs);
                    simplyprint::reconcile::spawn(
                        &ctx.workers,
                        print.core.clone(),
                        client.clone(),
                        every,
                    );
                }
                None => tracing::info!(
                    "SimplyPrint is disconnected (simplyprint.api_key, simplyprint.company_id): print jobs wait QUEUED"
                ),
            }
        }
        if let Some(shipping) = &shipping {
            match &shipping.core.sendcloud {
                Some(client) => {
                    shipping::parcels::spawn(
                        &ctx.workers,
                        shipping.core.clone(),
                        client.clone(),
                        shipping.core.parcels.clone(),
                    );
                    let (core, client) = (shipping.core.clone(), client.clone());
                    ctx.workers.every(
                        "sendcloud-reconcile",
                        SENDCLOUD_RECONCILE_EVERY,
                        move || {
                            let (core, client) = (core.clone(), client.clone());
                            async move {
                                shipping::reconcile::pass(&core, &client)
                                    .await
                                    .map(drop)
                                    .map_err(|e| e.to_string())
                            }
                        },
                    );
                }
                None => tracing::info!(
                    "Sendcloud is disconnected (sendcloud.public_key, sendcloud.secret_key): shipments wait PENDING"
                ),
            }
        }
        let realtime = order::realtime::Realtime::start(ctx, &order_core)?;
        Ok(Self {
            order: OrderState::new(
                order_core,
                &ctx.config,
                ctx.workers.clone(),
                Readiness::of(ctx),
            ),
            print,
            shipping,
            realtime,
        })
    }

    /// The public API of the services this role runs, as the gateway reaches it.
    fn api(&self) -> Router {
        let mut api = order::router(self.order.clone());
        if let Some(print) = &self.print {
            api = api.merge(print::router(print.clone()));
        }
        if let Some(shipping) = &self.shipping {
            api = api.merge(shipping::router(shipping.clone()));
        }
        services_router(api.merge(self.realtime.router()))
    }

    /// Their internal APIs (SPEC §7): the order role's own port only, never role `all`.
    fn internal(&self) -> Router {
        let mut internal = order::internal_router(self.order.clone());
        if let Some(print) = &self.print {
            internal = internal.merge(print::internal_router(print.clone()));
        }
        if let Some(shipping) = &self.shipping {
            internal = internal.merge(shipping::internal_router(shipping.clone()));
        }
        internal
    }
}

/// What every service router shares: a §4 404 for unknown paths, and a signed user context checked
/// against the body it came with before any handler runs.
fn services_router(api: Router) -> Router {
    api.fallback(http::error::not_found)
        .layer(axum::middleware::from_fn(
            identity::context::verify_body_digest,
        ))
}
