--
-- settings: names, defaults, checks and the hidden secret
--
SELECT name, vartype, context, boot_val
FROM pg_settings WHERE name LIKE 'zim_pin.%' ORDER BY name;

-- the secret is never shown, not even to a superuser
SHOW zim_pin.server_secret;
SELECT current_setting('zim_pin.server_secret');
SELECT count(*) FROM pg_settings WHERE name = 'zim_pin.server_secret';
SHOW zim_pin.app_id;

-- the AppId is an unsigned 32-bit decimal
SET zim_pin.app_id = '4294967295';
SHOW zim_pin.app_id;
SET zim_pin.app_id = '4294967296';
SET zim_pin.app_id = '0';
SET zim_pin.app_id = '-1';
SET zim_pin.app_id = '12ab';
SET zim_pin.app_id = ' 12';
RESET zim_pin.app_id;

-- https only, and nothing that would change the query string
SET zim_pin.api_url = 'http://127.0.0.1/';
SET zim_pin.api_url = 'ftp://example.com/';
SET zim_pin.api_url = 'https://';
SET zim_pin.api_url = 'https://example.com/?x=1';
SET zim_pin.api_url = 'https://example.com/ x';
SET zim_pin.api_url = 'HTTPS://zim-api-fra.zego.im/';
RESET zim_pin.api_url;

SET zim_pin.max_convs_per_request = 0;
SET zim_pin.max_convs_per_request = 101;
SET zim_pin.max_retries = -1;
-- (PostgreSQL 17 added units to this message: show the SQLSTATE and text)
SELECT state, message LIKE '0 ms is outside the valid range for parameter "zim_pin.timeout_ms" (1%' AS out_of_range
FROM zim_try($$SET zim_pin.timeout_ms = 0$$);
SET zim_pin.requests_per_second = 5;

-- the prefix is reserved: no placeholders
SET zim_pin.no_such_setting = 'x';

-- missing credentials are 55000, before anything is sent
SELECT double('Reset')->'Code' AS reset;
SET zim_pin.server_secret = '';
SHOW zim_pin.server_secret;
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY['u2'], 0, true)$$);
SELECT * FROM zim_try($$SELECT zim_api('UserRegister', '{}')$$);
RESET zim_pin.server_secret;
SHOW zim_pin.server_secret;
SET zim_pin.app_id = '';
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY['u2'], 0, true)$$);
RESET zim_pin.app_id;

-- a secret only from the configuration file: never from SET, ALTER ROLE,
-- ALTER DATABASE or a function's SET clause (which store or show it where
-- other roles can read it), and the refusal never quotes the value
SELECT * FROM zim_try($$SET zim_pin.server_secret = 'a-value-never-stored'$$);
SELECT * FROM zim_try($$SET LOCAL zim_pin.server_secret = 'a-value-never-stored'$$);
SELECT * FROM zim_try($$SELECT set_config('zim_pin.server_secret', 'a-value-never-stored', false)$$);
SELECT * FROM zim_try($$ALTER ROLE CURRENT_USER SET zim_pin.server_secret = 'a-value-never-stored'$$);
SELECT * FROM zim_try(format('ALTER DATABASE %I SET zim_pin.server_secret = %L', current_database(), 'a-value-never-stored'));
SELECT * FROM zim_try($$ALTER ROLE ALL SET zim_pin.server_secret = 'a-value-never-stored'$$);
SELECT * FROM zim_try($$CREATE FUNCTION leaky() RETURNS int LANGUAGE sql SET zim_pin.server_secret = 'a-value-never-stored' AS 'SELECT 1'$$);
SELECT count(*) AS stored_anywhere FROM pg_db_role_setting
WHERE array_to_string(setconfig, ' ') LIKE '%a-value-never-stored%';
SELECT count(*) AS in_functions FROM pg_proc
WHERE array_to_string(proconfig, ' ') LIKE '%a-value-never-stored%';
-- an empty one (no secret) is accepted from anywhere
SELECT * FROM zim_try($$ALTER ROLE CURRENT_USER SET zim_pin.server_secret = ''$$);
ALTER ROLE CURRENT_USER RESET zim_pin.server_secret;

-- SET LOCAL of the secret ends with the transaction
BEGIN;
SET LOCAL zim_pin.server_secret = '';
SELECT (zim_try($$SELECT zim_api('UserRegister', '{}')$$)).state;
COMMIT;
SELECT (zim_api('UserRegister', '{"UserInfo": []}'))->'Code' AS code_after_commit;
SELECT double_requests() AS requests;
