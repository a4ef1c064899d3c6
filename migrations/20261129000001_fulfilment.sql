-- The fulfilment process's own state. Each step commits these rows in the same transaction
-- as the events it appends to the log, so a crash leaves all of a step or none of it.

-- How far a process has read the log. The tail moves it with a compare-and-set, so a
-- deposed leader that still runs cannot commit a step twice.
create table process_checkpoints (
    process         text primary key,
    tx_id           bigint not null check (tx_id >= 0),
    global_position bigint not null check (global_position >= 0),
    updated_at      timestamptz not null default now()
);

-- Log events a process has handled: a replayed event finds its id here and does nothing.
create table process_inbox (
    process    text not null,
    event_id   uuid not null,
    handled_at timestamptz not null default now(),
    primary key (process, event_id)
);

-- One row per order the fulfilment process follows, from its checkout on.
create table fulfilment_orders (
    order_id           uuid primary key,
    -- awaiting_payment, paid, cancelled, refunding, refunded, completed
    state              text not null,
    -- bumped by every change: the tail, the dispatcher and the deadlines update it with a
    -- compare-and-set, as their event append must be each transaction's first write
    version            bigint not null default 1,
    user_id            text not null,
    email              text not null,
    payment_method     text not null,
    amount_cents       bigint not null check (amount_cents >= 0),
    currency           text not null,
    payment_intent_id  text,
    confirmed_event_id uuid not null,
    started_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now()
);
create index fulfilment_orders_state on fulfilment_orders (state);

-- Work outside the database (charges, refunds, emails), done at least once by the
-- dispatcher; `idempotency_key` is what the other side de-duplicates on (the provider's
-- Idempotency-Key, the email's Message-ID).
create table fulfilment_outbox (
    id              uuid primary key,
    order_id        uuid not null references fulfilment_orders (order_id),
    kind            text not null check (kind in ('charge', 'refund', 'email')),
    payload         jsonb not null,
    idempotency_key text not null unique,
    -- the log event that made this work
    cause_event_id  uuid not null,
    -- pending, done, cancelled
    status          text not null default 'pending',
    attempts        integer not null default 0,
    -- an attempt may have reached the provider without us hearing the answer
    outcome_unknown boolean not null default false,
    next_attempt_at timestamptz not null default now(),
    last_error      text,
    created_at      timestamptz not null default now(),
    done_at         timestamptz
);
create index fulfilment_outbox_due on fulfilment_outbox (next_attempt_at) where status = 'pending';

-- Timers: the payment timeout. Written with the step that starts them, cancelled with the
-- step that makes them moot; firing re-checks the order's state in its own transaction.
create table fulfilment_deadlines (
    id         uuid primary key,
    order_id   uuid not null references fulfilment_orders (order_id),
    kind       text not null check (kind in ('payment_timeout')),
    due_at     timestamptz not null,
    -- pending, fired, cancelled
    status     text not null default 'pending',
    created_at timestamptz not null default now()
);
create index fulfilment_deadlines_due on fulfilment_deadlines (due_at) where status = 'pending';
