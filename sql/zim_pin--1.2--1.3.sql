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
