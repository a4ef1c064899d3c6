//! Query parameters: whitelisted per endpoint and each parsed to a type, so client input
//! only ever reaches MongoDB as a typed value inside a filter we build, never as an operator
//! (`userId[$ne]=x` is an unknown parameter, `userId={"$gt":""}` an invalid id: both 422).

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use domain::{OrderId, ProductId, UserId};
use mongodb::bson::{self, Bson, Document, doc};
use serde::Serialize;
use service_kit::api_error::ApiError;
use service_kit::auth::{Caller, forbidden};
use utoipa::{IntoParams, ToSchema};

use crate::cursor::{Cursor, Signer};
use crate::model::{AlertStatus, OrderStatus, WindowKind};
use read_model::OrderDoc;
use strum::VariantArray;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;
/// Longest `/sales/daily` range, in days.
pub const MAX_DAYS: i64 = 366;
/// The years a time or day may name (UTC). MongoDB's dates reach further, but RFC 3339,
/// `YYYY-MM-DD` and some servers (nx-27017 answers an error) do not.
pub const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;
/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z in milliseconds: the times a view
/// document, a bound or a cursor may hold.
pub const MIN_MILLIS: i64 = -62_135_596_800_000;
pub const MAX_MILLIS: i64 = 253_402_300_799_999;

/// The raw parameters of one request, checked against the endpoint's list.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// A parameter name as the client sent it, cut short for error bodies.
fn shown(name: &str) -> String {
    name.chars().take(64).collect()
}

impl Params {
    /// Refuses unknown and repeated parameters (422 naming them).
    pub fn new(pairs: Vec<(String, String)>, allowed: &[&str]) -> Result<Self, ApiError> {
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                let accepted = if allowed.is_empty() {
                    "this endpoint takes no query parameters".to_owned()
                } else {
                    format!("this endpoint accepts {}", allowed.join(", "))
                };
                return Err(ApiError::invalid(
                    &shown(name),
                    format!("unknown query parameter `{}`: {accepted}", shown(name)),
                ));
            }
            if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(ApiError::invalid(
                    name,
                    format!("`{name}` is given more than once"),
                ));
            }
        }
        Ok(Self { pairs })
    }

    fn raw(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The parameter parsed by `parse`; a refusal is a 422 naming it.
    pub fn get<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ApiError> {
        self.raw(name)
            .map(|v| parse(v).map_err(|why| ApiError::invalid(name, format!("{name}: {why}"))))
            .transpose()
    }

    pub fn required<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ApiError> {
        self.get(name, parse)?
            .ok_or_else(|| ApiError::invalid(name, format!("{name} is required")))
    }

    /// `limit`: 1..=100, default 20.
    pub fn limit(&self) -> Result<i64, ApiError> {
        self.limit_within(DEFAULT_LIMIT, MAX_LIMIT)
    }

    /// `limit`: 1..=`max`, default `default`.
    pub fn limit_within(&self, default: i64, max: i64) -> Result<i64, ApiError> {
        Ok(self
            .get("limit", |v| match v.parse::<i64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(format!("must be an integer from 1 to {max}")),
            })?
            .unwrap_or(default))
    }

    /// `cursor`, issued by `signer` for `scope`, with a key and id `valid` accepts; any
    /// other is a 400.
    pub fn cursor(
        &self,
        signer: &Signer,
        scope: &str,
        valid: impl Fn(i64, &str) -> bool,
    ) -> Result<Option<Cursor>, ApiError> {
        self.raw("cursor")
            .map(|c| signer.decode(c, scope, valid))
            .transpose()
    }
}

pub fn user_id(v: &str) -> Result<UserId, String> {
    v.parse()
        .map_err(|e: domain::ids::InvalidValue| e.to_string())
}

pub fn product_id(v: &str) -> Result<ProductId, String> {
    v.parse()
        .map_err(|e: domain::ids::InvalidValue| e.to_string())
}

/// The pattern of an order id as the API writes it: a hyphenated UUID.
pub const ORDER_ID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// An order id, exactly as [`ORDER_ID_PATTERN`] says (the `uuid` crate alone would also
/// take 32 bare hex digits, braces or a `urn:uuid:` prefix).
pub fn order_id(v: &str) -> Result<OrderId, String> {
    let hyphenated = v.len() == 36
        && v.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    hyphenated
        .then(|| v.parse().ok())
        .flatten()
        .ok_or_else(|| "must be a UUID as 8-4-4-4-12 hex digits".into())
}

pub fn is_order_id(v: &str) -> bool {
    order_id(v).is_ok()
}

pub fn is_product_id(v: &str) -> bool {
    v.parse::<ProductId>().is_ok()
}

/// Whether `ms` is a time of years 1 to 9999.
pub fn is_millis(ms: i64) -> bool {
    (MIN_MILLIS..=MAX_MILLIS).contains(&ms)
}

/// A cursor key and id of a listing by creation time.
pub fn is_time_and_order_id(key: i64, id: &str) -> bool {
    is_millis(key) && is_order_id(id)
}

