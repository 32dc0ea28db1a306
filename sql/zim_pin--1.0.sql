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

-- Sending is for the roles an administrator chooses.
REVOKE ALL ON FUNCTION @extschema@.zim_conv_pinned(text, text[], integer[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.zim_conv_pinned(text, text[], integer, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.zim_api(text, jsonb) FROM PUBLIC;
-- Its argument is a secret: keep it out of ordinary roles' statements.
REVOKE ALL ON FUNCTION @extschema@.zim_pin_signature(bigint, text, text, bigint) FROM PUBLIC;
