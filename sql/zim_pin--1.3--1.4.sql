/* zim_pin--1.3--1.4.sql: from 1.3 to 1.4 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION zim_pin UPDATE TO '1.4'" to load this file. \quit

-- The queue carries every writing Action of the conversation family.  A
-- job's Action is in action; its intent in the column of that Action
-- (pinned, silenced, or mark and marked), the others NULL.  Jobs stored
-- before 1.4 are ConvPinned jobs, and keep their pinned.  Adding columns
-- with a constant default rewrites no row.
ALTER TABLE @extschema@.zim_pin_job
    ALTER COLUMN pinned DROP NOT NULL,
    ADD COLUMN action text NOT NULL DEFAULT 'ConvPinned'::text,
    ADD COLUMN silenced boolean,
    ADD COLUMN mark integer,
    ADD COLUMN marked boolean,
    ADD CONSTRAINT zim_pin_job_action CHECK (action OPERATOR(pg_catalog.=) ANY (ARRAY[
        'ConvPinned', 'SilenceConvNotification', 'SetConvMark', 'DeleteConv',
        'ClearConversationUnread']::text[])),
    ADD CONSTRAINT zim_pin_job_intent CHECK (
        (pinned IS NOT NULL) OPERATOR(pg_catalog.=) (action OPERATOR(pg_catalog.=) 'ConvPinned'::text)
        AND (silenced IS NOT NULL) OPERATOR(pg_catalog.=) (action OPERATOR(pg_catalog.=) 'SilenceConvNotification'::text)
        AND (mark IS NOT NULL) OPERATOR(pg_catalog.=) (action OPERATOR(pg_catalog.=) 'SetConvMark'::text)
        AND (marked IS NOT NULL) OPERATOR(pg_catalog.=) (action OPERATOR(pg_catalog.=) 'SetConvMark'::text)
        AND (mark IS NULL OR (mark OPERATOR(pg_catalog.>=) 1 AND mark OPERATOR(pg_catalog.<=) 30)));

COMMENT ON TABLE @extschema@.zim_pin_job IS
'zim_pin queue: one row per call of an enqueue function';
COMMENT ON COLUMN @extschema@.zim_pin_job.action IS
'the ZIM Action the job sends: ConvPinned, SilenceConvNotification, SetConvMark, DeleteConv or ClearConversationUnread';
COMMENT ON COLUMN @extschema@.zim_pin_job.pinned IS
'ConvPinned: pin (true) or unpin (false); NULL for other Actions';
COMMENT ON COLUMN @extschema@.zim_pin_job.silenced IS
'SilenceConvNotification: mute (true) or unmute (false); NULL for other Actions';
COMMENT ON COLUMN @extschema@.zim_pin_job.mark IS
'SetConvMark: the mark, 1..30; NULL for other Actions';
COMMENT ON COLUMN @extschema@.zim_pin_job.marked IS
'SetConvMark: set (true) or cancel (false) the mark; NULL for other Actions';

-- one enqueue function per writing function of the family, with its arguments

CREATE FUNCTION @extschema@.zim_silence_conv_notification_enqueue(
    from_user_id text,
    conv_ids text[],
    conv_types integer[],
    silenced boolean)
RETURNS bigint
AS 'MODULE_PATHNAME', 'zim_silence_conv_notification_enqueue'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION @extschema@.zim_silence_conv_notification_enqueue(text, text[], integer[], boolean) IS
'queue a mute or unmute, sent after the transaction commits; returns the job id';

REVOKE ALL ON FUNCTION @extschema@.zim_silence_conv_notification_enqueue(text, text[], integer[], boolean) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_silence_conv_notification_enqueue(
    from_user_id text,
    conv_ids text[],
    conv_type integer,
    silenced boolean)
RETURNS bigint
AS 'MODULE_PATHNAME', 'zim_silence_conv_notification_enqueue_one_type'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION @extschema@.zim_silence_conv_notification_enqueue(text, text[], integer, boolean) IS
'queue a mute or unmute of conversations of one type, sent after the transaction commits';

REVOKE ALL ON FUNCTION @extschema@.zim_silence_conv_notification_enqueue(text, text[], integer, boolean) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_set_conv_mark_enqueue(
    from_user_id text,
    conv_ids text[],
    conv_types integer[],
    mark integer,
    marked boolean)
RETURNS bigint
AS 'MODULE_PATHNAME', 'zim_set_conv_mark_enqueue'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION @extschema@.zim_set_conv_mark_enqueue(text, text[], integer[], integer, boolean) IS
'queue setting or cancelling a mark, sent after the transaction commits; returns the job id';

REVOKE ALL ON FUNCTION @extschema@.zim_set_conv_mark_enqueue(text, text[], integer[], integer, boolean) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_set_conv_mark_enqueue(
    from_user_id text,
    conv_ids text[],
    conv_type integer,
    mark integer,
    marked boolean)
RETURNS bigint
AS 'MODULE_PATHNAME', 'zim_set_conv_mark_enqueue_one_type'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION @extschema@.zim_set_conv_mark_enqueue(text, text[], integer, integer, boolean) IS
'queue setting or cancelling a mark on conversations of one type, sent after the transaction commits';

REVOKE ALL ON FUNCTION @extschema@.zim_set_conv_mark_enqueue(text, text[], integer, integer, boolean) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_delete_conv_enqueue(
    from_user_id text,
    conv_ids text[],
    conv_types integer[])
RETURNS bigint
AS 'MODULE_PATHNAME', 'zim_delete_conv_enqueue'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION @extschema@.zim_delete_conv_enqueue(text, text[], integer[]) IS
'queue deleting conversations for one user, sent after the transaction commits; returns the job id';

REVOKE ALL ON FUNCTION @extschema@.zim_delete_conv_enqueue(text, text[], integer[]) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_delete_conv_enqueue(
    from_user_id text,
    conv_ids text[],
    conv_type integer)
RETURNS bigint
AS 'MODULE_PATHNAME', 'zim_delete_conv_enqueue_one_type'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION @extschema@.zim_delete_conv_enqueue(text, text[], integer) IS
'queue deleting conversations of one type for one user, sent after the transaction commits';

REVOKE ALL ON FUNCTION @extschema@.zim_delete_conv_enqueue(text, text[], integer) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_clear_conversation_unread_enqueue(
    from_user_id text,
    conv_ids text[],
    conv_types integer[])
RETURNS bigint
AS 'MODULE_PATHNAME', 'zim_clear_conversation_unread_enqueue'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION @extschema@.zim_clear_conversation_unread_enqueue(text, text[], integer[]) IS
'queue clearing unread counts, sent after the transaction commits; returns the job id';

REVOKE ALL ON FUNCTION @extschema@.zim_clear_conversation_unread_enqueue(text, text[], integer[]) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_clear_conversation_unread_enqueue(
    from_user_id text,
    conv_ids text[],
    conv_type integer)
RETURNS bigint
AS 'MODULE_PATHNAME', 'zim_clear_conversation_unread_enqueue_one_type'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION @extschema@.zim_clear_conversation_unread_enqueue(text, text[], integer) IS
'queue clearing unread counts of conversations of one type, sent after the transaction commits';

REVOKE ALL ON FUNCTION @extschema@.zim_clear_conversation_unread_enqueue(text, text[], integer) FROM PUBLIC;

-- The backlog per Action: each Action has its own ceiling of
-- zim_pin.requests_per_second, so each drains on its own.  Requests are
-- counted before merging, as the Action splits a job: ConvPinned by
-- zim_pin.max_convs_per_request, SilenceConvNotification by 10,
-- SetConvMark by 100, DeleteConv and ClearConversationUnread one each.
CREATE VIEW @extschema@.zim_pin_backlog_by_action AS
SELECT b.action,
       pg_catalog.count(*) AS pending,
       pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) pg_catalog.min(b.enqueued_at) AS oldest_pending_age,
       pg_catalog.sum(b.requests)::bigint AS pending_requests,
       pg_catalog.make_interval(secs => (pg_catalog.sum(b.requests)
           OPERATOR(pg_catalog./) coalesce(pg_catalog.current_setting('zim_pin.requests_per_second'::text, true), '20'::text)::numeric)::double precision)
           AS expected_drain_time
FROM (SELECT j.action, j.enqueued_at,
             pg_catalog.ceil(pg_catalog.cardinality(j.conv_ids)::numeric OPERATOR(pg_catalog./)
                 (CASE WHEN j.action OPERATOR(pg_catalog.=) 'ConvPinned'::text
                       THEN coalesce(pg_catalog.current_setting('zim_pin.max_convs_per_request'::text, true), '20'::text)::integer
                       WHEN j.action OPERATOR(pg_catalog.=) 'SilenceConvNotification'::text THEN 10
                       WHEN j.action OPERATOR(pg_catalog.=) 'SetConvMark'::text THEN 100
                       ELSE 1 END)::numeric) AS requests
      FROM @extschema@.zim_pin_job j
      WHERE j.state OPERATOR(pg_catalog.=) 'pending'::text) b
GROUP BY b.action;

COMMENT ON VIEW @extschema@.zim_pin_backlog_by_action IS
'zim_pin queue: per Action, pending jobs, age of the oldest, and time to drain at the current rate';

-- The whole backlog, as before; the queue drains as fast as its slowest Action.
CREATE OR REPLACE VIEW @extschema@.zim_pin_backlog AS
SELECT coalesce(pg_catalog.sum(a.pending), 0::numeric)::bigint AS pending,
       pg_catalog.max(a.oldest_pending_age) AS oldest_pending_age,
       coalesce(pg_catalog.sum(a.pending_requests), 0::numeric)::bigint AS pending_requests,
       coalesce(pg_catalog.max(a.expected_drain_time), pg_catalog.make_interval()) AS expected_drain_time
FROM @extschema@.zim_pin_backlog_by_action a;

-- The failures, with their job's Action and intent.
CREATE OR REPLACE VIEW @extschema@.zim_pin_failure AS
SELECT j.job_id, j.from_user_id, f.conv_id, f.conv_type, j.pinned,
       j.state AS job_state, f.sub_code, f.sub_message, j.finished_at,
       j.retried_at, j.retried_by, j.action, j.silenced, j.mark, j.marked
FROM @extschema@.zim_pin_job j
JOIN @extschema@.zim_pin_job_failure f ON f.job_id OPERATOR(pg_catalog.=) j.job_id;

REVOKE ALL ON @extschema@.zim_pin_backlog_by_action FROM PUBLIC;

-- Replay failures of every Action: a conversation goes again unless a later
-- job of the same user and the same Action (for SetConvMark, the same mark)
-- names it.
CREATE OR REPLACE FUNCTION @extschema@.zim_pin_retry_failed(
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
            SELECT j.job_id, j.from_user_id, j.action, j.pinned, j.silenced, j.mark, j.marked,
                   j.conv_ids, j.conv_types
            FROM @extschema@.zim_pin_job j
            WHERE j.state <> 'pending' AND j.retried_at IS NULL
              AND j.finished_at >= since
              AND (zim_pin_retry_failed.from_user_id IS NULL
                   OR j.from_user_id = zim_pin_retry_failed.from_user_id)
              AND EXISTS (SELECT 1 FROM @extschema@.zim_pin_job_failure f WHERE f.job_id = j.job_id)
            FOR UPDATE OF j),
        later AS (
            -- the last job of each user and Action (and mark) that names each conversation
            SELECT l.from_user_id, l.action, l.mark, u.conv_id, u.conv_type, max(l.job_id) AS last_job
            FROM @extschema@.zim_pin_job l,
                 unnest(l.conv_ids, l.conv_types) AS u(conv_id, conv_type)
            WHERE l.job_id > (SELECT min(c.job_id) FROM cand c)
              AND l.from_user_id IN (SELECT c.from_user_id FROM cand c)
            GROUP BY 1, 2, 3, 4, 5),
        keep AS (
            -- its failed conversations that it asked for and no later job decided
            SELECT DISTINCT c.job_id, f.conv_id, f.conv_type,
                   array_position(c.conv_ids, f.conv_id) AS ord
            FROM cand c
            JOIN @extschema@.zim_pin_job_failure f ON f.job_id = c.job_id
            LEFT JOIN later ON later.from_user_id = c.from_user_id
                           AND later.action = c.action
                           AND later.mark IS NOT DISTINCT FROM c.mark
                           AND later.conv_id = f.conv_id AND later.conv_type = f.conv_type
            WHERE (f.conv_id, f.conv_type) IN (SELECT * FROM unnest(c.conv_ids, c.conv_types))
              AND (later.last_job IS NULL OR later.last_job <= c.job_id))
        SELECT c.job_id, c.from_user_id, c.action, c.pinned, c.silenced, c.mark, c.marked,
               array_agg(k.conv_id ORDER BY k.ord, k.conv_type) FILTER (WHERE k.conv_id IS NOT NULL) AS ids,
               array_agg(k.conv_type ORDER BY k.ord, k.conv_type) FILTER (WHERE k.conv_id IS NOT NULL) AS types
        FROM cand c LEFT JOIN keep k ON k.job_id = c.job_id
        GROUP BY c.job_id, c.from_user_id, c.action, c.pinned, c.silenced, c.mark, c.marked
        ORDER BY c.job_id
    LOOP
        new_id := NULL;
        IF old.ids IS NOT NULL THEN
            IF old.action = 'SilenceConvNotification' THEN
                new_id := @extschema@.zim_silence_conv_notification_enqueue(old.from_user_id, old.ids, old.types, old.silenced);
            ELSIF old.action = 'SetConvMark' THEN
                new_id := @extschema@.zim_set_conv_mark_enqueue(old.from_user_id, old.ids, old.types, old.mark, old.marked);
            ELSIF old.action = 'DeleteConv' THEN
                new_id := @extschema@.zim_delete_conv_enqueue(old.from_user_id, old.ids, old.types);
            ELSIF old.action = 'ClearConversationUnread' THEN
                new_id := @extschema@.zim_clear_conversation_unread_enqueue(old.from_user_id, old.ids, old.types);
            ELSE
                new_id := @extschema@.zim_conv_pinned_enqueue(old.from_user_id, old.ids, old.types, old.pinned);
            END IF;
            RETURN NEXT new_id;
        END IF;
        UPDATE @extschema@.zim_pin_job
        SET retried_at = clock_timestamp(), retried_by = new_id
        WHERE job_id = old.job_id;
    END LOOP;
END $$;

COMMENT ON FUNCTION @extschema@.zim_pin_retry_failed(timestamptz, text) IS
'queue again, at the tail of each user''s queue, the conversations that jobs finished since then did not change, of every Action, unless a later job of the same Action names them; returns the new job ids';
