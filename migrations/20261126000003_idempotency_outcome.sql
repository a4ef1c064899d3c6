-- The event store keeps what the caller records for an idempotent command as one opaque
-- document (`outcome`), replayed to a retry whose `request` fingerprint matches: what it
-- means (an HTTP status and body, for the write-service) is the caller's business, not the
-- store's. Existing rows keep their answer as {"status", "body"}, the shape the
-- write-service reads back.
alter table idempotency_keys add column outcome jsonb;

update idempotency_keys
set outcome = jsonb_build_object('status', response_status, 'body', response_body);

alter table idempotency_keys
    alter column outcome set not null,
    drop column response_status,
    drop column response_body;
