/* zim_pin--1.2--1.3.sql: from 1.2 to 1.3 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION zim_pin UPDATE TO '1.3'" to load this file. \quit

-- The conversation family: a typed function per writing Action of ZIM's
-- "Conversation related" server API, each in an array-of-types and a
-- one-type form, returning the conversations whose requested state ZIM did
-- not confirm, as zim_conv_pinned does.

CREATE FUNCTION @extschema@.zim_silence_conv_notification(
    from_user_id text,
    conv_ids text[],
    conv_types integer[],
    silenced boolean)
RETURNS TABLE (conv_id text, conv_type integer, sub_code bigint, sub_message text)
AS 'MODULE_PATHNAME', 'zim_silence_conv_notification'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.zim_silence_conv_notification(text, text[], integer[], boolean) IS
'mute (true) or unmute (false) the notifications of conversations of a ZIM user; returns the ones whose state ZIM did not confirm';

REVOKE ALL ON FUNCTION @extschema@.zim_silence_conv_notification(text, text[], integer[], boolean) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_silence_conv_notification(
    from_user_id text,
    conv_ids text[],
    conv_type integer,
    silenced boolean)
RETURNS TABLE (conv_id text, conv_type integer, sub_code bigint, sub_message text)
AS 'MODULE_PATHNAME', 'zim_silence_conv_notification_one_type'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.zim_silence_conv_notification(text, text[], integer, boolean) IS
'mute (true) or unmute (false) the notifications of conversations of one type of a ZIM user; returns the ones whose state ZIM did not confirm';

REVOKE ALL ON FUNCTION @extschema@.zim_silence_conv_notification(text, text[], integer, boolean) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_delete_conv(
    from_user_id text,
    conv_ids text[],
    conv_types integer[])
RETURNS TABLE (conv_id text, conv_type integer, sub_code bigint, sub_message text)
AS 'MODULE_PATHNAME', 'zim_delete_conv'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.zim_delete_conv(text, text[], integer[]) IS
'delete conversations of a ZIM user, for that user only; returns the ones ZIM did not delete';

REVOKE ALL ON FUNCTION @extschema@.zim_delete_conv(text, text[], integer[]) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_delete_conv(
    from_user_id text,
    conv_ids text[],
    conv_type integer)
RETURNS TABLE (conv_id text, conv_type integer, sub_code bigint, sub_message text)
AS 'MODULE_PATHNAME', 'zim_delete_conv_one_type'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.zim_delete_conv(text, text[], integer) IS
'delete conversations of one type of a ZIM user, for that user only; returns the ones ZIM did not delete';

REVOKE ALL ON FUNCTION @extschema@.zim_delete_conv(text, text[], integer) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_clear_conversation_unread(
    from_user_id text,
    conv_ids text[],
    conv_types integer[])
RETURNS TABLE (conv_id text, conv_type integer, sub_code bigint, sub_message text)
AS 'MODULE_PATHNAME', 'zim_clear_conversation_unread'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.zim_clear_conversation_unread(text, text[], integer[]) IS
'clear the unread counts of conversations of a ZIM user; returns the ones ZIM did not clear';

REVOKE ALL ON FUNCTION @extschema@.zim_clear_conversation_unread(text, text[], integer[]) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_clear_conversation_unread(
    from_user_id text,
    conv_ids text[],
    conv_type integer)
RETURNS TABLE (conv_id text, conv_type integer, sub_code bigint, sub_message text)
AS 'MODULE_PATHNAME', 'zim_clear_conversation_unread_one_type'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.zim_clear_conversation_unread(text, text[], integer) IS
'clear the unread counts of conversations of one type of a ZIM user; returns the ones ZIM did not clear';

REVOKE ALL ON FUNCTION @extschema@.zim_clear_conversation_unread(text, text[], integer) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_set_conv_mark(
    from_user_id text,
    conv_ids text[],
    conv_types integer[],
    mark integer,
    marked boolean)
RETURNS TABLE (conv_id text, conv_type integer, sub_code bigint, sub_message text)
AS 'MODULE_PATHNAME', 'zim_set_conv_mark'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.zim_set_conv_mark(text, text[], integer[], integer, boolean) IS
'set (true) or cancel (false) a mark (1..30) on conversations of a ZIM user; returns the ones whose mark ZIM did not confirm';

REVOKE ALL ON FUNCTION @extschema@.zim_set_conv_mark(text, text[], integer[], integer, boolean) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_set_conv_mark(
    from_user_id text,
    conv_ids text[],
    conv_type integer,
    mark integer,
    marked boolean)
RETURNS TABLE (conv_id text, conv_type integer, sub_code bigint, sub_message text)
AS 'MODULE_PATHNAME', 'zim_set_conv_mark_one_type'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.zim_set_conv_mark(text, text[], integer, integer, boolean) IS
'set (true) or cancel (false) a mark (1..30) on conversations of one type of a ZIM user; returns the ones whose mark ZIM did not confirm';

REVOKE ALL ON FUNCTION @extschema@.zim_set_conv_mark(text, text[], integer, integer, boolean) FROM PUBLIC;

-- The family's reading Actions: rows in ZIM's order, paging until ZIM's
-- Next is 0 or max_rows rows have come.
CREATE FUNCTION @extschema@.zim_query_conversation_list(
    from_user_id text,
    max_rows integer DEFAULT 1000)
RETURNS TABLE (conv_id text, conv_type integer, update_time timestamptz)
AS 'MODULE_PATHNAME', 'zim_query_conversation_list'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.zim_query_conversation_list(text, integer) IS
'the conversations of a ZIM user, oldest update first, up to max_rows';

REVOKE ALL ON FUNCTION @extschema@.zim_query_conversation_list(text, integer) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_query_peer_msg(
    from_user_id text,
    to_user_id text,
    max_rows integer DEFAULT 100,
    with_empty boolean DEFAULT false)
RETURNS TABLE (msg_id bigint, msg_seq bigint, sender text, msg_type integer, sub_msg_type integer,
               msg_body text, media jsonb, payload text, msg_time timestamptz, is_empty integer)
AS 'MODULE_PATHNAME', 'zim_query_peer_msg'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.zim_query_peer_msg(text, text, integer, boolean) IS
'the messages of a one-to-one ZIM chat, newest first, up to max_rows';

REVOKE ALL ON FUNCTION @extschema@.zim_query_peer_msg(text, text, integer, boolean) FROM PUBLIC;

CREATE FUNCTION @extschema@.zim_query_group_msg(
    group_id text,
    max_rows integer DEFAULT 100,
    with_empty boolean DEFAULT false)
RETURNS TABLE (msg_id bigint, msg_seq bigint, sender text, msg_type integer, sub_msg_type integer,
               msg_body text, media jsonb, payload text, msg_time timestamptz, is_empty integer)
AS 'MODULE_PATHNAME', 'zim_query_group_msg'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION @extschema@.zim_query_group_msg(text, integer, boolean) IS
'the messages of a ZIM group, newest first, up to max_rows';

REVOKE ALL ON FUNCTION @extschema@.zim_query_group_msg(text, integer, boolean) FROM PUBLIC;
