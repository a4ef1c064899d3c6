//! The views, their names, and the collections their generations live in.

/// A view the projector maintains. Its name is the projection's name, the `_id` of its
/// pointer, and the prefix of its generations' collections (`orders_view_g3`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    strum::Display,
)]
pub enum View {
    /// One document per order: [`crate::OrderDoc`].
    #[strum(serialize = "orders_view")]
    Orders,
    /// One document per user: [`crate::UserDoc`].
    #[strum(serialize = "users_orders_view")]
    Users,
    /// One document per UTC day: [`crate::DayDoc`].
    #[strum(serialize = "daily_sales")]
    DailySales,
    /// One document per product: [`crate::ProductDoc`].
    #[strum(serialize = "inventory_view")]
    Inventory,
    /// One document per event-time minute and hour: [`crate::SalesWindowDoc`].
    #[strum(serialize = "sales_by_minute")]
    SalesByMinute,
    /// One document per alert subject: [`crate::AlertsDoc`].
    #[strum(serialize = "alerts")]
    Alerts,
}

impl View {
    pub const ALL: &'static [View] = <View as strum::VariantArray>::VARIANTS;

    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The collection that holds `generation` of this view.
    pub fn collection(self, generation: i64) -> String {
        format!("{}_g{generation}", self.name())
    }

    /// `_id` of the checkpoint of `generation` of this view.
    pub fn checkpoint_id(self, generation: i64) -> String {
        self.collection(generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_collections_carry_the_generation() {
        for &v in View::ALL {
            assert_eq!(v.name().parse::<View>().unwrap(), v);
        }
        assert_eq!(View::ALL.len(), 6);
        assert_eq!(View::Orders.collection(3), "orders_view_g3");
        assert!("orders".parse::<View>().is_err());
    }
}
