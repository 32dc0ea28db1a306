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

-- zim_pin.proxy: reloadable, so no session may SET it (nor a function)
SHOW zim_pin.proxy;
SELECT * FROM zim_try($$SET zim_pin.proxy = 'http://127.0.0.1:1'$$);
SELECT * FROM zim_try($$SELECT set_config('zim_pin.proxy', 'http://127.0.0.1:1', false)$$);
SELECT * FROM zim_try($$ALTER ROLE CURRENT_USER SET zim_pin.proxy = 'http://127.0.0.1:1'$$);
-- ALTER SYSTEM checks the value: an HTTP CONNECT proxy with a port, no
-- path; the refusal never quotes the value
ALTER SYSTEM SET zim_pin.proxy = 'https://proxy.example:3128';
ALTER SYSTEM SET zim_pin.proxy = 'socks5://proxy.example:1080';
ALTER SYSTEM SET zim_pin.proxy = 'proxy.example:3128';
ALTER SYSTEM SET zim_pin.proxy = 'http://proxy.example';
ALTER SYSTEM SET zim_pin.proxy = 'http://proxy.example:';
ALTER SYSTEM SET zim_pin.proxy = 'http://proxy.example:0';
ALTER SYSTEM SET zim_pin.proxy = 'http://proxy.example:65536';
ALTER SYSTEM SET zim_pin.proxy = 'http://proxy.example:3128x';
ALTER SYSTEM SET zim_pin.proxy = 'http://proxy.example:3128/path';
ALTER SYSTEM SET zim_pin.proxy = 'http://proxy.example:3128?q';
ALTER SYSTEM SET zim_pin.proxy = 'http://:3128';
ALTER SYSTEM SET zim_pin.proxy = 'http://-proxy:3128';
ALTER SYSTEM SET zim_pin.proxy = 'http://pro_xy:3128';
ALTER SYSTEM SET zim_pin.proxy = 'http://[::1:3128';
ALTER SYSTEM SET zim_pin.proxy = 'http://[::1]3128';
ALTER SYSTEM SET zim_pin.proxy = 'http://pro xy:3128';
ALTER SYSTEM SET zim_pin.proxy = E'http://proxy\u00e9:3128';
ALTER SYSTEM SET zim_pin.proxy = 'http://user@proxy.example:3128';
ALTER SYSTEM SET zim_pin.proxy = 'http://user:@proxy.example:3128';
ALTER SYSTEM SET zim_pin.proxy = 'http://:pw@proxy.example:3128';
ALTER SYSTEM SET zim_pin.proxy = 'http://user:p%zzw@proxy.example:3128';
ALTER SYSTEM SET zim_pin.proxy = 'http://user:p%0aw@proxy.example:3128';
ALTER SYSTEM SET zim_pin.proxy = 'http://user:pw%@proxy.example:3128';
SELECT 'http://' || repeat('a', 1100) || ':1' AS long \gset
ALTER SYSTEM SET zim_pin.proxy = :'long';
-- accepted: a name, IPv4, IPv6, a trailing slash, credentials
ALTER SYSTEM SET zim_pin.proxy = 'HTTP://Proxy.Example:3128/';
ALTER SYSTEM SET zim_pin.proxy = 'http://10.0.0.1:8080';
ALTER SYSTEM SET zim_pin.proxy = 'http://[2001:db8::1]:8080';
ALTER SYSTEM SET zim_pin.proxy = 'http://user:p%40ss:word@proxy.example:3128';
ALTER SYSTEM RESET zim_pin.proxy;
SELECT count(*) AS proxy_in_auto_conf
FROM pg_file_settings WHERE name = 'zim_pin.proxy';
SHOW zim_pin.proxy;