/// Why a day was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadDate {
    /// Not `YYYY-MM-DD`, or no such day.
    Malformed(String),
    /// A real day, outside years 1 to 9999.
    OutOfRange(String),
}

/// A UTC day, exactly `YYYY-MM-DD`, of years 1 to 9999.
pub fn day(v: &str) -> Result<NaiveDate, BadDate> {
    let well_formed = v.len() == 10
        && v.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let day = well_formed
        .then(|| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| BadDate::Malformed("must be a date as YYYY-MM-DD".into()))?;
    if !YEARS.contains(&day.year()) {
        return Err(BadDate::OutOfRange(
            "must be a day from 0001-01-01 to 9999-12-31".into(),
        ));
    }
    Ok(day)
}

/// [`day`] for a query parameter: every refusal is a 422.
pub fn date(v: &str) -> Result<NaiveDate, String> {
    day(v).map_err(|(BadDate::Malformed(why) | BadDate::OutOfRange(why))| why)
}

/// An RFC 3339 time with an offset (encode `+` as `%2B` in a URL), of years 1 to 9999 in UTC.
pub fn time(v: &str) -> Result<DateTime<Utc>, String> {
    let t = DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| String::from("must be an RFC 3339 time, e.g. 2026-11-26T00:00:00Z"))?;
    if !YEARS.contains(&t.year()) {
        return Err(
            "must be a time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z (in UTC)".into(),
        );
    }
    Ok(t)
}

pub fn cents(v: &str) -> Result<i64, String> {
    match v.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err("must be a non-negative integer (cents)".into()),
    }
}

pub fn integer(v: &str) -> Result<i64, String> {
    v.parse().map_err(|_| "must be an integer".into())
}

/// The page after `(key, id)` in the order of `sort {field: dir, _id: dir}`: a keyset on
/// the sort field with the id as tie-breaker, so pages stay stable while data changes.
pub fn after(field: &str, descending: bool, key: Bson, id: &str) -> Bson {
    let op = if descending { "$lt" } else { "$gt" };
    Bson::Array(vec![
        Bson::Document(doc! {field: {op: key.clone()}}),
        Bson::Document(doc! {field: key, "_id": {op: id}}),
    ])
}

/// How search results are ordered; always with the order id as tie-breaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub enum OrderSort {
    #[serde(rename = "createdAt")]
    CreatedAt,
    #[default]
    #[serde(rename = "-createdAt")]
    CreatedAtDesc,
    #[serde(rename = "totalCents")]
    TotalCents,
    #[serde(rename = "-totalCents")]
    TotalCentsDesc,
}

impl OrderSort {
    const ALL: [OrderSort; 4] = [
        OrderSort::CreatedAt,
        OrderSort::CreatedAtDesc,
        OrderSort::TotalCents,
        OrderSort::TotalCentsDesc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderSort::CreatedAt => "createdAt",
            OrderSort::CreatedAtDesc => "-createdAt",
            OrderSort::TotalCents => "totalCents",
            OrderSort::TotalCentsDesc => "-totalCents",
        }
    }

    fn parse(v: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == v)
            .ok_or_else(|| "must be one of createdAt, -createdAt, totalCents, -totalCents".into())
    }

    fn field(self) -> &'static str {
        match self {
            OrderSort::CreatedAt | OrderSort::CreatedAtDesc => "createdAt",
            OrderSort::TotalCents | OrderSort::TotalCentsDesc => "totalCents",
        }
    }

    fn descending(self) -> bool {
        matches!(self, OrderSort::CreatedAtDesc | OrderSort::TotalCentsDesc)
    }

    /// What a search cursor is bound to: a cursor of one sort means nothing in another.
    pub fn scope(self) -> String {
        format!("orders:{}", self.as_str())
    }

    pub fn sort(self) -> Document {
        let dir = if self.descending() { -1 } else { 1 };
        doc! {self.field(): dir, "_id": dir}
    }

    /// The cursor key of an order: creation time in milliseconds, or its total.
    pub fn key_of(self, o: &OrderDoc) -> i64 {
        match self.field() {
            "createdAt" => o.created_at.map_or(0, |t| t.timestamp_millis()),
            _ => o.total_cents,
        }
    }

    fn on_time(self) -> bool {
        self.field() == "createdAt"
    }
}

/// Milliseconds of a time, as the views store it.
fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The whole second at or before `ms` (saturating: inputs are checked to be years 1..=9999).
fn second_floor(ms: i64) -> i64 {
    ms.div_euclid(1000).saturating_mul(1000)
}

/// The whole second after the one `ms` falls in.
fn next_second(ms: i64) -> i64 {
    second_floor(ms).saturating_add(1000)
}

/// The whole second at or after `t`.
fn second_ceil(t: DateTime<Utc>) -> i64 {
    if t.timestamp_subsec_nanos() == 0 {
        second_floor(millis(t))
    } else {
        next_second(millis(t))
    }
}

