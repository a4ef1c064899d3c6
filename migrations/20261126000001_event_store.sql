-- the event store: an append-only log of events, one row per event, grouped into streams.

-- one row per stream; its row lock serialises appends to the stream and `version` is the
-- expected-version check. taking this lock is an append's first write, so the transaction's
-- xid is assigned together with the lock.
create table streams (
    stream_id   text primary key,
    stream_type text not null,
    version     bigint not null check (version >= 0),
    updated_at  timestamptz not null default now()
);

create table events (
    -- commit order is not position order: concurrent transactions commit out of order, so
    -- readers order by (tx_id, global_position) and read only below the oldest running xid.
    global_position bigint generated always as identity primary key,
    tx_id           xid8 not null default pg_current_xact_id(),
    stream_id       text not null references streams (stream_id),
    stream_position bigint not null check (stream_position >= 1),
    event_id        uuid not null unique,
    event_type      text not null,
    schema_version  integer not null check (schema_version >= 1),
    data            jsonb not null,
    -- request id, idempotency key, causation id
    metadata        jsonb not null default '{}',
    recorded_at     timestamptz not null default now(),
    -- a lost race on a stream is a unique violation, never a duplicate version
    unique (stream_id, stream_position)
);

-- the tailer's read order
create index events_tx_id_global_position on events (tx_id, global_position);
-- point-in-time reads of one stream
create index events_stream_recorded_at on events (stream_id, recorded_at);

-- the latest snapshot of a stream's aggregate state; a snapshot of another state schema
-- version is ignored by readers and replaced by the next one written.
create table snapshots (
    stream_id      text primary key references streams (stream_id),
    stream_version bigint not null,
    state_schema   integer not null,
    state          jsonb not null,
    taken_at       timestamptz not null default now()
);

-- idempotency keys, written in the same transaction as the events they produced, so a
-- retried request either sees its first response or appends nothing.
create table idempotency_keys (
    idempotency_key text primary key,
    request         jsonb not null,
    response_status smallint not null,
    response_body   jsonb not null,
    created_at      timestamptz not null default now()
);
