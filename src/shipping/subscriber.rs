//! The shipping side's reactions to orders (SPEC §6.4, §8.1): `order.ready-for-fulfillment` asks
//! for the order's shipment, `order.cancelled` cancels it. Both are idempotent by themselves (one
//! shipment per order; cancelling twice changes nothing), so a redelivered event changes nothing.
//!
//! The order's address and items come from the order service ([`OrderClient::order`]).

use std::sync::Arc;

use uuid::Uuid;

use super::ShippingCore;
use super::shipments::{Recipient, ShipmentItem, ShipmentRequest};
use crate::clients::http::ClientError;
use crate::clients::order::OrderClient;
use crate::events::bus::subscriptions::consumers::SHIPPING;
use crate::events::bus::{BusError, EventBus, HandlerError};
use crate::events::catalog::{Event, EventPayload, names};
use crate::order::internal::InternalOrder;
use crate::order::orders::{OrderStatus, state::Status};

/// Subscribes the shipping side to the order events it acts on.
pub fn subscribe(
    bus: &EventBus,
    core: ShippingCore,
    orders: Arc<dyn OrderClient>,
) -> Result<(), BusError> {
    let requester = core.clone();
    bus.subscribe(
        SHIPPING,
        names::ORDER_READY_FOR_FULFILLMENT,
        move |event: Event| {
            let (core, orders) = (requester.clone(), orders.clone());
            async move { request_shipment(&core, orders.as_ref(), &event).await }
        },
    )?;
    bus.subscribe(SHIPPING, names::ORDER_CANCELLED, move |event: Event| {
        let core = core.clone();
        async move { cancel_shipment(&core, &event).await }
    })?;
    Ok(())
}

/// `order.ready-for-fulfillment`: the order's shipment.
pub async fn request_shipment(
    core: &ShippingCore,
    orders: &dyn OrderClient,
    event: &Event,
) -> Result<(), HandlerError> {
    let EventPayload::OrderReadyForFulfillment(ready) = &event.payload else {
        return Ok(());
    };
    let Some((tenant_id, order_id)) = event.tenant_and(&ready.order_id) else {
        return Ok(());
    };
    let Some(order) = orders
        .order(tenant_id, order_id)
        .await
        .map_err(ClientError::into_handler_error)?
    else {
        tracing::warn!(%order_id, "order.ready-for-fulfillment for an order the order service does not know");
        return Ok(());
    };
    // Each event type has its queue (SPEC §8.1), so `order.cancelled` can be handled first: an
    // order that is no longer ready gets no shipment.
    if order.order.status != OrderStatus::ReadyForFulfillment {
        tracing::info!(%order_id, status = order.order.status.as_str(), "order.ready-for-fulfillment for an order no longer ready: no shipment");
        return Ok(());
    }
    let request = shipment_request(&order);
    let problems = request.problems();
    if !problems.is_empty() {
        // Kept anyway: the parcel waits with Sendcloud's refusal on it, for an operator to see.
        tracing::warn!(%order_id, ?problems, "the order's address is incomplete for a parcel");
    }
    let (_, created) = core.request(&request).await?;
    // An order is cancelled before its `order.cancelled` is sent: cancelled now, it may have been
    // handled between the read above and the shipment, and found none to cancel.
    if created
        && let Some(now) = orders
            .order(tenant_id, order_id)
            .await
            .map_err(ClientError::into_handler_error)?
        && now.order.status == OrderStatus::Cancelled
    {
        cancel_of(core, tenant_id, order_id).await?;
    }
    Ok(())
}

/// `order.cancelled`: the order's shipment, if it has one, is cancelled.
pub async fn cancel_shipment(core: &ShippingCore, event: &Event) -> Result<(), HandlerError> {
    let EventPayload::OrderCancelled(cancelled) = &event.payload else {
        return Ok(());
    };
    let Some((tenant_id, order_id)) = event.tenant_and(&cancelled.order_id) else {
        return Ok(());
    };
    cancel_of(core, tenant_id, order_id).await
}

/// Cancels the order's shipment. Handled once the cancellation is recorded: a Sendcloud that
/// cannot be reached now is asked again by the parcel sender, and its refusal (logged and kept on
/// the shipment where it was refused) is final, so neither is retried here.
async fn cancel_of(
    core: &ShippingCore,
    tenant_id: Uuid,
    order_id: Uuid,
) -> Result<(), HandlerError> {
    match core.cancel(tenant_id, order_id).await {
        Ok(_) | Err(super::CancelError::Sendcloud(_)) => Ok(()),
        Err(super::CancelError::Db(e)) => Err(e.into()),
    }
}

/// The parcel of an order: its shipping address (else its customer) and its lines.
pub fn shipment_request(order: &InternalOrder) -> ShipmentRequest {
    let order = &order.order;
    let address = order.shipping_address.clone().unwrap_or_default();
    let text = |value: Option<String>| value.unwrap_or_default();
    ShipmentRequest {
        tenant_id: order.tenant_id,
        order_id: order.id,
        order_number: order.order_number.clone(),
        recipient: Recipient {
            name: address
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| order.customer_name.clone()),
            company: address.company.clone(),
            email: order.customer_email.clone(),
            phone: address.phone.clone(),
            address1: text(address.address1),
            address2: address.address2,
            city: text(address.city),
            postal_code: text(address.zip),
            country_code: text(address.country_code),
        },
        items: order
            .line_items
            .iter()
            .map(|line| ShipmentItem {
                sku: line.sku.clone(),
                description: line.product_name.clone(),
                quantity: line.quantity,
                unit_price: line.unit_price.clone(),
            })
            .collect(),
    }
}
