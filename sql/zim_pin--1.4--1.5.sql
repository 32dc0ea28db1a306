/* zim_pin--1.4--1.5.sql: from 1.4 to 1.5 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION zim_pin UPDATE TO '1.5'" to load this file. \quit

-- What the queue's launcher and worker are doing, read from shared
-- memory: one row for the launcher (database NULL), one for the database
-- whose queue the worker drains, whether the worker runs or not.  For
-- monitoring roles: last_error may name users, conversations and hosts,
-- so it is not for PUBLIC.
CREATE FUNCTION @extschema@.zim_pin_worker_status(
    OUT database name,
    OUT pid integer,
    OUT state text,
    OUT since timestamptz,
    OUT backoff_until timestamptz,
    OUT next_retry_at timestamptz,
    OUT last_round_at timestamptz,
    OUT last_sent_at timestamptz,
    OUT jobs_sent bigint,
    OUT jobs_finished bigint,
    OUT started_at timestamptz,
    OUT last_error text,
    OUT last_error_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'zim_pin_worker_status'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION @extschema@.zim_pin_worker_status() IS
'the state of the zim_pin launcher and queue worker, for zim_pin_worker';

REVOKE ALL ON FUNCTION @extschema@.zim_pin_worker_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.zim_pin_worker_status() TO pg_read_all_stats;

CREATE VIEW @extschema@.zim_pin_worker AS
SELECT * FROM @extschema@.zim_pin_worker_status();

COMMENT ON VIEW @extschema@.zim_pin_worker IS
'is the queue drained: the launcher and the worker, their state, last error and counts';

REVOKE ALL ON @extschema@.zim_pin_worker FROM PUBLIC;
GRANT SELECT ON @extschema@.zim_pin_worker TO pg_read_all_stats;
