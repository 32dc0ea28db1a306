--
-- family_read: the conversation family's reading functions -- the
-- conversation list and messages as rows, paged
--
SELECT double('Reset')->'Code' AS reset;
SELECT register('fr_a', 'fr_b');

-- input
SELECT * FROM zim_try($$SELECT * FROM zim_query_conversation_list(NULL)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_query_conversation_list('fr_a', 0)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_query_conversation_list('fr_a', NULL)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_query_peer_msg('fr_a', '')$$);
SELECT * FROM zim_try($$SELECT * FROM zim_query_group_msg('', 10)$$);
SELECT * FROM zim_try($$SELECT * FROM zim_query_peer_msg('fr_a', 'fr_b', 10, NULL)$$);
SELECT double_requests() AS requests_sent;

-- ---- QueryConversationList: 1,200 conversations, ZIM lists the latest 1,000
SELECT double('Seed', '{"GenerateConversations": {"UserId": "fr_a", "Count": 1200, "GroupEvery": 3,
                        "StartTime": 1767225600000, "StepMs": 1000}}')->'Code' AS seeded;
SELECT count(*), min(conv_id) FILTER (WHERE update_time = (SELECT min(update_time) FROM zim_query_conversation_list('fr_a', 5))) AS first,
       min(update_time), max(update_time), count(*) FILTER (WHERE conv_type = 2) AS groups
FROM zim_query_conversation_list('fr_a');
-- pages of 500, never more than needed: 1000 rows are 2 pages, 3 rows one of 3
SELECT double('Reset')->'Code' AS reset;
SELECT register('fr_a');
SELECT double('Seed', '{"GenerateConversations": {"UserId": "fr_a", "Count": 1200, "GroupEvery": 3,
                        "StartTime": 1767225600000, "StepMs": 1000}}')->'Code' AS seeded;
SELECT count(*) FROM zim_query_conversation_list('fr_a');
SELECT count(*) FROM zim_query_conversation_list('fr_a', 501);
SELECT conv_id, conv_type, update_time FROM zim_query_conversation_list('fr_a', 3);
SELECT count(*) AS list_requests
FROM jsonb_array_elements(double('State')->'Requests') r WHERE r->>'Action' = 'QueryConversationList';
-- a Next that repeats, or that never reaches 0, ends the paging
SELECT double('Config', '{"NextMode": "stuck"}')->'Code' AS config;
SELECT count(*) FROM zim_query_conversation_list('fr_a', 2000);
SELECT double('Config', '{"NextMode": "endless"}')->'Code' AS config;
SELECT count(*) FROM zim_query_conversation_list('fr_a', 2000);
SELECT double('Config', '{"NextMode": "normal"}')->'Code' AS config;
-- an unregistered user raises
SELECT * FROM zim_try($$SELECT * FROM zim_query_conversation_list('nobody')$$);

-- ---- QueryPeerMsg: newest first, exact ids past 2^53, media decoded --------
SELECT double('Reset')->'Code' AS reset;
SELECT register('fr_a', 'fr_b');
SELECT double('Seed', '{"GenerateMessages": {"From": "fr_a", "To": "fr_b", "Count": 250, "MediaEvery": 5, "RecalledEvery": 7}}')->'Code' AS seeded;
SELECT count(*), max(msg_id), min(msg_id), max(msg_id) > 9007199254740993 AS past_2_53,
       bool_and(msg_seq > 0) AS seqs
FROM zim_query_peer_msg('fr_a', 'fr_b', 1000);
SELECT count(*) FROM zim_query_peer_msg('fr_a', 'fr_b', 1000, true);
SELECT msg_id, msg_seq, sender, msg_type, is_empty, media IS NOT NULL AS has_media
FROM zim_query_peer_msg('fr_a', 'fr_b', 6, true);
SELECT msg_type, count(*) AS messages, count(media) AS decoded,
       (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(min(media::text)::jsonb) k) AS keys,
       bool_and(msg_body LIKE '\%7B%') AS url_encoded
FROM zim_query_peer_msg('fr_a', 'fr_b', 1000) WHERE msg_type BETWEEN 10 AND 14
GROUP BY msg_type ORDER BY msg_type;
SELECT count(*) AS peer_requests
FROM jsonb_array_elements(double('State')->'Requests') r WHERE r->>'Action' = 'QueryPeerMsg';

-- ---- QueryGroupMsg ------------------------------------------------------
SELECT double('Seed', '{"Groups": {"frg": ["fr_a", "fr_b"]},
                        "GenerateMessages": {"From": "fr_b", "GroupId": "frg", "Count": 12}}')->'Code' AS seeded;
SELECT count(*), count(DISTINCT sender) FROM zim_query_group_msg('frg');
SELECT count(*) FROM zim_query_group_msg('frg', 5);
SELECT * FROM zim_try($$SELECT * FROM zim_query_group_msg('no-such-group')$$);

-- ---- every function of the family: the whole-call failures --------------
SELECT double('Reset')->'Code' AS reset;
SELECT register('fr_a', 'fr_b');
SELECT double('Seed', '{"Groups": {"frg": ["fr_a", "fr_b"]}}')->'Code' AS seeded;
SET zim_pin.max_retries = 0;
CREATE TEMP TABLE family_calls (fn text, call text);
INSERT INTO family_calls VALUES
  ('silence', $$SELECT * FROM zim_silence_conv_notification('fr_a', ARRAY['fr_b'], 0, true)$$),
  ('mark', $$SELECT * FROM zim_set_conv_mark('fr_a', ARRAY['fr_b'], 0, 2, true)$$),
  ('delete', $$SELECT * FROM zim_delete_conv('fr_a', ARRAY['fr_b'], 0)$$),
  ('clear', $$SELECT * FROM zim_clear_conversation_unread('fr_a', ARRAY['fr_b'], 0)$$),
  ('list', $$SELECT * FROM zim_query_conversation_list('fr_a')$$),
  ('peer', $$SELECT * FROM zim_query_peer_msg('fr_a', 'fr_b')$$),
  ('group', $$SELECT * FROM zim_query_group_msg('frg')$$);
CREATE TEMP TABLE family_faults (fault text, body jsonb);
INSERT INTO family_faults VALUES
  ('rate limited', '{"Fault": "code", "Code": 660300005}'),
  ('bad signature', '{"Fault": "code", "Code": 100000005}'),
  ('HTTP 500', '{"Fault": "http500"}'),
  ('not JSON', '{"Fault": "nonjson"}'),
  ('not registered', '{"Fault": "code", "Code": 660500002}');
CREATE FUNCTION pg_temp.with_fault(body jsonb, call text, OUT state text, OUT message text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM double('Fault', '{"Fault": "clear"}');
    PERFORM double('Fault', body);
    SELECT t.state, t.message INTO state, message FROM zim_try(call) t;
END $$;
SELECT f.fault, c.fn, t.state, t.message
FROM family_faults f CROSS JOIN family_calls c,
     LATERAL pg_temp.with_fault(f.body, c.call) t
ORDER BY f.fault, c.fn;
RESET zim_pin.max_retries;
