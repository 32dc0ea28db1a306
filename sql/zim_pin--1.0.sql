/* zim_pin--1.0.sql: pin and unpin ZEGOCLOUD ZIM conversations from SQL */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION zim_pin" to load this file. \quit

CREATE FUNCTION @extschema@.zim_conv_pinned(
    from_user_id text,
    conv_ids text[],
    conv_types integer[],
    pinned boolean)
RETURNS TABLE (conv_id text, conv_type integer, sub_code bigint, sub_message text)
AS 'MODULE_PATHNAME', 'zim_conv_pinned'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.zim_conv_pinned(text, text[], integer[], boolean) IS
'pin (true) or unpin (false) conversations of a ZIM user; returns the ones that were not changed';

CREATE FUNCTION @extschema@.zim_conv_pinned(
    from_user_id text,
    conv_ids text[],
    conv_type integer,
    pinned boolean)
RETURNS TABLE (conv_id text, conv_type integer, sub_code bigint, sub_message text)
AS 'MODULE_PATHNAME', 'zim_conv_pinned_one_type'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.zim_conv_pinned(text, text[], integer, boolean) IS
'pin (true) or unpin (false) conversations of one type of a ZIM user; returns the ones that were not changed';

CREATE FUNCTION @extschema@.zim_api(action text, body jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'zim_api'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.zim_api(text, jsonb) IS
'sign and send body to any ZIM server Action; returns the answer whatever its Code';

CREATE FUNCTION @extschema@.zim_pin_signature(app_id bigint, nonce text, secret text, ts bigint)
RETURNS text
AS 'MODULE_PATHNAME', 'zim_pin_signature'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.zim_pin_signature(bigint, text, text, bigint) IS
'the ZIM v2.0 signature of the given values (a diagnostic; sends nothing)';

CREATE FUNCTION @extschema@.zim_pin_stats(
    OUT action text,
    OUT requests bigint,
    OUT succeeded bigint,
    OUT failed_connection bigint,
    OUT failed_service bigint,
    OUT canceled bigint,
    OUT retries bigint,
    OUT throttled bigint,
    OUT throttled_ms double precision,
    OUT convs_changed bigint,
    OUT convs_failed bigint,
    OUT mean_latency_ms double precision,
    OUT max_latency_ms double precision,
    OUT stats_reset timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'zim_pin_stats'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE VIEW @extschema@.zim_pin_stats AS SELECT * FROM @extschema@.zim_pin_stats();

COMMENT ON VIEW @extschema@.zim_pin_stats IS
'requests per ZIM Action: outcomes, retries, limiter waits, conversations, latency';

CREATE FUNCTION @extschema@.zim_pin_stats_reset()
RETURNS void
AS 'MODULE_PATHNAME', 'zim_pin_stats_reset'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION @extschema@.zim_pin_stats_reset() IS
'zero the counters of zim_pin_stats';

-- Statistics are for monitoring roles; resetting them for administrators.
REVOKE ALL ON FUNCTION @extschema@.zim_pin_stats() FROM PUBLIC;
REVOKE ALL ON @extschema@.zim_pin_stats FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.zim_pin_stats() TO pg_read_all_stats;
GRANT SELECT ON @extschema@.zim_pin_stats TO pg_read_all_stats;
REVOKE ALL ON FUNCTION @extschema@.zim_pin_stats_reset() FROM PUBLIC;

-- The transactional queue: jobs sent after their transaction commits.
CREATE TABLE @extschema@.zim_pin_job (
    job_id bigserial PRIMARY KEY,
    from_user_id text NOT NULL,
    conv_ids text[] NOT NULL,
    conv_types integer[] NOT NULL,
    pinned boolean NOT NULL,
    state text NOT NULL DEFAULT 'pending'
        CHECK (state OPERATOR(pg_catalog.=) ANY (ARRAY['pending', 'done', 'failed']::text[])),
    attempts integer NOT NULL DEFAULT 0,
    enqueued_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    next_attempt_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at timestamptz,
    last_code bigint,
    last_message text,
    claimed_by integer,         -- pid of the backend sending it now
    claimed_until timestamptz   -- its lease
);
CREATE INDEX zim_pin_job_user ON @extschema@.zim_pin_job (from_user_id, job_id)
    WHERE state OPERATOR(pg_catalog.=) 'pending'::text;
CREATE INDEX zim_pin_job_due ON @extschema@.zim_pin_job (next_attempt_at)
    WHERE state OPERATOR(pg_catalog.=) 'pending'::text;
CREATE INDEX zim_pin_job_finished ON @extschema@.zim_pin_job (finished_at)
    WHERE state OPERATOR(pg_catalog.<>) 'pending'::text;

COMMENT ON TABLE @extschema@.zim_pin_job IS
'zim_pin queue: one row per zim_conv_pinned_enqueue call';

CREATE TABLE @extschema@.zim_pin_job_failure (
    job_id bigint NOT NULL REFERENCES @extschema@.zim_pin_job ON DELETE CASCADE,
    conv_id text NOT NULL,
    conv_type integer NOT NULL,
    sub_code bigint,
    sub_message text
);
CREATE INDEX zim_pin_job_failure_job ON @extschema@.zim_pin_job_failure (job_id);

COMMENT ON TABLE @extschema@.zim_pin_job_failure IS
'zim_pin queue: one row per conversation a finished job did not change';

-- pg_dump keeps the queue with the rest of the data
SELECT pg_catalog.pg_extension_config_dump('@extschema@.zim_pin_job', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.zim_pin_job_job_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.zim_pin_job_failure', '');

CREATE FUNCTION @extschema@.zim_conv_pinned_enqueue(
    from_user_id text,
    conv_ids text[],
    conv_types integer[],
    pinned boolean)
RETURNS bigint
AS 'MODULE_PATHNAME', 'zim_conv_pinned_enqueue'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION @extschema@.zim_conv_pinned_enqueue(
    from_user_id text,
    conv_ids text[],
    conv_type integer,
    pinned boolean)
RETURNS bigint
AS 'MODULE_PATHNAME', 'zim_conv_pinned_enqueue_one_type'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION @extschema@.zim_conv_pinned_enqueue(text, text[], integer[], boolean) IS
'queue a pin or unpin, sent after the transaction commits; returns the job id';
COMMENT ON FUNCTION @extschema@.zim_conv_pinned_enqueue(text, text[], integer, boolean) IS
'queue a pin or unpin of conversations of one type, sent after the transaction commits';

CREATE FUNCTION @extschema@.zim_pin_run_jobs(max_jobs integer DEFAULT 1000)
RETURNS integer
AS 'MODULE_PATHNAME', 'zim_pin_run_jobs'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION @extschema@.zim_pin_run_jobs(integer) IS
'send due queued jobs now, in this transaction; returns how many finished';

CREATE VIEW @extschema@.zim_pin_backlog AS
SELECT pg_catalog.count(*) AS pending,
       pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) pg_catalog.min(enqueued_at) AS oldest_pending_age,
       coalesce(pg_catalog.sum(pg_catalog.ceil(pg_catalog.cardinality(conv_ids)::numeric
                               OPERATOR(pg_catalog./) pg_catalog.current_setting('zim_pin.max_convs_per_request'::text)::integer::numeric)),
                0::numeric)::bigint AS pending_requests,
       pg_catalog.make_interval(secs => (coalesce(pg_catalog.sum(pg_catalog.ceil(pg_catalog.cardinality(conv_ids)::numeric
                               OPERATOR(pg_catalog./) pg_catalog.current_setting('zim_pin.max_convs_per_request'::text)::integer::numeric)),
                0::numeric)
           OPERATOR(pg_catalog./) pg_catalog.current_setting('zim_pin.requests_per_second'::text)::numeric)::double precision)
           AS expected_drain_time
FROM @extschema@.zim_pin_job
WHERE state OPERATOR(pg_catalog.=) 'pending'::text;

COMMENT ON VIEW @extschema@.zim_pin_backlog IS
'zim_pin queue: pending jobs, age of the oldest, and time to drain at the current rate';

REVOKE ALL ON @extschema@.zim_pin_job, @extschema@.zim_pin_job_failure,
              @extschema@.zim_pin_backlog FROM PUBLIC;
REVOKE ALL ON SEQUENCE @extschema@.zim_pin_job_job_id_seq FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.zim_conv_pinned_enqueue(text, text[], integer[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.zim_conv_pinned_enqueue(text, text[], integer, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.zim_pin_run_jobs(integer) FROM PUBLIC;

-- Sending is for the roles an administrator chooses.
REVOKE ALL ON FUNCTION @extschema@.zim_conv_pinned(text, text[], integer[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.zim_conv_pinned(text, text[], integer, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.zim_api(text, jsonb) FROM PUBLIC;
-- Its argument is a secret: keep it out of ordinary roles' statements.
REVOKE ALL ON FUNCTION @extschema@.zim_pin_signature(bigint, text, text, bigint) FROM PUBLIC;