/// One page's worth of orders to draw from `orders_view`, in `sort` order after `cursor`.
///
/// nx-27017 compares dates in filters at whole seconds (`$lt`/`$gte` against a whole second
/// are exact, anything finer is not; its sorts are exact). So time bounds (`createdFrom`,
/// `createdTo`, a `createdAt` cursor) go to the server widened to whole seconds, which is
/// exact on it and on MongoDB, and `keeps` applies them exactly to what comes back. The
/// extra documents are those of the boundary seconds only.
#[derive(Debug)]
pub struct OrderListing<'a> {
    /// Equalities and integer ranges: exact on every server.
    pub criteria: Document,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    pub sort: OrderSort,
    pub cursor: Option<&'a Cursor>,
}

impl OrderListing<'_> {
    /// What the server is asked for: a superset of the listing, never missing an order.
    pub fn server_filter(&self) -> Document {
        let mut f = self.criteria.clone();
        // Whole-second bounds on createdAt: `$gte` below, `$lt` above.
        let mut low = self.created_from.map(|t| second_floor(millis(t)));
        let mut high = self.created_to.map(second_ceil);
        if let Some(c) = self.cursor {
            if !self.sort.on_time() {
                // Integer keys and string ids compare exactly: a plain keyset.
                let (field, descending) = (self.sort.field(), self.sort.descending());
                f.insert("$or", after(field, descending, Bson::Int64(c.key), &c.id));
            } else if self.sort.descending() {
                let end = next_second(c.key);
                high = Some(high.map_or(end, |h| h.min(end)));
            } else {
                let start = second_floor(c.key);
                low = Some(low.map_or(start, |l| l.max(start)));
            }
        }
        let mut created = Document::new();
        // Bounds beyond years 1..=9999 hold for every document: the server is not asked
        // (nx-27017 errors on such dates), `keeps` still applies the exact bound.
        if let Some(l) = low.filter(|l| *l > MIN_MILLIS) {
            created.insert("$gte", bson::DateTime::from_millis(l));
        }
        if let Some(h) = high.filter(|h| *h <= MAX_MILLIS) {
            created.insert("$lt", bson::DateTime::from_millis(h));
        }
        if !created.is_empty() {
            f.insert("createdAt", created);
        }
        f
    }

    /// Whether an order the server returned belongs to the listing, exactly.
    pub fn keeps(&self, o: &OrderDoc) -> bool {
        let created = o.created_at.map_or(i64::MIN, |t| t.timestamp_millis());
        let created = DateTime::from_timestamp_millis(created);
        if let Some(from) = self.created_from
            && created.is_none_or(|c| c < from)
        {
            return false;
        }
        if let Some(to) = self.created_to
            && created.is_none_or(|c| c >= to)
        {
            return false;
        }
        match self.cursor {
            None => true,
            Some(c) => {
                let at = (self.sort.key_of(o), o.order_id.as_str());
                let after = (c.key, c.id.as_str());
                if self.sort.descending() {
                    at < after
                } else {
                    at > after
                }
            }
        }
    }
}

/// `GET /orders` criteria. Every one is optional; together they narrow the result.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct OrderSearch {
    /// Orders of this user (1 to 64 characters of `A-Z a-z 0-9 _ . : -`).
    #[param(value_type = Option<String>, pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    pub user_id: Option<UserId>,
    /// Orders in this status.
    #[param(value_type = Option<OrderStatus>)]
    pub status: Option<OrderStatus>,
    /// Orders with a line of this product.
    #[param(value_type = Option<String>, pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    pub product_id: Option<ProductId>,
    /// Total at least this many cents.
    #[param(minimum = 0)]
    pub min_total_cents: Option<i64>,
    /// Total at most this many cents; not below `minTotalCents` (422).
    #[param(minimum = 0)]
    pub max_total_cents: Option<i64>,
    /// Created at or after this RFC 3339 time, from 0001-01-01T00:00:00Z to
    /// 9999-12-31T23:59:59.999Z in UTC (else 422).
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_from: Option<DateTime<Utc>>,
    /// Created before this RFC 3339 time (exclusive), years 0001 to 9999 in UTC like
    /// `createdFrom` and not before it (422).
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_to: Option<DateTime<Utc>>,
    /// Order of the results (default `-createdAt`, newest first).
    #[param(value_type = Option<OrderSort>)]
    pub sort: OrderSort,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: i64,
    /// `nextCursor` of the previous page, issued for the same sort; any other value is a
    /// 400 `invalid_cursor` (start again without it).
    #[param(value_type = Option<String>)]
    pub cursor: Option<Cursor>,
}

impl OrderSearch {
    pub const PARAMS: [&str; 10] = [
        "userId",
        "status",
        "productId",
        "minTotalCents",
        "maxTotalCents",
        "createdFrom",
        "createdTo",
        "sort",
        "limit",
        "cursor",
    ];

