-- An append in one round trip. The same statements as before, in the same order, now run
-- inside the server: stream locks first (sorted, so multi-stream appends cannot deadlock;
-- the first of them assigns the xid), then every event in one insert, the snapshots and the
-- idempotency record. Called on its own it is its own transaction (no BEGIN or COMMIT
-- round trips); called inside a caller's transaction it refuses to run after that
-- transaction wrote, as before.
--
-- A refusal raises, so nothing of the append survives it:
--   ES001 a stream is not at its expected version (detail: {"streamId", "actual"})
--   ES002 the idempotency key was recorded by another request
--   ES003 the transaction already wrote before the append
create function es_append(
    -- one entry per stream
    p_stream_ids text[],
    p_stream_types text[],
    p_expected int8[],
    p_new int8[],
    -- one entry per event
    e_stream_ids text[],
    e_positions int8[],
    e_event_ids uuid[],
    e_types text[],
    e_versions int4[],
    e_data jsonb[],
    e_metadata jsonb[],
    -- one entry per snapshot
    s_stream_ids text[],
    s_versions int8[],
    s_schemas int4[],
    s_states jsonb[],
    -- the idempotency record, if any; the append's position is written into the outcome at
    -- i_position_path, in the text form of a consistency token
    i_key text,
    i_request jsonb,
    i_outcome jsonb,
    i_position_path text[],
    out tx_id int8,
    out global_position int8
)
language plpgsql
as $$
declare
    s record;
    moved int;
    actual int8;
    token text;
begin
    if pg_current_xact_id_if_assigned() is not null then
        raise exception 'an append inside a transaction must be its first write'
            using errcode = 'ES003';
    end if;

    for s in
        select * from unnest(p_stream_ids, p_stream_types, p_expected, p_new)
            as t(stream_id, stream_type, expected, new)
        order by stream_id
    loop
        if s.expected = 0 then
            -- a concurrent creator holding the key makes this wait, then do nothing
            insert into streams (stream_id, stream_type, version)
            values (s.stream_id, s.stream_type, s.new)
            on conflict (stream_id) do nothing;
        else
            -- waits for a concurrent appender's lock, then re-checks the version it left
            update streams set version = s.new, updated_at = now()
            where streams.stream_id = s.stream_id and version = s.expected;
        end if;
        get diagnostics moved = row_count;
        if moved <> 1 then
            select version into actual from streams where streams.stream_id = s.stream_id;
            raise exception 'stream % is not at version %', s.stream_id, s.expected
                using errcode = 'ES001',
                      detail = json_build_object('streamId', s.stream_id, 'actual', coalesce(actual, 0))::text;
        end if;
    end loop;

    with inserted as (
        insert into events
            (stream_id, stream_position, event_id, event_type, schema_version, data, metadata)
        select * from unnest(e_stream_ids, e_positions, e_event_ids, e_types, e_versions, e_data, e_metadata)
        returning events.tx_id, events.global_position
    )
    select max(inserted.tx_id)::text::int8, max(inserted.global_position)
    into tx_id, global_position
    from inserted;

    insert into snapshots (stream_id, stream_version, state_schema, state)
    select * from unnest(s_stream_ids, s_versions, s_schemas, s_states)
    on conflict (stream_id) do update
        set stream_version = excluded.stream_version,
            state_schema = excluded.state_schema,
            state = excluded.state,
            taken_at = now()
        where snapshots.stream_version < excluded.stream_version;

    if i_key is not null then
        token := lpad(to_hex(tx_id), 16, '0') || '-' || lpad(to_hex(global_position), 16, '0');
        insert into idempotency_keys (idempotency_key, request, outcome)
        values (i_key, i_request, jsonb_set(i_outcome, i_position_path, to_jsonb(token)))
        on conflict (idempotency_key) do nothing;
        get diagnostics moved = row_count;
        if moved <> 1 then
            -- another request with this key committed first; ours must not count
            raise exception 'idempotency key % was recorded concurrently', i_key
                using errcode = 'ES002';
        end if;
    end if;
end
$$;
