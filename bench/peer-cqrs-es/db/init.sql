-- postgres-es 0.5.0's db/init.sql, its events and snapshots tables as shipped, with
-- `if not exists` so that `prepare` can run on every start. Its sample view table
-- (test_view), user and upcasting row are for its own tests and are left out.

-- a single table is used for all events in the cqrs system
CREATE TABLE IF NOT EXISTS events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- this table is only needed if snapshotting is employed
CREATE TABLE IF NOT EXISTS snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- Not postgres-es's: the catalog the aggregate's services price lines from, as ours prices
-- from its product catalog rather than from the client.
CREATE TABLE IF NOT EXISTS peer_products
(
    product_id       text   PRIMARY KEY,
    unit_price_cents bigint NOT NULL CHECK (unit_price_cents >= 0)
);