    pub fn parse(p: &Params, cursors: &Signer) -> Result<Self, ApiError> {
        let sort = p.get("sort", OrderSort::parse)?.unwrap_or_default();
        let search = Self {
            user_id: p.get("userId", user_id)?,
            status: p.get("status", |v| {
                v.parse().map_err(|_| {
                    let names: Vec<&str> =
                        OrderStatus::VARIANTS.iter().map(|s| s.as_str()).collect();
                    format!("status must be one of {}", names.join(", "))
                })
            })?,
            product_id: p.get("productId", product_id)?,
            min_total_cents: p.get("minTotalCents", cents)?,
            max_total_cents: p.get("maxTotalCents", cents)?,
            created_from: p.get("createdFrom", time)?,
            created_to: p.get("createdTo", time)?,
            sort,
            limit: p.limit()?,
            cursor: p.cursor(cursors, &sort.scope(), |key, id| {
                is_order_id(id) && (!sort.on_time() || is_millis(key))
            })?,
        };
        if let (Some(min), Some(max)) = (search.min_total_cents, search.max_total_cents)
            && max < min
        {
            return Err(ApiError::invalid(
                "maxTotalCents",
                "maxTotalCents is below minTotalCents",
            ));
        }
        if let (Some(from), Some(to)) = (search.created_from, search.created_to)
            && to < from
        {
            return Err(ApiError::invalid(
                "createdTo",
                "createdTo is before createdFrom",
            ));
        }
        Ok(search)
    }

    /// The search `caller` may run: a customer's is limited to their own orders by forcing
    /// `userId` to them, so the limit is part of the MongoDB filter (and of every page's,
    /// cursors included); naming another customer is 403. Staff search as asked.
    pub fn for_caller(mut self, caller: &Caller) -> Result<Self, ApiError> {
        let Some(own) = caller.only_own() else {
            return Ok(self);
        };
        if self.user_id.as_ref().is_some_and(|named| named != own) {
            return Err(
                forbidden("a customer may search only their own orders").with_field("userId")
            );
        }
        self.user_id = Some(own.clone());
        Ok(self)
    }

    /// The criteria as a listing: equalities and ranges of typed values only.
    pub fn listing(&self) -> OrderListing<'_> {
        let mut f = Document::new();
        if let Some(u) = &self.user_id {
            f.insert("userId", u.as_str());
        }
        if let Some(s) = self.status {
            f.insert("status", s.as_str());
        }
        if let Some(p) = &self.product_id {
            // `$elemMatch`, not a dotted equality: nx-27017 finds nothing for
            // `items.productId` once that path is indexed (real MongoDB does; both handle this).
            f.insert("items", doc! {"$elemMatch": {"productId": p.as_str()}});
        }
        let mut total = Document::new();
        if let Some(min) = self.min_total_cents {
            total.insert("$gte", min);
        }
        if let Some(max) = self.max_total_cents {
            total.insert("$lte", max);
        }
        if !total.is_empty() {
            f.insert("totalCents", total);
        }
        OrderListing {
            criteria: f,
            created_from: self.created_from,
            created_to: self.created_to,
            sort: self.sort,
            cursor: self.cursor.as_ref(),
        }
    }
}

/// `limit` and `cursor` of a paged listing.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: i64,
    /// `nextCursor` of the previous page; any other value is a 400 `invalid_cursor`
    /// (start again without it).
    #[param(value_type = Option<String>)]
    pub cursor: Option<Cursor>,
}

impl Paging {
    pub const PARAMS: [&str; 2] = ["limit", "cursor"];

    pub fn parse(
        p: &Params,
        cursors: &Signer,
        scope: &str,
        valid: impl Fn(i64, &str) -> bool,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            limit: p.limit()?,
            cursor: p.cursor(cursors, scope, valid)?,
        })
    }
}

/// `GET /sales/daily` range, both ends included, at most 366 days.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SalesRangeQuery {
    /// First UTC day, `YYYY-MM-DD`, from 0001-01-01 to 9999-12-31; not after `to`, and the
    /// range `from..=to` covers at most 366 days (else 422).
    #[param(value_type = String, format = Date, pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub from: NaiveDate,
    /// Last UTC day, `YYYY-MM-DD`, from 0001-01-01 to 9999-12-31; not before `from` and at
    /// most 365 days after it, so the range covers at most 366 days (else 422).
    #[param(value_type = String, format = Date, pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub to: NaiveDate,
}

impl SalesRangeQuery {
    pub const PARAMS: [&str; 2] = ["from", "to"];

    pub fn parse(p: &Params) -> Result<Self, ApiError> {
        let from = p.required("from", date)?;
        let to = p.required("to", date)?;
        if to < from {
            return Err(ApiError::invalid("from", "from is after to"));
        }
        if (to - from).num_days() + 1 > MAX_DAYS {
            return Err(ApiError::invalid(
                "to",
                format!("the range covers more than {MAX_DAYS} days"),
            ));
        }
        Ok(Self { from, to })
    }
}

/// `GET /inventory`: products by ascending available units.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct LowStockQuery {
    /// Only products with at most this many units available (any integer; available units
    /// are never below zero, so a negative bound lists nothing).
    pub max_available: Option<i64>,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: i64,
    /// `nextCursor` of the previous page; any other value is a 400 `invalid_cursor`
    /// (start again without it).
    #[param(value_type = Option<String>)]
    pub cursor: Option<Cursor>,
}

