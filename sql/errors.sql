--
-- errors: one case for every row of the contract's SQLSTATE table that the
-- other tests do not already produce
--
SELECT double('Reset')->'Code' AS reset;
SELECT register('rita', 'sam');

-- ZP003: a wrong secret (the double now expects another one), a wrong AppId
SELECT double('Config', '{"SecretRotated": true}')->'Code' AS rotated;
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('rita', ARRAY['sam'], 0, true)$$);
SELECT double('Config', '{"SecretRotated": false}')->'Code' AS restored;
SET zim_pin.app_id = '1';
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('rita', ARRAY['sam'], 0, true)$$);
RESET zim_pin.app_id;
-- zim_api returns the gateway's answer instead of raising
SET zim_pin.app_id = '1';
SELECT r->'Code' AS code FROM zim_api('UserRegister', '{"UserInfo": []}') r;
RESET zim_pin.app_id;

-- ZP004: the user is not registered
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('tom', ARRAY['sam'], 0, true)$$);

-- ZP001: any other Code for the whole call
SELECT double('Fault', '{"Fault": "code", "Code": 100000017, "Message": "app not enabled for ZIM", "Count": 1}')->'Code' AS fault;
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('rita', ARRAY['sam'], 0, true)$$);

-- 08001: nothing listens there (retried, then reported)
SET zim_pin.api_url = 'https://127.0.0.1:1/';
SET zim_pin.max_retries = 1;
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('rita', ARRAY['sam'], 0, true)$$);
SELECT * FROM zim_try($$SELECT zim_api('UserRegister', '{}')$$);
RESET zim_pin.max_retries;
RESET zim_pin.api_url;

-- 08001: the certificate is not signed by the configured CA
\getenv certdir ZIM_CERT_DIR
SELECT set_config('zim_pin.ca_file', :'certdir' || '/wrong_ca.crt', false) IS NOT NULL AS wrong_ca_set;
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('rita', ARRAY['sam'], 0, true)$$);
-- ... or the system store, which does not know the test CA
SET zim_pin.ca_file = '';
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('rita', ARRAY['sam'], 0, true)$$);
-- ... or a file that does not exist
SET zim_pin.ca_file = '/nonexistent/ca.pem';
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('rita', ARRAY['sam'], 0, true)$$);
RESET zim_pin.ca_file;
-- the certificate names localhost too
\getenv port ZIM_PORT
SELECT set_config('zim_pin.api_url', 'https://localhost:' || :'port' || '/', false) IS NOT NULL AS url_set;
SELECT * FROM zim_conv_pinned('rita', ARRAY['sam'], 0, true);
RESET zim_pin.api_url;

-- 08006: the request timed out (ConvPinned retries it: 2 requests here)
SELECT double('Reset')->'Code' AS reset;
SELECT register('rita', 'sam');
SET zim_pin.max_retries = 1;
SET zim_pin.timeout_ms = 200;
SELECT double('Config', '{"LatencyMs": 1000}')->'Code' AS slow;
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('rita', ARRAY['sam'], 0, true)$$);
SELECT double('Config', '{"LatencyMs": 0}')->'Code' AS fast;
RESET zim_pin.timeout_ms;
RESET zim_pin.max_retries;
SELECT double_requests() AS requests;

-- after all of that the backend still works
SELECT * FROM zim_conv_pinned('rita', ARRAY['sam'], 0, true);
SELECT * FROM double_pins('rita');
