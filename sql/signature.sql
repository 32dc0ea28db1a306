--
-- signature: the v2.0 signature and fresh nonces
--

-- the vendor's test vector
SELECT zim_pin_signature(12345, '4fd24687296dd9f3',
                         '9193cc662a4c0ec135ec71fb57194b38', 1615186943)
       = '43e5cfcca828314675f91b001390566a' AS vendor_vector;

-- AppIds above 2^31 sign like the decimal string
SELECT zim_pin_signature(4294967295, '0123456789abcdef', 's3cret', 1700000000)
       = md5('4294967295' || '0123456789abcdef' || 's3cret' || '1700000000') AS big_app_id;

SELECT * FROM zim_try($$SELECT zim_pin_signature(0, 'n', 's', 1)$$);
SELECT * FROM zim_try($$SELECT zim_pin_signature(4294967296, 'n', 's', 1)$$);
SELECT * FROM zim_try($$SELECT zim_pin_signature(1, NULL, 's', 1)$$);

-- every request gets a fresh 16-hex-digit nonce, retries included
SELECT double('Reset')->'Code' AS reset;
SELECT register('sig_a', 'sig_b', 'sig_c');
SELECT double('Fault', '{"Fault": "http503", "Count": 2, "Action": "ConvPinned"}')->'Code' AS fault;
SELECT count(*) AS failed FROM zim_conv_pinned('sig_a', ARRAY['sig_b', 'sig_c'], 0, true);
SELECT count(*) AS requests,
       count(DISTINCT r->>'Nonce') AS distinct_nonces,
       bool_and(r->>'Nonce' ~ '^[0-9a-f]{16}$') AS nonces_are_hex
FROM jsonb_array_elements(double('State')->'Requests') r;
