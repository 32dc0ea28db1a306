--
-- faults: every network and answer fault gives its documented SQLSTATE,
-- transient ones are retried, and the backend keeps working
--
SELECT double('Reset')->'Code' AS reset;
SELECT register('pat', 'quinn');

CREATE FUNCTION pin_once() RETURNS bigint LANGUAGE sql AS
$$ SELECT count(*) FROM zim_conv_pinned('pat', ARRAY['quinn'], 0, true) $$;
CREATE FUNCTION fault(spec jsonb) RETURNS jsonb LANGUAGE sql AS
$$ SELECT double('Fault', spec || '{"Action": "ConvPinned"}')->'Code' $$;

-- transient failures that then succeed: retried, re-signed, no error
SELECT fault('{"Fault": "http500", "Count": 1}');
SELECT pin_once() AS failed;
SELECT fault('{"Fault": "http503", "Count": 1}');
SELECT pin_once() AS failed;
SELECT fault('{"Fault": "reset", "Count": 1}');
SELECT pin_once() AS failed;
SELECT fault('{"Fault": "truncated", "Count": 1}');
SELECT pin_once() AS failed;
SELECT fault('{"Fault": "code", "Code": 660300005, "Count": 2}');
SELECT pin_once() AS failed;
SELECT fault('{"Fault": "code", "Code": 1, "Count": 1}');
SELECT pin_once() AS failed;
SELECT fault('{"Fault": "code", "Code": 660000001, "Count": 1}');
SELECT pin_once() AS failed;
SELECT fault('{"Fault": "code", "Code": 660000003, "Count": 1}');
SELECT pin_once() AS failed;
SET zim_pin.timeout_ms = 300;
SELECT fault('{"Fault": "hang", "Count": 1}');
SELECT pin_once() AS failed;
RESET zim_pin.timeout_ms;
SELECT r->'Fault' AS fault, r->'Code' AS code
FROM jsonb_array_elements(double('State')->'Requests') r
WHERE r->>'Action' = 'ConvPinned';

-- the same faults, persisting past the retries allowed
SELECT double('Reset')->'Code' AS reset;
SELECT register('pat', 'quinn');
SET zim_pin.max_retries = 1;
SELECT fault('{"Fault": "http503", "Count": 2}');
SELECT * FROM zim_try('SELECT pin_once()');
SELECT fault('{"Fault": "reset", "Count": 2}');
SELECT * FROM zim_try('SELECT pin_once()');
SELECT fault('{"Fault": "truncated", "Count": 2}');
SELECT * FROM zim_try('SELECT pin_once()');
SET zim_pin.timeout_ms = 300;
SELECT fault('{"Fault": "hang", "Count": 2}');
SELECT * FROM zim_try('SELECT pin_once()');
RESET zim_pin.timeout_ms;
SELECT fault('{"Fault": "code", "Code": 660300005, "Count": 2}');
SELECT * FROM zim_try('SELECT pin_once()');
SELECT fault('{"Fault": "code", "Code": 7, "Count": 2}');
SELECT * FROM zim_try('SELECT pin_once()');
SELECT fault('{"Fault": "code", "Code": 660000001, "Count": 2}');
SELECT * FROM zim_try('SELECT pin_once()');
SELECT double_requests() AS requests;

-- with no retries allowed, one request each
SELECT double('Reset')->'Code' AS reset;
SELECT register('pat', 'quinn');
SET zim_pin.max_retries = 0;
SELECT fault('{"Fault": "http500", "Count": 1}');
SELECT * FROM zim_try('SELECT pin_once()');
SELECT double_requests() AS requests;
RESET zim_pin.max_retries;

-- answers that are not ZIM answers: ZP005, not retried, first bytes shown
SELECT double('Reset')->'Code' AS reset;
SELECT register('pat', 'quinn');
SELECT fault('{"Fault": "nonjson", "Count": 1}');
SELECT * FROM zim_try('SELECT pin_once()');
SELECT fault('{"Fault": "wrongtypes", "Count": 1}');
SELECT * FROM zim_try('SELECT pin_once()');
SELECT fault('{"Fault": "oversized", "Count": 1}');
SELECT * FROM zim_try('SELECT pin_once()');
SELECT double_requests() AS requests;

-- permanent Codes are not retried
SELECT double('Reset')->'Code' AS reset;
SELECT register('pat', 'quinn');
SELECT fault('{"Fault": "code", "Code": 660000002, "Count": 1}');
SELECT * FROM zim_try('SELECT pin_once()');
SELECT fault('{"Fault": "code", "Code": 2, "Count": 1}');
SELECT * FROM zim_try('SELECT pin_once()');
SELECT fault('{"Fault": "code", "Code": 100000016, "Message": "app not configured for production", "Count": 1}');
SELECT * FROM zim_try('SELECT pin_once()');
SELECT double_requests() AS requests;

-- a failure in a later chunk says what was already changed
SELECT double('Reset')->'Code' AS reset;
SELECT register('pat', 'quinn');
SET zim_pin.max_convs_per_request = 2;
SELECT fault('{"Fault": "code", "Code": 660000002, "Count": 1, "Match": "\"c\""}');
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('pat', ARRAY['a', 'b', 'c', 'd', 'e', 'f'], 2, true)$$);
-- (chunks go out concurrently: their order at the double varies)
SELECT * FROM double_pins('pat') ORDER BY 1;
RESET zim_pin.max_convs_per_request;

-- statement_timeout during a hung request: 57014, the server's own message
SET statement_timeout = '400ms';
SELECT fault('{"Fault": "hang", "Count": 1}');
SELECT pin_once();
RESET statement_timeout;
-- the backend is fine, and the next call works
SELECT pin_once() AS failed;
SELECT * FROM double_pins('pat') p WHERE p = 'quinn/0';
