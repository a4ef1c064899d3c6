//! `inventory_view`: one document per product, from the product stream alone. Reservations
//! are written in the commit that confirms an order, releases in the one that cancels it,
//! shipments in the one that ships it, so the view needs no order events for stock. Orders
//! confirmed before reservations existed wrote no product event: they count for nothing here,
//! as on the write side.

use domain::events::{DomainEvent, ProductEvent};
use read_model::ProductDoc;

use super::{Projection, Thresholds, date};
use crate::context::Enriched;

pub struct InventoryProjection;

fn product_event(e: &Enriched) -> Option<&ProductEvent> {
    match &e.event.event {
        DomainEvent::Product(p) => Some(p),
        DomainEvent::Order(_) => None,
    }
}

impl Projection for InventoryProjection {
    type Doc = ProductDoc;

    fn keys(e: &Enriched) -> Vec<String> {
        let Some(event) = product_event(e) else {
            return vec![];
        };
        let product_id = match event {
            ProductEvent::ProductDetailsSet(x) => &x.product_id,
            ProductEvent::StockReceived(x) => &x.product_id,
            ProductEvent::StockAdjusted(x) => &x.product_id,
            ProductEvent::StockReserved(x) => &x.product_id,
            ProductEvent::StockReleased(x) => &x.product_id,
            ProductEvent::StockShipped(x) => &x.product_id,
        };
        vec![product_id.to_string()]
    }

    fn apply(doc: &mut ProductDoc, key: &str, e: &Enriched, _: &Thresholds) {
        let Some(event) = product_event(e) else {
            return;
        };
        doc.product_id = key.to_owned();
        doc.updated_at = Some(date(e.event.recorded_at));
        // The product aggregate only releases or ships what an order reserved, so these
        // moves mirror its counters exactly; saturating keeps a corrupt log from panicking.
        match event {
            ProductEvent::ProductDetailsSet(x) => doc.name = Some(x.name.clone()),
            ProductEvent::StockReceived(x) => {
                doc.received_units = doc.received_units.saturating_add(i64::from(x.quantity))
            }
            ProductEvent::StockAdjusted(x) => {
                doc.received_units = doc.received_units.saturating_add(x.delta.get())
            }
            ProductEvent::StockReserved(x) => {
                doc.reserved_units = doc.reserved_units.saturating_add(i64::from(x.quantity))
            }
            ProductEvent::StockReleased(x) => {
                doc.reserved_units = doc.reserved_units.saturating_sub(i64::from(x.quantity))
            }
            ProductEvent::StockShipped(x) => {
                let q = i64::from(x.quantity);
                doc.reserved_units = doc.reserved_units.saturating_sub(q);
                doc.shipped_units = doc.shipped_units.saturating_add(q);
            }
        }
        doc.derive();
    }
}
