--
-- input: every rule is checked before anything is sent
--
SELECT double('Reset')->'Code' AS reset;

-- NULL arguments and elements: 22004
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned(NULL, ARRAY['a'], 0, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', NULL, 0, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY['a'], NULL::int, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY['a'], NULL::int[], true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY['a'], 0, NULL)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY['a', NULL], 0, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY['a', 'b'], ARRAY[0, NULL], true)$$);
SELECT * FROM zim_try($$SELECT zim_api(NULL, '{}')$$);
SELECT * FROM zim_try($$SELECT zim_api('UserRegister', NULL)$$);

-- user ids: empty, over 32 bytes, a character outside the vendor's set
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('', ARRAY['a'], 0, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned(repeat('x', 33), ARRAY['a'], 0, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('a/b', ARRAY['a'], 0, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('a*b', ARRAY['a'], 0, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('ä', ARRAY['a'], 0, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned(E'a\tb', ARRAY['a'], 0, true)$$);
-- the longest id and every allowed special character pass the checks
-- (and fail at the service: the user is not registered)
SELECT state FROM zim_try($$SELECT * FROM zim_conv_pinned(repeat('x', 32), ARRAY['a'], 0, true)$$);
SELECT state FROM zim_try($$SELECT * FROM zim_conv_pinned('!#$%&()+-:;<=.>?@[]^_ {}|~', ARRAY['a'], 0, true)$$);

-- conversation ids: empty, over 32 bytes
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY['a', ''], 0, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY['a', repeat('y', 33)], 0, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY['a', repeat('é', 17)], 0, true)$$);

-- types: 0 or 2 only
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY['a'], 1, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY['a', 'b'], ARRAY[0, 3], true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY['a'], ARRAY[-1], true)$$);

-- arrays: same length, one dimension
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY['a', 'b'], ARRAY[0], true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY[['a', 'b'], ['c', 'd']], 0, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1', ARRAY['a', 'b'], ARRAY[[0], [0]], true)$$);

-- a bad element late in a long list fails the whole call before sending
SELECT * FROM zim_try($$SELECT * FROM zim_conv_pinned('u1',
    array_append(array_fill('ok'::text, ARRAY[60]), ''), 0, true)$$);

-- zim_api: action names and bodies
SELECT * FROM zim_try($$SELECT zim_api('', '{}')$$);
SELECT * FROM zim_try($$SELECT zim_api('User Register', '{}')$$);
SELECT * FROM zim_try($$SELECT zim_api('UserRegister&AppId=1', '{}')$$);
SELECT * FROM zim_try($$SELECT zim_api(repeat('A', 65), '{}')$$);
SELECT * FROM zim_try($$SELECT zim_api('UserRegister', '[1, 2]')$$);
SELECT * FROM zim_try($$SELECT zim_api('UserRegister', '"x"')$$);

-- nothing above (but the two valid calls) reached the double
SELECT double_requests() AS requests;

-- an empty array sends nothing and returns no rows, in both forms
SELECT * FROM zim_conv_pinned('u1', ARRAY[]::text[], 0, true);
SELECT * FROM zim_conv_pinned('u1', ARRAY[]::text[], ARRAY[]::int[], false);
SELECT double_requests() AS requests;