impl LowStockQuery {
    pub const PARAMS: [&str; 3] = ["maxAvailable", "limit", "cursor"];
    pub const SCOPE: &str = "inventory:availableUnits";

    pub fn parse(p: &Params, cursors: &Signer) -> Result<Self, ApiError> {
        Ok(Self {
            max_available: p.get("maxAvailable", integer)?,
            limit: p.limit()?,
            cursor: p.cursor(cursors, Self::SCOPE, |_, id| is_product_id(id))?,
        })
    }
}

impl WindowKind {
    pub fn millis(self) -> i64 {
        match self {
            WindowKind::Minute => 60_000,
            WindowKind::Hour => 3_600_000,
        }
    }

    /// Windows a range may cover: a day of minutes, a month of hours.
    pub fn max_windows(self) -> i64 {
        match self {
            WindowKind::Minute => 1440,
            WindowKind::Hour => 744,
        }
    }

    /// Windows a range covers when it is not given: an hour of minutes, a day of hours.
    pub fn default_windows(self) -> i64 {
        match self {
            WindowKind::Minute => 60,
            WindowKind::Hour => 24,
        }
    }

    /// The `_id` prefix of its documents in `sales_by_minute`.
    pub fn prefix(self) -> &'static str {
        match self {
            WindowKind::Minute => "minute:",
            WindowKind::Hour => "hour:",
        }
    }

    /// The `_id` of the window starting at `start` (a window boundary).
    pub fn id(self, start: DateTime<Utc>) -> String {
        let format = match self {
            WindowKind::Minute => "%Y-%m-%dT%H:%M",
            WindowKind::Hour => "%Y-%m-%dT%H",
        };
        format!("{}{}", self.prefix(), start.format(format))
    }

    /// The start of the window `ms` falls in.
    pub fn floor(self, ms: i64) -> i64 {
        ms.div_euclid(self.millis()).saturating_mul(self.millis())
    }

    /// The first window boundary at or after `ms`.
    pub fn ceil(self, ms: i64) -> i64 {
        let floor = self.floor(ms);
        if floor == ms {
            ms
        } else {
            floor.saturating_add(self.millis())
        }
    }
}

/// `GET /sales/minutely` and `/sales/hourly`: a range of event-time windows.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowRangeQuery {
    /// RFC 3339 time (encode `+` as `%2B`); the range starts with the window holding it.
    /// Default: `to` minus 60 minutes (`/sales/minutely`) or 24 hours (`/sales/hourly`).
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339 time, after `from`; the range ends with the window holding the instant
    /// before it (a `to` on a window boundary is excluded). Default: `from` plus 60 minutes
    /// (24 hours) when `from` is given, else the end of the window holding the view's
    /// watermark (the current window before any event). At most 1,440 minutes or 744 hours
    /// (else 422).
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<DateTime<Utc>>,
}

/// The windows of one range: `count` windows from `from` (milliseconds, a boundary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRange {
    pub kind: WindowKind,
    pub from: i64,
    pub count: i64,
}

impl WindowRange {
    /// The `count` windows ending with the one that holds `at`, within years 1 to 9999.
    pub fn ending_at(kind: WindowKind, at: i64, count: i64) -> Self {
        let to = kind
            .floor(at.clamp(MIN_MILLIS, MAX_MILLIS))
            .saturating_add(kind.millis());
        let from = to
            .saturating_sub(count.saturating_mul(kind.millis()))
            .max(MIN_MILLIS);
        Self {
            kind,
            from,
            count: (to - from) / kind.millis(),
        }
    }

    pub fn to(&self) -> i64 {
        self.from
            .saturating_add(self.count.saturating_mul(self.kind.millis()))
    }

    /// Each window's start, oldest first.
    pub fn starts(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.count).map(|i| self.from + i * self.kind.millis())
    }
}

impl WindowRangeQuery {
    pub const PARAMS: [&str; 2] = ["from", "to"];

    pub fn parse(p: &Params) -> Result<Self, ApiError> {
        Ok(Self {
            from: p.get("from", time)?,
            to: p.get("to", time)?,
        })
    }

    /// The windows asked for, or `None` when neither end is given (the range then ends
    /// with the window of the view's watermark: [`WindowRange::ending_at`]). Every window
    /// overlapping `[from, to)` is in it.
    pub fn given(&self, kind: WindowKind) -> Result<Option<WindowRange>, ApiError> {
        let span = kind.default_windows() * kind.millis();
        let (from, to) = match (self.from, self.to) {
            (None, None) => return Ok(None),
            (Some(f), Some(t)) => (millis(f), millis(t)),
            (Some(f), None) => (millis(f), millis(f).saturating_add(span)),
            (None, Some(t)) => (millis(t).saturating_sub(span), millis(t)),
        };
        if to <= from {
            return Err(ApiError::invalid("to", "to must be after from"));
        }
        // Windows of years 1 to 9999 only.
        let from = kind.floor(from).max(MIN_MILLIS);
        let to = kind.ceil(to).min(MAX_MILLIS + 1);
        let count = (to - from) / kind.millis();
        if count > kind.max_windows() {
            let unit = match kind {
                WindowKind::Minute => "minutes",
                WindowKind::Hour => "hours",
            };
            return Err(ApiError::invalid(
                "to",
                format!("the range covers more than {} {unit}", kind.max_windows()),
            ));
        }
        Ok(Some(WindowRange { kind, from, count }))
    }
}

