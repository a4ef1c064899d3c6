//! Pure property: folding from a serialised snapshot plus the tail equals folding everything.

use domain::events::{LineItem, OrderEvent};
use domain::order::{self, OrderCommand, OrderState};
use domain::{Currency, OrderId, Quantity, UnitPriceCents};
use proptest::prelude::*;

fn line(product: &str, qty: i64, price: i64) -> LineItem {
    LineItem {
        product_id: product.parse().unwrap(),
        quantity: Quantity::try_from(qty).unwrap(),
        unit_price_cents: UnitPriceCents::try_from(price).unwrap(),
    }
}

fn command() -> impl Strategy<Value = OrderCommand> {
    let product = prop::sample::select(vec!["p1", "p2", "p3"]);
    prop_oneof![
        6 => (product.clone(), 1i64..20, prop::sample::select(vec![0i64, 99, 100_000_000]))
            .prop_map(|(p, q, c)| OrderCommand::AddItem(line(p, q, c))),
        3 => product.prop_map(|p| OrderCommand::RemoveItem(p.parse().unwrap())),
        1 => Just(OrderCommand::Confirm { payment_method: "pm_card_visa".into(), email: Some("a@b.example".into()) }),
        1 => Just(OrderCommand::CapturePayment { payment_intent_id: "pi_1".into(), amount_cents: 1, currency: Currency::USD }),
        1 => Just(OrderCommand::DeclinePayment { code: "card_declined".into(), decline_code: None, message: "no".into() }),
        1 => Just(OrderCommand::RefundPayment { refund_id: "re_1".into(), amount_cents: 1, currency: Currency::USD }),
        1 => Just(OrderCommand::Cancel { reason: None }),
        1 => Just(OrderCommand::Ship { carrier: "c".into(), tracking_number: "t".into() }),
        1 => Just(OrderCommand::Deliver),
    ]
}

proptest! {
    #[test]
    fn snapshot_round_trip_then_tail_equals_full_replay(commands in prop::collection::vec(command(), 0..60), cut in 0usize..61) {
        let mut state = OrderState::New;
        let mut events: Vec<OrderEvent> = vec![];
        let create = OrderCommand::Create {
            order_id: OrderId::new(),
            user_id: "u".parse().unwrap(),
            currency: Currency::USD,
            items: vec![line("p0", 1, 1)],
        };
        for cmd in std::iter::once(create).chain(commands) {
            if let Ok(new) = order::decide(&state, cmd) {
                for e in new {
                    state = state.apply(&e);
                    events.push(e);
                }
            }
        }
        let cut = cut.min(events.len());
        let prefix = events[..cut].iter().fold(OrderState::New, |s, e| s.apply(e));
        let snapshot: OrderState = serde_json::from_value(serde_json::to_value(&prefix).unwrap()).unwrap();
        let resumed = events[cut..].iter().fold(snapshot, |s, e| s.apply(e));
        prop_assert_eq!(resumed, state);
    }
}
