--
-- setup: the extension and the helpers the other tests use
--
CREATE EXTENSION zim_pin;
SELECT extversion FROM pg_extension WHERE extname = 'zim_pin';

-- What a failing statement raised: SQLSTATE, message, detail and hint,
-- with the volatile parts (request ids, timings, ports) masked.
CREATE FUNCTION zim_try(stmt text,
    OUT state text, OUT message text, OUT detail text, OUT hint text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    state := '00000';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE,
        message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
        hint = PG_EXCEPTION_HINT;
    detail := regexp_replace(detail, 'RequestId [0-9a-f]+', 'RequestId <id>', 'g');
    detail := regexp_replace(detail, '[0-9]+ (ms|milliseconds)', 'N \1', 'g');
    detail := regexp_replace(detail, 'port [0-9]+', 'port N', 'g');
    detail := nullif(detail, '');
    hint := nullif(hint, '');
END
$$;

-- Talk to the double's test Actions (signed like any other call).
CREATE FUNCTION double(action text, body jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE sql AS $$ SELECT zim_api('Test' || action, body) $$;

-- How many requests of real Actions the double has received since reset.
CREATE FUNCTION double_requests() RETURNS bigint LANGUAGE sql AS
$$ SELECT jsonb_array_length(double('State')->'Requests') $$;

-- A user's pins as the double records them.
CREATE FUNCTION double_pins(user_id text) RETURNS SETOF text LANGUAGE sql AS
$$ SELECT p->>'ConvId' || '/' || (p->>'ConvType')
   FROM jsonb_array_elements(double('State', jsonb_build_object('UserId', user_id))->'Pins') p $$;

-- Register users with the vendor's UserRegister.
CREATE FUNCTION register(VARIADIC ids text[]) RETURNS bigint LANGUAGE sql AS $$
    SELECT (zim_api('UserRegister', jsonb_build_object('UserInfo',
        (SELECT jsonb_agg(jsonb_build_object('UserId', id, 'UserName', id, 'UserAvatar', ''))
         FROM unnest(ids) id)))->>'Code')::bigint
$$;

SELECT double('Reset')->'Code' AS reset;