/// Longest alert id a cursor may carry (ids are `<rule>:customer:<userId>:<ms>`).
const MAX_ALERT_ID: usize = 200;

/// `GET /alerts`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// `open` or `closed` (by the `alerts` view's watermark); both when absent.
    #[param(value_type = Option<AlertStatus>)]
    pub status: Option<AlertStatus>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: i64,
    /// `nextCursor` of the previous page with the same `status`; any other value is a 400
    /// `invalid_cursor` (start again without it).
    #[param(value_type = Option<String>)]
    pub cursor: Option<Cursor>,
}

impl AlertsQuery {
    pub const PARAMS: [&str; 3] = ["status", "limit", "cursor"];
    pub const DEFAULT_LIMIT: i64 = 50;
    pub const MAX_LIMIT: i64 = 200;

    /// What a cursor is bound to: one of the open listing means nothing in the closed one.
    pub fn scope(status: Option<AlertStatus>) -> String {
        format!("alerts:{}", status.map_or("all", AlertStatus::as_str))
    }

    pub fn parse(p: &Params, cursors: &Signer) -> Result<Self, ApiError> {
        let status = p.get("status", |v| match v {
            "open" => Ok(AlertStatus::Open),
            "closed" => Ok(AlertStatus::Closed),
            _ => Err("must be open or closed".into()),
        })?;
        Ok(Self {
            status,
            limit: p.limit_within(Self::DEFAULT_LIMIT, Self::MAX_LIMIT)?,
            cursor: p.cursor(cursors, &Self::scope(status), |key, id| {
                is_millis(key) && !id.is_empty() && id.len() <= MAX_ALERT_ID
            })?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &[(&str, &str)], allowed: &[&str]) -> Result<Params, ApiError> {
        Params::new(
            q.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            allowed,
        )
    }

    fn search(q: &[(&str, &str)]) -> Result<OrderSearch, ApiError> {
        OrderSearch::parse(&params(q, &OrderSearch::PARAMS)?, &Signer::new(b"test"))
    }

    fn refused_field(r: Result<impl std::fmt::Debug, ApiError>) -> (u16, String) {
        let e = r.unwrap_err();
        (e.status.as_u16(), e.field.unwrap_or_default())
    }

    #[test]
    fn operators_never_pass_as_values_or_names() {
        assert_eq!(
            refused_field(search(&[("userId[$ne]", "x")])),
            (422, "userId[$ne]".into())
        );
        assert_eq!(
            refused_field(search(&[("userId", "{\"$gt\":\"\"}")])),
            (422, "userId".into())
        );
        assert_eq!(
            refused_field(search(&[("productId", "$where")])),
            (422, "productId".into())
        );
        let ok = search(&[("userId", "a.b:c-d_e")]).unwrap();
        assert_eq!(ok.listing().server_filter(), doc! {"userId": "a.b:c-d_e"});
    }

    fn caller(sub: &str, staff: bool) -> Caller {
        Caller {
            sub: sub.parse().unwrap(),
            staff,
        }
    }

    #[test]
    fn a_customers_search_carries_their_id_in_the_mongodb_filter() {
        let alice = caller("alice", false);
        let cursor = Signer::new(b"test").encode(
            &OrderSort::TotalCents.scope(),
            500,
            "00000000-0000-4000-8000-000000000001",
        );
        for q in [
            vec![],
            vec![("userId", "alice")],
            vec![("status", "pending")],
            vec![("sort", "totalCents"), ("cursor", cursor.as_str())],
        ] {
            let s = search(&q).unwrap().for_caller(&alice).unwrap();
            let filter = s.listing().server_filter();
            assert_eq!(filter.get_str("userId"), Ok("alice"), "{q:?}: {filter}");
        }
        let e = search(&[("userId", "bob")])
            .unwrap()
            .for_caller(&alice)
            .unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code, e.field.as_deref()),
            (403, "forbidden", Some("userId"))
        );
        // Staff search across customers, or for the one they name.
        let staff = caller("staff-1", true);
        let all = search(&[]).unwrap().for_caller(&staff).unwrap();
        assert_eq!(all.listing().server_filter(), doc! {});
        let bobs = search(&[("userId", "bob")])
            .unwrap()
            .for_caller(&staff)
            .unwrap();
        assert_eq!(bobs.listing().server_filter(), doc! {"userId": "bob"});
    }

