/* zim_pin--1.0--1.1.sql: from 1.0 to 1.1 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION zim_pin UPDATE TO '1.1'" to load this file. \quit

-- zim_pin_backlog works in a session that has not loaded the library
CREATE OR REPLACE VIEW @extschema@.zim_pin_backlog AS
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

-- replay: which job sent a finished job's failed conversations again
ALTER TABLE @extschema@.zim_pin_job
    ADD COLUMN retried_at timestamptz,
    ADD COLUMN retried_by bigint;
COMMENT ON COLUMN @extschema@.zim_pin_job.retried_at IS
'when zim_pin_retry_failed took this finished job''s failed conversations';
COMMENT ON COLUMN @extschema@.zim_pin_job.retried_by IS
'the job that sends them again (NULL: later jobs had decided all of them)';

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

REVOKE ALL ON @extschema@.zim_pin_failure FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.zim_pin_retry_failed(timestamptz, text) FROM PUBLIC;
