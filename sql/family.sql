--
-- family: the conversation family's writing functions -- mute, delete,
-- clear unread: input checks, failure rows, requests per Action, GET
--
SELECT double('Reset')->'Code' AS reset;

-- input is checked before anything is sent, with zim_conv_pinned's SQLSTATEs
SELECT * FROM zim_try($$SELECT * FROM zim_silence_conv_notification(NULL, ARRAY['a'], 0, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_silence_conv_notification('fam_a', ARRAY['a'], 0, NULL)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_silence_conv_notification('fam_a', ARRAY['a', NULL], 0, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_silence_conv_notification('fam_a', ARRAY['a'], 1, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_silence_conv_notification('fam_a', ARRAY['a', 'b'], ARRAY[0], true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_delete_conv('fam/a', ARRAY['a'], 0)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_delete_conv('fam_a', ARRAY[''], 0)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_delete_conv('fam_a', ARRAY[repeat('x', 33)], 2)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_clear_conversation_unread('fam_a', ARRAY[['a'], ['b']], ARRAY[[0], [0]])$$);
SELECT * FROM zim_try($$SELECT * FROM zim_clear_conversation_unread('fam_a', NULL, 0)$$);
SELECT double_requests() AS requests_sent;

-- an empty array sends nothing and returns no rows
SELECT * FROM zim_silence_conv_notification('fam_a', '{}', 0, true);
SELECT * FROM zim_delete_conv('fam_a', '{}', ARRAY[]::int[]);
SELECT * FROM zim_set_conv_mark('fam_a', '{}', 2, 1, true);
SELECT * FROM zim_clear_conversation_unread('fam_a', '{}', 0);
SELECT double_requests() AS requests_sent;

-- ---- SilenceConvNotification --------------------------------------------
SELECT register('fam_a', 'fam_b', 'fam_c');
SELECT double('Seed', '{"Groups": {"fg1": ["fam_a", "fam_b"], "fg2": ["fam_b"]}}')->'Code' AS seeded;

-- mute a peer and groups: the group fam_a is not in, and a peer who is not
-- registered, come back as rows, each with the type it asked for
SELECT * FROM zim_silence_conv_notification('fam_a', ARRAY['fam_b', 'fg1', 'fg2', 'ghost'],
                                            ARRAY[0, 2, 2, 0], true)
ORDER BY conv_id;
SELECT m->>'ConvId' AS conv_id, m->>'ConvType' AS conv_type
FROM jsonb_array_elements(double('State', '{"UserId": "fam_a"}')->'Mutes') m ORDER BY 1;

-- every conversation failed: ZIM answers a Code with the full list; rows, not an error
SELECT * FROM zim_silence_conv_notification('fam_a', ARRAY['fg2', 'ghost', 'ghost2'], ARRAY[2, 0, 0], true)
ORDER BY conv_id;

-- muting what is muted is no row (660800051 says the state holds), even
-- when ZIM answers every conversation so
SELECT * FROM zim_silence_conv_notification('fam_a', ARRAY['fam_b'], 0, true);
SELECT * FROM zim_silence_conv_notification('fam_a', ARRAY['fam_b', 'fg1'], ARRAY[0, 2], true);
-- unmute, twice (660800052 the second time)
SELECT * FROM zim_silence_conv_notification('fam_a', ARRAY['fam_b'], 0, false);
SELECT * FROM zim_silence_conv_notification('fam_a', ARRAY['fam_b'], 0, false);
SELECT m->>'ConvId' AS conv_id FROM jsonb_array_elements(double('State', '{"UserId": "fam_a"}')->'Mutes') m;

-- a request holds at most 10 conversations, all of one type: 23 peers and
-- 4 groups, mixed, are 3 + 1 requests
SELECT double('Reset')->'Code' AS reset;
SELECT register('fam_a');
SELECT double('Seed', jsonb_build_object('Users', (SELECT jsonb_agg('fp' || i) FROM generate_series(1, 23) i),
       'Groups', (SELECT jsonb_object_agg('fgr' || i, jsonb_build_array('fam_a')) FROM generate_series(1, 4) i)))->'Code' AS seeded;
SELECT count(*) AS rows
FROM zim_silence_conv_notification('fam_a',
       ARRAY['fgr1'] || ARRAY(SELECT 'fp' || i FROM generate_series(1, 12) i) || ARRAY['fgr2', 'fgr3']
         || ARRAY(SELECT 'fp' || i FROM generate_series(13, 23) i) || ARRAY['fgr4'],
       ARRAY[2] || array_fill(0, ARRAY[12]) || ARRAY[2, 2] || array_fill(0, ARRAY[11]) || ARRAY[2],
       true);
SELECT jsonb_agg(r->'Convs' ORDER BY (r->>'Convs')::int DESC) AS request_sizes
FROM jsonb_array_elements(double('State')->'Requests') r WHERE r->>'Action' = 'SilenceConvNotification';
SELECT jsonb_array_length(double('State', '{"UserId": "fam_a"}')->'Mutes') AS mutes;

-- the mute list's limit: 660800030 for the one past it
SELECT double('Config', '{"MaxMutes": 24}')->'Code' AS config;
SELECT register('fam_x', 'fam_y');
SELECT * FROM zim_silence_conv_notification('fam_a', ARRAY['fam_x', 'fam_y'], 0, true);

-- a Code for the whole request, with no list, raises
SELECT double('Fault', '{"Fault": "code", "Code": 660000002, "Action": "SilenceConvNotification"}')->'Code' AS fault;
SELECT * FROM zim_try($$SELECT * FROM zim_silence_conv_notification('fam_a', ARRAY['fam_x'], 0, false)$$);

-- ---- DeleteConv ---------------------------------------------------------
SELECT double('Reset')->'Code' AS reset;
SELECT register('fam_a', 'fam_b');
SELECT double('Seed', '{"Groups": {"fg1": ["fam_a", "fam_b"]},
  "Conversations": [{"UserId": "fam_a", "ConvId": "fam_b", "ConvType": 0},
                    {"UserId": "fam_a", "ConvId": "fg1", "ConvType": 2},
                    {"UserId": "fam_b", "ConvId": "fam_a", "ConvType": 0}]}')->'Code' AS seeded;
-- deleted for fam_a only: fam_b keeps its side of the chat
SELECT * FROM zim_delete_conv('fam_a', ARRAY['fam_b', 'fg1'], ARRAY[0, 2]);
SELECT u, c->>'ConvId' AS conv_id
FROM unnest(ARRAY['fam_a', 'fam_b']) u,
     jsonb_array_elements(double('State', jsonb_build_object('UserId', u))->'Conversations') c;
-- one request per conversation; deleting what is gone is no row
SELECT count(*) AS rows FROM zim_delete_conv('fam_a', ARRAY(SELECT 'c' || i FROM generate_series(1, 5) i), 0);
SELECT count(*) AS delete_requests
FROM jsonb_array_elements(double('State')->'Requests') r WHERE r->>'Action' = 'DeleteConv';
-- a Code that concerns only that conversation is its row; the others are sent
SELECT double('Fault', '{"Fault": "code", "Code": 660800002, "Message": "no such conversation", "Action": "DeleteConv", "Match": "gone"}')->'Code' AS fault;
SELECT * FROM zim_delete_conv('fam_a', ARRAY['gone', 'fam_b'], 0);
-- a transient Code is retried, re-signed
SELECT double('Fault', '{"Fault": "code", "Code": 660000001, "Action": "DeleteConv"}')->'Code' AS fault;
SELECT * FROM zim_delete_conv('fam_a', ARRAY['fam_b'], 0);
-- an unregistered user fails the whole call: ZP004
SELECT * FROM zim_try($$SELECT * FROM zim_delete_conv('nobody', ARRAY['fam_b'], 0)$$);

-- ---- ClearConversationUnread: a GET ---------------------------------------
SELECT double('Reset')->'Code' AS reset;
SELECT register('a+b &c#d=e?f%g h', 'fam_b');
SELECT double('Seed', '{"Conversations": [{"UserId": "a+b &c#d=e?f%g h", "ConvId": "fam_b", "ConvType": 0, "Unread": 5},
                                          {"UserId": "a+b &c#d=e?f%g h", "ConvId": "fg 1&2", "ConvType": 2, "Unread": 3}]}')->'Code' AS seeded;
SELECT * FROM zim_clear_conversation_unread('a+b &c#d=e?f%g h', ARRAY['fam_b', 'fg 1&2', 'nowhere'], ARRAY[0, 2, 0]);
SELECT c->>'ConvId' AS conv_id, c->'Unread' AS unread
FROM jsonb_array_elements(double('State', '{"UserId": "a+b &c#d=e?f%g h"}')->'Conversations') c ORDER BY 1;
SELECT r->>'Method' AS method, count(*)
FROM jsonb_array_elements(double('State')->'Requests') r WHERE r->>'Action' = 'ClearConversationUnread'
GROUP BY 1;

-- every Action is counted on its own in the statistics
SELECT action, requests > 0 AS sent
FROM zim_pin_stats WHERE action IN ('SilenceConvNotification', 'DeleteConv', 'ClearConversationUnread')
ORDER BY 1;

-- ---- SetConvMark --------------------------------------------------------
SELECT double('Reset')->'Code' AS reset;
SELECT register('fam_m', 'fam_b');
SELECT * FROM zim_try($$SELECT * FROM zim_set_conv_mark('fam_m', ARRAY['fam_b'], 0, 0, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_set_conv_mark('fam_m', ARRAY['fam_b'], 0, 31, true)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_set_conv_mark('fam_m', ARRAY['fam_b'], 0, 5, NULL)$$);
-- set mark 5 on a peer and two groups (a conversation named twice is one key)
SELECT * FROM zim_set_conv_mark('fam_m', ARRAY['fam_b', 'fg1', 'fg2', 'fg1'], ARRAY[0, 2, 2, 2], 5, true);
SELECT * FROM zim_set_conv_mark('fam_m', ARRAY['fg1'], 2, 7, true);
SELECT m->>'ConvId' AS conv_id, m->'Marks' AS marks
FROM jsonb_array_elements(double('State', '{"UserId": "fam_m"}')->'Marks') m ORDER BY 1;
-- cancel
SELECT * FROM zim_set_conv_mark('fam_m', ARRAY['fg1', 'fg2'], 2, 5, false);
SELECT m->>'ConvId' AS conv_id, m->'Marks' AS marks
FROM jsonb_array_elements(double('State', '{"UserId": "fam_m"}')->'Marks') m ORDER BY 1;
-- a request holds one user's entry with at most 100 conversations a map:
-- 230 groups and 50 peers are three requests (150, 100 and 30; the calls
-- above sent 3, 1 and 2)
SELECT count(*) AS rows
FROM zim_set_conv_mark('fam_m',
       ARRAY(SELECT 'mg' || i FROM generate_series(1, 230) i) || ARRAY(SELECT 'mp' || i FROM generate_series(1, 50) i),
       array_fill(2, ARRAY[230]) || array_fill(0, ARRAY[50]), 3, true);
SELECT jsonb_agg(r->'Convs' ORDER BY (r->>'Convs')::int DESC) AS request_sizes
FROM jsonb_array_elements(double('State')->'Requests') r WHERE r->>'Action' = 'SetConvMark';
-- inner FailList entries are rows, with their Code and Message
SELECT double('Fault', '{"Fault": "body", "Action": "SetConvMark", "Body": "{\"Code\":0,\"Message\":\"success\",\"RequestId\":\"r1\",\"FailList\":[{\"SubCode\":0,\"UserId\":\"fam_m\",\"FailList\":[{\"Code\":1,\"Message\":\"mark content is invalid\",\"ConvId\":\"fg2\",\"ConvType\":2}]}]}"}')->'Code' AS fault;
SELECT * FROM zim_set_conv_mark('fam_m', ARRAY['fam_b', 'fg2'], ARRAY[0, 2], 9, true);
-- a user-level SubCode with no inner list fails each conversation of the entry
SELECT double('Fault', '{"Fault": "body", "Action": "SetConvMark", "Body": "{\"Code\":660800054,\"Message\":\"all failed\",\"RequestId\":\"r2\",\"FailList\":[{\"SubCode\":1,\"SubMessage\":\"user not exist\",\"UserId\":\"fam_m\"}]}"}')->'Code' AS fault;
SELECT * FROM zim_set_conv_mark('fam_m', ARRAY['fam_b', 'fg2'], ARRAY[0, 2], 9, true) ORDER BY conv_id;
-- a whole-call Code with no list raises
SELECT double('Fault', '{"Fault": "code", "Code": 660800001, "Action": "SetConvMark"}')->'Code' AS fault;
SELECT * FROM zim_try($$SELECT * FROM zim_set_conv_mark('fam_m', ARRAY['fam_b'], 0, 9, true)$$);