    #[test]
    fn each_criterion_is_typed_and_named_when_wrong() {
        for (name, bad) in [
            ("status", "open"),
            ("minTotalCents", "-1"),
            ("maxTotalCents", "1.5"),
            ("createdFrom", "yesterday"),
            ("createdTo", "2026-11-26"),
            ("sort", "userId"),
            ("limit", "0"),
            ("limit", "101"),
            ("limit", "ten"),
        ] {
            assert_eq!(
                refused_field(search(&[(name, bad)])),
                (422, name.into()),
                "{name}={bad}"
            );
        }
        assert_eq!(
            refused_field(search(&[("limit", "1"), ("limit", "2")])),
            (422, "limit".into())
        );
        assert_eq!(
            refused_field(search(&[("minTotalCents", "5"), ("maxTotalCents", "4")])),
            (422, "maxTotalCents".into())
        );
    }

    #[test]
    fn the_filter_holds_every_criterion() {
        let s = search(&[
            ("userId", "u1"),
            ("status", "confirmed"),
            ("productId", "sku-1"),
            ("minTotalCents", "100"),
            ("maxTotalCents", "900"),
            ("createdFrom", "2026-11-01T00:00:00Z"),
            ("createdTo", "2026-11-02T00:00:00+01:00"),
            ("sort", "totalCents"),
            ("limit", "5"),
        ])
        .unwrap();
        assert_eq!((s.sort, s.limit), (OrderSort::TotalCents, 5));
        let from = bson::DateTime::from_millis(1_793_491_200_000);
        let to = bson::DateTime::from_millis(1_793_574_000_000);
        assert_eq!(
            s.listing().server_filter(),
            doc! {
                "userId": "u1", "status": "confirmed", "items": {"$elemMatch": {"productId": "sku-1"}},
                "totalCents": {"$gte": 100_i64, "$lte": 900_i64},
                "createdAt": {"$gte": from, "$lt": to},
            }
        );
        assert_eq!(s.sort.sort(), doc! {"totalCents": 1, "_id": 1});
    }

    fn order(id: &str, created_ms: i64, total: i64) -> OrderDoc {
        OrderDoc {
            order_id: id.into(),
            user_id: "u".into(),
            currency: "USD".into(),
            items: vec![],
            item_count: 0,
            total_cents: total,
            status: OrderStatus::Pending,
            created_at: Some(bson::DateTime::from_millis(created_ms)),
            updated_at: None,
            confirmed_at: None,
            cancelled_at: None,
            cancel_reason: None,
            shipped_at: None,
            carrier: None,
            tracking_number: None,
            delivered_at: None,
            version: 1,
            ..OrderDoc::default()
        }
    }

    #[test]
    fn time_bounds_reach_the_server_as_whole_seconds_and_apply_exactly_here() {
        let t = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap();
        let cursor = Cursor {
            key: 10_500,
            id: "m".into(),
        };
        let listing = OrderListing {
            criteria: doc! {"userId": "u"},
            created_from: Some(t(2_250)),
            created_to: Some(t(20_000)),
            sort: OrderSort::CreatedAtDesc,
            cursor: Some(&cursor),
        };
        let s = |ms: i64| bson::DateTime::from_millis(ms);
        assert_eq!(
            listing.server_filter(),
            doc! {"userId": "u", "createdAt": {"$gte": s(2_000), "$lt": s(11_000)}}
        );
        // After the cursor in newest-first order: older, or as old with a smaller id.
        assert!(listing.keeps(&order("a", 10_499, 0)));
        assert!(listing.keeps(&order("a", 10_500, 0)));
        assert!(!listing.keeps(&order("m", 10_500, 0)));
        assert!(!listing.keeps(&order("n", 10_500, 0)));
        assert!(!listing.keeps(&order("a", 10_501, 0)));
        // createdFrom is inclusive, to the millisecond.
        assert!(listing.keeps(&order("a", 2_250, 0)));
        assert!(!listing.keeps(&order("a", 2_249, 0)));

        let ascending = OrderListing {
            sort: OrderSort::CreatedAt,
            created_from: None,
            ..listing
        };
        assert_eq!(
            ascending.server_filter(),
            doc! {"userId": "u", "createdAt": {"$gte": s(10_000), "$lt": s(20_000)}}
        );
        assert!(ascending.keeps(&order("n", 10_500, 0)));
        assert!(!ascending.keeps(&order("a", 10_500, 0)));
        assert!(
            !ascending.keeps(&order("z", 20_000, 0)),
            "createdTo is exclusive"
        );

        // Totals compare exactly on every server: a plain keyset.
        let by_total = OrderListing {
            sort: OrderSort::TotalCentsDesc,
            created_to: None,
            ..ascending
        };
        assert_eq!(
            by_total.server_filter(),
            doc! {"userId": "u", "$or": [{"totalCents": {"$lt": 10_500_i64}}, {"totalCents": 10_500_i64, "_id": {"$lt": "m"}}]}
        );
        assert!(by_total.keeps(&order("z", 0, 10_499)));
        assert!(!by_total.keeps(&order("z", 0, 10_500)));
    }

