/* zim_pin--1.1.sql: pin and unpin ZEGOCLOUD ZIM conversations from SQL */

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
    claimed_until timestamptz,  -- its lease
    retried_at timestamptz,
    retried_by bigint
);
CREATE INDEX zim_pin_job_user ON @extschema@.zim_pin_job (from_user_id, job_id)
    WHERE state OPERATOR(pg_catalog.=) 'pending'::text;
CREATE INDEX zim_pin_job_due ON @extschema@.zim_pin_job (next_attempt_at)
    WHERE state OPERATOR(pg_catalog.=) 'pending'::text;
CREATE INDEX zim_pin_job_finished ON @extschema@.zim_pin_job (finished_at)
    WHERE state OPERATOR(pg_catalog.<>) 'pending'::text;

COMMENT ON TABLE @extschema@.zim_pin_job IS
'zim_pin queue: one row per zim_conv_pinned_enqueue call';
COMMENT ON COLUMN @extschema@.zim_pin_job.retried_at IS
'when zim_pin_retry_failed took this finished job''s failed conversations';
COMMENT ON COLUMN @extschema@.zim_pin_job.retried_by IS
'the job that sends them again (NULL: later jobs had decided all of them)';

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
                               OPERATOR(pg_catalog./) coalesce(pg_catalog.current_setting('zim_pin.max_convs_per_request'::text, true), '20'::text)::integer::numeric)),
                0::numeric)::bigint AS pending_requests,
       pg_catalog.make_interval(secs => (coalesce(pg_catalog.sum(pg_catalog.ceil(pg_catalog.cardinality(conv_ids)::numeric
                               OPERATOR(pg_catalog./) coalesce(pg_catalog.current_setting('zim_pin.max_convs_per_request'::text, true), '20'::text)::integer::numeric)),
                0::numeric)
           OPERATOR(pg_catalog./) coalesce(pg_catalog.current_setting('zim_pin.requests_per_second'::text, true), '20'::text)::numeric)::double precision)
           AS expected_drain_time
FROM @extschema@.zim_pin_job
WHERE state OPERATOR(pg_catalog.=) 'pending'::text;

COMMENT ON VIEW @extschema@.zim_pin_backlog IS
'zim_pin queue: pending jobs, age of the oldest, and time to drain at the current rate';

-- one row per conversation a finished job did not change, with its job
CREATE VIEW @extschema@.zim_pin_failure AS
SELECT j.job_id, j.from_user_id, f.conv_id, f.conv_type, j.pinned,
       j.state AS job_state, f.sub_code, f.sub_message, j.finished_at,
       j.retried_at, j.retried_by
FROM @extschema@.zim_pin_job j
JOIN @extschema@.zim_pin_job_failure f ON f.job_id OPERATOR(pg_catalog.=) j.job_id;

COMMENT ON VIEW @extschema@.zim_pin_failure IS
'zim_pin queue: the conversations finished jobs did not change, with their job';

CREATE FUNCTION @extschema@.zim_pin_retry_failed(
    since timestamptz DEFAULT pg_catalog.now() OPERATOR(pg_catalog.-) '1 day'::interval,
    from_user_id text DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old record;
    new_id bigint;
BEGIN
    IF since IS NULL THEN
        RAISE EXCEPTION 'since must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    FOR old IN
        WITH cand AS (
            -- finished jobs of the window not replayed yet; a concurrent
            -- replay waits here, then skips what the first one took
            SELECT j.job_id, j.from_user_id, j.pinned, j.conv_ids, j.conv_types
            FROM @extschema@.zim_pin_job j
            WHERE j.state <> 'pending' AND j.retried_at IS NULL
              AND j.finished_at >= since
              AND (zim_pin_retry_failed.from_user_id IS NULL
                   OR j.from_user_id = zim_pin_retry_failed.from_user_id)
              AND EXISTS (SELECT 1 FROM @extschema@.zim_pin_job_failure f WHERE f.job_id = j.job_id)
            FOR UPDATE OF j),
        later AS (
            -- the last job of each user that names each conversation
            SELECT l.from_user_id, u.conv_id, u.conv_type, max(l.job_id) AS last_job
            FROM @extschema@.zim_pin_job l,
                 unnest(l.conv_ids, l.conv_types) AS u(conv_id, conv_type)
            WHERE l.job_id > (SELECT min(c.job_id) FROM cand c)
              AND l.from_user_id IN (SELECT c.from_user_id FROM cand c)
            GROUP BY 1, 2, 3),
        keep AS (
            -- its failed conversations that it asked for and no later job names
            SELECT DISTINCT c.job_id, f.conv_id, f.conv_type,
                   array_position(c.conv_ids, f.conv_id) AS ord
            FROM cand c
            JOIN @extschema@.zim_pin_job_failure f ON f.job_id = c.job_id
            LEFT JOIN later ON later.from_user_id = c.from_user_id
                           AND later.conv_id = f.conv_id AND later.conv_type = f.conv_type
            WHERE (f.conv_id, f.conv_type) IN (SELECT * FROM unnest(c.conv_ids, c.conv_types))
              AND (later.last_job IS NULL OR later.last_job <= c.job_id))
        SELECT c.job_id, c.from_user_id, c.pinned,
               array_agg(k.conv_id ORDER BY k.ord, k.conv_type) FILTER (WHERE k.conv_id IS NOT NULL) AS ids,
               array_agg(k.conv_type ORDER BY k.ord, k.conv_type) FILTER (WHERE k.conv_id IS NOT NULL) AS types
        FROM cand c LEFT JOIN keep k ON k.job_id = c.job_id
        GROUP BY c.job_id, c.from_user_id, c.pinned
        ORDER BY c.job_id
    LOOP
        new_id := NULL;
        IF old.ids IS NOT NULL THEN
            new_id := @extschema@.zim_conv_pinned_enqueue(old.from_user_id, old.ids, old.types, old.pinned);
            RETURN NEXT new_id;
        END IF;
        UPDATE @extschema@.zim_pin_job
        SET retried_at = clock_timestamp(), retried_by = new_id
        WHERE job_id = old.job_id;
    END LOOP;
END $$;

COMMENT ON FUNCTION @extschema@.zim_pin_retry_failed(timestamptz, text) IS
'queue again, at the tail of each user''s queue, the conversations that jobs finished since then did not change, unless a later job names them; returns the new job ids';

REVOKE ALL ON @extschema@.zim_pin_job, @extschema@.zim_pin_job_failure,
              @extschema@.zim_pin_backlog, @extschema@.zim_pin_failure FROM PUBLIC;
REVOKE ALL ON SEQUENCE @extschema@.zim_pin_job_job_id_seq FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.zim_conv_pinned_enqueue(text, text[], integer[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.zim_conv_pinned_enqueue(text, text[], integer, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.zim_pin_run_jobs(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.zim_pin_retry_failed(timestamptz, text) FROM PUBLIC;

-- Sending is for the roles an administrator chooses.
REVOKE ALL ON FUNCTION @extschema@.zim_conv_pinned(text, text[], integer[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.zim_conv_pinned(text, text[], integer, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.zim_api(text, jsonb) FROM PUBLIC;
-- Its argument is a secret: keep it out of ordinary roles' statements.
REVOKE ALL ON FUNCTION @extschema@.zim_pin_signature(bigint, text, text, bigint) FROM PUBLIC;
