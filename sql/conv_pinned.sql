--
-- conv_pinned: pinning, failure rows, chunking, the 100-pin limit, pacing
--
SELECT double('Reset')->'Code' AS reset;
SELECT register('alice', 'bob', 'carol', 'dave');

-- pin two peers and a group; nothing failed, so no rows
SELECT * FROM zim_conv_pinned('alice', ARRAY['bob', 'carol', 'team-1'], ARRAY[0, 0, 2], true);
SELECT * FROM double_pins('alice');

-- the one-type form; re-pinning a pinned conversation is not a failure
SELECT * FROM zim_conv_pinned('alice', ARRAY['g1', 'g2', 'team-1'], 2, true);
SELECT * FROM double_pins('alice');

-- unpin
SELECT * FROM zim_conv_pinned('alice', ARRAY['carol', 'g1'], ARRAY[0, 2], false);
SELECT * FROM double_pins('alice');

-- partial success: the peers that are not registered come back as rows,
-- ready to join against the application's tables
CREATE TABLE app_user (user_id text PRIMARY KEY, email text);
INSERT INTO app_user VALUES ('bob', 'bob@example.com'), ('ghost1', 'ghost1@example.com'),
                            ('ghost2', 'ghost2@example.com');
SELECT f.conv_id, f.conv_type, f.sub_code, u.email
FROM zim_conv_pinned('dave', ARRAY['bob', 'ghost1', 'ghost2'], 0, true) f
JOIN app_user u ON u.user_id = f.conv_id
ORDER BY f.conv_id;
SELECT * FROM double_pins('dave');

-- every conversation failed: the service answers a non-zero Code with a
-- full ErrorList; that is rows, not an error
SELECT conv_id, conv_type, sub_code, sub_message IS NOT NULL AS has_message
FROM zim_conv_pinned('dave', ARRAY['ghost1', 'ghost2'], 0, true)
ORDER BY conv_id;

-- chunking: 45 conversations are three requests of 20, 20 and 5
SELECT double('Reset')->'Code' AS reset;
SELECT register('erin');
SELECT count(*) AS failed
FROM zim_conv_pinned('erin', ARRAY(SELECT 'grp' || g FROM generate_series(1, 45) g), 2, true);
SELECT jsonb_agg(r->'Convs' ORDER BY (r->>'Convs')::int DESC) AS chunk_sizes
FROM jsonb_array_elements(double('State')->'Requests') r WHERE r->>'Action' = 'ConvPinned';
SELECT count(*) AS pins FROM double_pins('erin');

-- the chunk size is a setting
SET zim_pin.max_convs_per_request = 7;
SELECT count(*) AS failed
FROM zim_conv_pinned('erin', ARRAY(SELECT 'grp' || g FROM generate_series(1, 15) g), 2, false);
SELECT jsonb_agg(r->'Convs' ORDER BY (r->>'Convs')::int DESC) AS chunk_sizes
FROM jsonb_array_elements(double('State')->'Requests') r WHERE r->>'Action' = 'ConvPinned';
RESET zim_pin.max_convs_per_request;

-- 110 pins: a user may have 100, so ten rows of 660800048 (which ten depends
-- on the order in which the concurrent requests arrive)
SELECT double('Reset')->'Code' AS reset;
SELECT register('frank');
SELECT sub_code, count(*)
FROM zim_conv_pinned('frank', ARRAY(SELECT 'g' || lpad(g::text, 3, '0') FROM generate_series(1, 110) g), 2, true)
GROUP BY sub_code;
SELECT count(*) AS pins FROM double_pins('frank');

-- pacing: 45 one-conversation requests never exceed 20 in any second as
-- the double counts them, and the double never had to refuse one
SELECT double('Reset')->'Code' AS reset;
SELECT register('gina');
SET zim_pin.max_convs_per_request = 1;
SELECT count(*) AS failed
FROM zim_conv_pinned('gina', ARRAY(SELECT 'p' || g FROM generate_series(1, 45) g), 2, true);
RESET zim_pin.max_convs_per_request;
SELECT (s->'MaxInAnyWindow'->>'ConvPinned')::int <= 20 AS within_limit,
       coalesce(s->'RateLimited'->'ConvPinned', '0') AS refused,
       jsonb_array_length(s->'Requests') AS requests
FROM double('State') s;

-- connection reuse: many calls, one connection
SELECT double('Reset')->'Code' AS reset;
SELECT register('hank');
SELECT count(*) AS failed
FROM generate_series(1, 30) i, zim_conv_pinned('hank', ARRAY['c' || i], 2, i % 2 = 0);
SELECT (s->'Connections')::int AS new_connections,
       jsonb_array_length(s->'Requests') AS requests,
       (SELECT count(DISTINCT r->'Connection') FROM jsonb_array_elements(s->'Requests') r) AS connections_used
FROM double('State') s;