    #[test]
    fn dates_are_strict_and_ranges_bounded() {
        assert!(date("2026-11-26").is_ok());
        for bad in [
            "2026-1-26",
            "2026-02-30",
            "26-11-2026",
            "2026-11-26T00:00:00Z",
            "",
        ] {
            assert!(date(bad).is_err(), "{bad}");
        }
        let range = |from: &str, to: &str| {
            SalesRangeQuery::parse(&params(
                &[("from", from), ("to", to)],
                &SalesRangeQuery::PARAMS,
            )?)
        };
        assert!(
            range("2024-01-01", "2024-12-31").is_ok(),
            "366 days of a leap year"
        );
        assert!(range("2025-01-01", "2026-01-01").is_ok(), "366 days");
        assert_eq!(
            refused_field(range("2025-01-01", "2026-01-02")),
            (422, "to".into())
        );
        assert_eq!(
            refused_field(range("2026-01-02", "2026-01-01")),
            (422, "from".into())
        );
        let missing = SalesRangeQuery::parse(
            &params(&[("from", "2026-01-01")], &SalesRangeQuery::PARAMS).unwrap(),
        );
        assert_eq!(refused_field(missing), (422, "to".into()));
    }

    #[test]
    fn times_and_days_are_years_1_to_9999() {
        for ok in [
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:59:59+00:59",
            "9999-12-31T23:59:59.999999999Z",
            "9999-12-31T00:00:00+01:00",
        ] {
            assert!(time(ok).is_ok(), "{ok}");
        }
        for bad in [
            "0000-12-31T23:59:59.999Z",
            "0001-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59-00:01",
        ] {
            assert!(time(bad).unwrap_err().contains("9999"), "{bad}");
        }
        assert_eq!(day("0001-01-01").unwrap().to_string(), "0001-01-01");
        assert_eq!(day("9999-12-31").unwrap().to_string(), "9999-12-31");
        assert!(matches!(day("0000-01-01"), Err(BadDate::OutOfRange(_))));
        assert!(matches!(day("0000-02-30"), Err(BadDate::Malformed(_))));
        assert!(matches!(day("10000-01-01"), Err(BadDate::Malformed(_))));
        assert_eq!(
            refused_field(search(&[("createdFrom", "0000-01-01T00:00:00Z")])),
            (422, "createdFrom".into())
        );
        assert!(is_millis(MIN_MILLIS) && is_millis(MAX_MILLIS));
        assert!(!is_millis(MIN_MILLIS - 1) && !is_millis(MAX_MILLIS + 1));
        let t = |v: &str| DateTime::parse_from_rfc3339(v).unwrap().with_timezone(&Utc);
        assert_eq!(millis(t("0001-01-01T00:00:00Z")), MIN_MILLIS);
        assert_eq!(millis(t("9999-12-31T23:59:59.999Z")), MAX_MILLIS);
    }

    #[test]
    fn bounds_at_the_ends_of_time_are_left_to_keeps_and_never_overflow() {
        let s = |ms: i64| bson::DateTime::from_millis(ms);
        let last = Cursor {
            key: MAX_MILLIS,
            id: "m".into(),
        };
        // The whole second after 9999-12-31T23:59:59.999 is in year 10000: not sent.
        let listing = OrderListing {
            criteria: Document::new(),
            created_from: DateTime::from_timestamp_millis(MIN_MILLIS),
            created_to: DateTime::from_timestamp_millis(MAX_MILLIS),
            sort: OrderSort::CreatedAtDesc,
            cursor: Some(&last),
        };
        assert_eq!(listing.server_filter(), doc! {});
        assert!(listing.keeps(&order("a", MAX_MILLIS - 1, 0)));
        assert!(
            !listing.keeps(&order("a", MAX_MILLIS, 0)),
            "createdTo is exclusive"
        );
        let first = Cursor {
            key: MIN_MILLIS + 1,
            id: "m".into(),
        };
        let ascending = OrderListing {
            sort: OrderSort::CreatedAt,
            cursor: Some(&first),
            created_to: None,
            ..listing
        };
        assert_eq!(ascending.server_filter(), doc! {});
        let later = OrderListing {
            created_from: DateTime::from_timestamp_millis(MIN_MILLIS + 1500),
            ..ascending
        };
        assert_eq!(
            later.server_filter(),
            doc! {"createdAt": {"$gte": s(MIN_MILLIS + 1000)}}
        );
        // Keys no cursor of ours holds (refused when decoded) still cannot overflow here.
        for key in [i64::MIN, i64::MIN + 1, -1, i64::MAX - 999, i64::MAX] {
            let c = Cursor {
                key,
                id: "m".into(),
            };
            for sort in OrderSort::ALL {
                let l = OrderListing {
                    criteria: Document::new(),
                    created_from: None,
                    created_to: None,
                    sort,
                    cursor: Some(&c),
                };
                l.server_filter();
                l.keeps(&order("a", 0, 0));
            }
        }
    }
}
