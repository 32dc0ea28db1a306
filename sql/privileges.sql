--
-- privileges: sending is granted, the secret stays hidden, and a
-- non-superuser can neither redirect requests nor weaken TLS
--
SELECT double('Reset')->'Code' AS reset;
SELECT register('priv_a', 'priv_b');

CREATE ROLE zim_app NOLOGIN;
CREATE ROLE zim_reader NOLOGIN IN ROLE pg_read_all_settings;

-- EXECUTE is revoked from PUBLIC on everything that sends
SELECT p.oid::regprocedure AS function,
       has_function_privilege('zim_app', p.oid, 'EXECUTE') AS app_can_execute
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'zim_pin'
ORDER BY 1::text;

SET ROLE zim_app;
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('priv_a', ARRAY['priv_b'], 0, true)$$);
SELECT * FROM zim_try($$SELECT zim_api('UserRegister', '{}')$$);

-- the secret is invisible
-- (PostgreSQL's own wording of this refusal changed in 16: show the
-- SQLSTATE and that it names the setting)
SELECT state, message LIKE '%examine "zim_pin.server_secret"' AS refused_to_examine
FROM zim_try($$SHOW zim_pin.server_secret$$);
SELECT state, message LIKE '%examine "zim_pin.server_secret"' AS refused_to_examine
FROM zim_try($$SELECT current_setting('zim_pin.server_secret')$$);
SELECT count(*) AS rows_in_pg_settings FROM pg_settings WHERE name = 'zim_pin.server_secret';
SELECT count(*) AS rows_in_show_all FROM (SELECT 1) x
WHERE EXISTS (SELECT 1 FROM pg_show_all_settings() s WHERE s.name = 'zim_pin.server_secret');

-- and nothing that decides where requests go or how they are verified
-- can be set by an ordinary role
SELECT * FROM zim_try($$SET zim_pin.api_url = 'https://attacker.example/'$$);
SELECT * FROM zim_try($$SET zim_pin.ca_file = '/tmp/attacker.pem'$$);
SELECT * FROM zim_try($$SET zim_pin.app_id = '1'$$);
SELECT * FROM zim_try($$SET zim_pin.server_secret = 'x'$$);
SELECT * FROM zim_try($$SET zim_pin.max_convs_per_request = 100$$);
SELECT * FROM zim_try($$SELECT set_config('zim_pin.api_url', 'https://attacker.example/', false)$$);
SELECT * FROM zim_try($$SET zim_pin.proxy = 'http://attacker.example:3128'$$);
SELECT * FROM zim_try($$SELECT set_config('zim_pin.proxy', 'http://attacker.example:3128', false)$$);
SHOW zim_pin.proxy;
-- the worker's status and its errors are for monitoring roles only
SELECT state, message FROM zim_try($$SELECT * FROM zim_pin_worker$$);
SELECT state, message FROM zim_try($$SELECT * FROM zim_pin_worker_status()$$);
-- what an ordinary role may tune
SET zim_pin.timeout_ms = 3000;
SET zim_pin.connect_timeout_ms = 2000;
SET zim_pin.max_retries = 1;
RESET ROLE;

-- members of pg_read_all_settings see only the mask
SET ROLE zim_reader;
SHOW zim_pin.server_secret;
SELECT count(*) AS rows_in_pg_settings FROM pg_settings WHERE name = 'zim_pin.server_secret';
RESET ROLE;

-- members of pg_read_all_stats see the worker (this cluster names no
-- worker_database: the launcher's row alone, disabled)
CREATE ROLE zim_monitor NOLOGIN IN ROLE pg_read_all_stats;
SET ROLE zim_monitor;
SELECT database, pid, state, jobs_sent, last_error FROM zim_pin_worker;
SELECT state, message FROM zim_try($$SELECT * FROM zim_pin_job$$);
RESET ROLE;
DROP ROLE zim_monitor;
SELECT grantee, privilege_type FROM information_schema.role_table_grants
WHERE table_name = 'zim_pin_worker' AND grantee <> current_user
ORDER BY grantee, privilege_type;

-- what an administrator grants
GRANT EXECUTE ON FUNCTION zim_conv_pinned(text, text[], integer, boolean) TO zim_app;
SET ROLE zim_app;
SELECT * FROM zim_conv_pinned('priv_a', ARRAY['priv_b', 'nobody'], 0, true);
RESET ROLE;
SELECT * FROM double_pins('priv_a');

REVOKE ALL ON FUNCTION zim_conv_pinned(text, text[], integer, boolean) FROM zim_app;
DROP ROLE zim_app;
DROP ROLE zim_reader;
