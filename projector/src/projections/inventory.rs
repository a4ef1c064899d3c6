//! `inventory_view`: one document per product. Sold units are those on confirmed orders
//! not cancelled; available may go negative, so overselling shows.

use domain::events::{DomainEvent, OrderEvent, ProductEvent};
use domain::order::OrderStatus;
use read_model::ProductDoc;

use super::{Projection, date};
use crate::context::Enriched;

pub struct InventoryProjection;

fn cancels_a_sale(e: &Enriched) -> bool {
    matches!(
        e.event.event,
        DomainEvent::Order(OrderEvent::OrderCancelled(_))
    ) && e
        .before
        .as_ref()
        .is_some_and(|b| b.order.status == OrderStatus::Confirmed)
}

impl Projection for InventoryProjection {
    type Doc = ProductDoc;

    fn keys(e: &Enriched) -> Vec<String> {
        match (&e.event.event, &e.after) {
            (DomainEvent::Product(ProductEvent::StockReceived(s)), _) => {
                vec![s.product_id.to_string()]
            }
            (DomainEvent::Order(OrderEvent::OrderConfirmed), Some(after)) => after
                .order
                .items
                .iter()
                .map(|l| l.product_id.to_string())
                .collect(),
            (_, Some(after)) if cancels_a_sale(e) => after
                .order
                .items
                .iter()
                .map(|l| l.product_id.to_string())
                .collect(),
            _ => vec![],
        }
    }

    fn apply(doc: &mut ProductDoc, key: &str, e: &Enriched) {
        doc.product_id = key.to_owned();
        doc.updated_at = Some(date(e.event.recorded_at));
        let units_on_order = || {
            e.after
                .iter()
                .flat_map(|a| a.order.items.iter())
                .filter(|l| l.product_id.as_str() == key)
                .map(|l| i64::from(l.quantity))
                .sum::<i64>()
        };
        match &e.event.event {
            DomainEvent::Product(ProductEvent::StockReceived(s)) => {
                doc.received_units += i64::from(s.quantity)
            }
            DomainEvent::Order(OrderEvent::OrderConfirmed) => doc.sold_units += units_on_order(),
            _ if cancels_a_sale(e) => doc.sold_units -= units_on_order(),
            _ => {}
        }
        doc.available_units = doc.received_units - doc.sold_units;
    }
}
