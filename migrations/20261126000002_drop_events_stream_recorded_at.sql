-- Point-in-time reads of one stream go through unique (stream_id, stream_position) and filter
-- that stream's rows by time, so this index only cost every append a fifth index insert.
drop index if exists events_stream_recorded_at;
