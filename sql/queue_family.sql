--
-- queue_family: the queue for every conversation Action -- the enqueue
-- functions of SilenceConvNotification, SetConvMark, DeleteConv and
-- ClearConversationUnread: input, rollback, the job row, outcomes and
-- failure rows, order per user across Actions, merging per Action, the
-- backlog per Action, replay, privileges (no worker runs here)
--
SELECT double('Reset')->'Code' AS reset;
DELETE FROM zim_pin_job;

-- Run the queue until nothing due is pending, each zim_pin_run_jobs() in
-- a transaction of its own, as pg_cron would call it: a user's next group
-- of another Action is claimed only after the one before it is recorded.
CREATE PROCEDURE qf_run(INOUT finished integer DEFAULT 0) LANGUAGE plpgsql AS $$
BEGIN
    finished := 0;
    FOR i IN 1 .. 30 LOOP
        finished := finished + zim_pin_run_jobs();
        COMMIT;
        EXIT WHEN NOT EXISTS (SELECT 1 FROM zim_pin_job
                              WHERE state = 'pending' AND next_attempt_at <= clock_timestamp());
    END LOOP;
END $$;

-- A user's requests as the double received them, in order of receipt,
-- after the first `after` requests of the log: Action:conversations.
CREATE FUNCTION qf_sent(u text, after bigint DEFAULT 0) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg((r->>'Action') || ':' || coalesce(r->>'Convs', '?'), ' ' ORDER BY n), '')
    FROM jsonb_array_elements(double('State')->'Requests') WITH ORDINALITY AS x(r, n)
    WHERE r->>'User' = u AND n > after $$;

-- The sizes of a user's requests of one Action, largest first (requests
-- of one group go out together, in no fixed order).
CREATE FUNCTION qf_sizes(u text, a text, after bigint DEFAULT 0) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(r->>'Convs', ',' ORDER BY (r->>'Convs')::int DESC), '')
    FROM jsonb_array_elements(double('State')->'Requests') WITH ORDINALITY AS x(r, n)
    WHERE r->>'User' = u AND r->>'Action' = a AND n > after $$;

-- A user's state in the double: mutes, marks, conversations (with unread).
CREATE FUNCTION qf_mutes(u text) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg((m->>'ConvId') || '/' || (m->>'ConvType'), ' ' ORDER BY m->>'ConvId', m->>'ConvType'), '')
    FROM jsonb_array_elements(double('State', jsonb_build_object('UserId', u))->'Mutes') m $$;
CREATE FUNCTION qf_marks(u text) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg((m->>'ConvId') || '/' || (m->>'ConvType') || (m->>'Marks'), ' ' ORDER BY m->>'ConvId', m->>'ConvType'), '')
    FROM jsonb_array_elements(double('State', jsonb_build_object('UserId', u))->'Marks') m $$;
CREATE FUNCTION qf_convs(u text) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg((c->>'ConvId') || '/' || (c->>'ConvType') || ':' || (c->>'Unread'), ' ' ORDER BY c->>'ConvId', c->>'ConvType'), '')
    FROM jsonb_array_elements(double('State', jsonb_build_object('UserId', u))->'Conversations') c $$;
CREATE FUNCTION qf_pins(u text) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg((p->>'ConvId') || '/' || (p->>'ConvType'), ' ' ORDER BY p->>'ConvId', p->>'ConvType'), '')
    FROM jsonb_array_elements(double('State', jsonb_build_object('UserId', u))->'Pins') p $$;

-- A job's last_message with "left to job N" told as the job's place
-- among the jobs still in the table (1 = the oldest).
CREATE FUNCTION qf_message(m text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN m ~ 'job [0-9]+'
        THEN regexp_replace(m, 'job [0-9]+', 'job #' ||
             (SELECT count(*) FROM zim_pin_job WHERE job_id <= substring(m from 'job ([0-9]+)')::bigint))
        ELSE m END $$;

-- ---- input: checked as the synchronous form checks it -------------------
-- Each case runs through the enqueue function and through the synchronous
-- function with the same arguments: the same SQLSTATE, message and detail.
CREATE TEMP TABLE qf_bad (n serial, fn text, args text);
INSERT INTO qf_bad (fn, args) VALUES
    ('zim_silence_conv_notification', $$NULL, ARRAY['a'], 0, true$$),
    ('zim_silence_conv_notification', $$'qf_u', ARRAY['a'], ARRAY[0], NULL$$),
    ('zim_silence_conv_notification', $$'qf_u', ARRAY['a', NULL], ARRAY[0, 0], true$$),
    ('zim_silence_conv_notification', $$'qf_u', ARRAY['a', 'b'], ARRAY[0, NULL], false$$),
    ('zim_silence_conv_notification', $$'qf_u', ARRAY['a'], 1, true$$),
    ('zim_silence_conv_notification', $$'qf_u', ARRAY['a', 'b'], ARRAY[0], true$$),
    ('zim_silence_conv_notification', $$'qf_u', ARRAY['a'], NULL::integer, true$$),
    ('zim_set_conv_mark', $$'qf_u', ARRAY['a'], 0, 0, true$$),
    ('zim_set_conv_mark', $$'qf_u', ARRAY['a'], ARRAY[2], 31, true$$),
    ('zim_set_conv_mark', $$'qf_u', ARRAY['a'], 0, 5, NULL$$),
    ('zim_set_conv_mark', $$'qf_u', ARRAY['a'], ARRAY[0], NULL, true$$),
    ('zim_set_conv_mark', $$'', ARRAY['a'], ARRAY[0], 5, true$$),
    ('zim_set_conv_mark', $$'qf_u', ARRAY[repeat('é', 17)], 2, 1, true$$),
    ('zim_set_conv_mark', $$'qf_u', ARRAY['a'], ARRAY[-1], 1, false$$),
    ('zim_delete_conv', $$'qf/u', ARRAY['a'], 0$$),
    ('zim_delete_conv', $$'qf_u', ARRAY[''], ARRAY[0]$$),
    ('zim_delete_conv', $$'qf_u', ARRAY[repeat('x', 33)], 2$$),
    ('zim_delete_conv', $$'qf_u', ARRAY[['a'], ['b']], ARRAY[[0], [0]]$$),
    ('zim_delete_conv', $$'qf_u', ARRAY['a'], ARRAY[3]$$),
    ('zim_delete_conv', $$repeat('u', 33), ARRAY['a'], 0$$),
    ('zim_clear_conversation_unread', $$'qf_u', NULL, 0$$),
    ('zim_clear_conversation_unread', $$'qf_u', ARRAY['a'], NULL::integer[]$$),
    ('zim_clear_conversation_unread', $$'qf_u', ARRAY['a', 'b'], ARRAY[0, 2, 0]$$),
    ('zim_clear_conversation_unread', $$'qf_u', ARRAY['a', NULL], 2$$),
    ('zim_clear_conversation_unread', $$NULL, ARRAY['a'], ARRAY[0]$$),
    ('zim_clear_conversation_unread', $$'qf_u', ARRAY['a'], 7$$);
SELECT b.n, b.fn || '_enqueue' AS function, e.state, e.message, e.detail,
       (e.state, e.message, e.detail, e.hint) IS NOT DISTINCT FROM (s.state, s.message, s.detail, s.hint) AS as_sync
FROM qf_bad b,
     LATERAL zim_try(format('SELECT %s_enqueue(%s)', b.fn, b.args)) e,
     LATERAL zim_try(format('SELECT * FROM %s(%s)', b.fn, b.args)) s
ORDER BY b.n;
-- nothing was stored, nothing was sent (by either form)
SELECT count(*) AS jobs FROM zim_pin_job;
SELECT double_requests() AS requests_sent;

-- ---- rollback: a job whose transaction rolls back never exists ----------
BEGIN;
SELECT count(*) FILTER (WHERE id > 0) AS enqueued
FROM unnest(ARRAY[
    zim_silence_conv_notification_enqueue('qf_u', ARRAY['a'], ARRAY[0], true),
    zim_silence_conv_notification_enqueue('qf_u', ARRAY['a'], 0, false),
    zim_set_conv_mark_enqueue('qf_u', ARRAY['a'], ARRAY[2], 3, true),
    zim_set_conv_mark_enqueue('qf_u', ARRAY['a'], 2, 3, false),
    zim_delete_conv_enqueue('qf_u', ARRAY['a'], ARRAY[0]),
    zim_delete_conv_enqueue('qf_u', ARRAY['a'], 0),
    zim_clear_conversation_unread_enqueue('qf_u', ARRAY['a'], ARRAY[0]),
    zim_clear_conversation_unread_enqueue('qf_u', ARRAY['a'], 0)]) id;
SELECT action, count(*) FROM zim_pin_job GROUP BY 1 ORDER BY 1;
-- zim_pin_run_jobs never sends its own transaction's jobs
SELECT zim_pin_run_jobs() AS finished;
ROLLBACK;
SELECT count(*) AS jobs FROM zim_pin_job;
SELECT double_requests() AS requests_sent;
-- a savepoint rolled back takes its job with it; the rest commits
BEGIN;
SELECT zim_delete_conv_enqueue('qf_u', ARRAY['kept'], 0) > 0 AS enqueued;
SAVEPOINT s;
SELECT zim_set_conv_mark_enqueue('qf_u', ARRAY['dropped'], 0, 1, true) > 0 AS enqueued;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT action, conv_ids, state FROM zim_pin_job;
SELECT double_requests() AS requests_sent;
DELETE FROM zim_pin_job;

-- ---- the job rows, and their outcomes -----------------------------------
-- A delete of a conversation the user does not have is Code 0 at ZIM (the
-- state asked for holds: "never" below); a Code that concerns only the one
-- conversation (660800002, injected for "gone"; the clear of "nowhere") is
-- a failure row of a done job, whose last_code and last_message are that
-- request's, as for any request answered with a Code and its failures.
SELECT register('qs1', 'qs2', 'qm1', 'qm2', 'qd1', 'qd2', 'qc1', 'qc2', 'qb') AS registered;
SELECT double('Seed', '{"Groups": {"qg1": ["qs1", "qm1", "qd1", "qc1"]},
  "Conversations": [{"UserId": "qd1", "ConvId": "qb", "ConvType": 0},
                    {"UserId": "qd1", "ConvId": "qg1", "ConvType": 2},
                    {"UserId": "qc1", "ConvId": "qb", "ConvType": 0, "Unread": 5},
                    {"UserId": "qc1", "ConvId": "qg1", "ConvType": 2, "Unread": 3},
                    {"UserId": "qc2", "ConvId": "qb", "ConvType": 0, "Unread": 2}]}')->'Code' AS seeded;
SELECT double('Fault', '{"Fault": "code", "Code": 660800002, "Message": "no such conversation", "Action": "DeleteConv", "Match": "gone"}')->'Code' AS fault;
CREATE TEMP TABLE qf_ids (label text, job_id bigint);
INSERT INTO qf_ids VALUES
    ('silence[]', zim_silence_conv_notification_enqueue('qs1', ARRAY['qb', 'qg1', 'qg_none', 'ghost'], ARRAY[0, 2, 2, 0], true)),
    ('silence', zim_silence_conv_notification_enqueue('qs2', ARRAY['qb', 'ghost'], 0, false)),
    ('mark[]', zim_set_conv_mark_enqueue('qm1', ARRAY['qb', 'qg1'], ARRAY[0, 2], 4, true)),
    ('mark', zim_set_conv_mark_enqueue('qm2', ARRAY['qg1', 'qg2'], 2, 30, false)),
    ('delete[]', zim_delete_conv_enqueue('qd1', ARRAY['qb', 'qg1', 'never'], ARRAY[0, 2, 0])),
    ('delete', zim_delete_conv_enqueue('qd2', ARRAY['gone', 'qb'], 0)),
    ('clear[]', zim_clear_conversation_unread_enqueue('qc1', ARRAY['qb', 'qg1', 'nowhere'], ARRAY[0, 2, 0])),
    ('clear', zim_clear_conversation_unread_enqueue('qc2', ARRAY['qb'], 0)),
    ('silence nobody', zim_silence_conv_notification_enqueue('qf_nobody', ARRAY['x', 'y'], 2, true)),
    ('mark nobody', zim_set_conv_mark_enqueue('qf_nobody', ARRAY['x', 'y'], 2, 9, true)),
    ('delete nobody', zim_delete_conv_enqueue('qf_nobody', ARRAY['x', 'y'], 2)),
    ('clear nobody', zim_clear_conversation_unread_enqueue('qf_nobody', ARRAY['x', 'y'], 2));
-- each function returned its job's id; the Action and its intent are in
-- the Action's own columns, the others NULL
SELECT count(*) AS jobs, count(*) FILTER (WHERE i.job_id IS NOT NULL) AS returned_ids FROM zim_pin_job j LEFT JOIN qf_ids i USING (job_id);
SELECT i.label, j.from_user_id, j.action, j.pinned, j.silenced, j.mark, j.marked, j.conv_ids, j.conv_types,
       j.state, j.attempts, j.last_code, j.finished_at IS NULL AS unfinished
FROM qf_ids i JOIN zim_pin_job j USING (job_id) ORDER BY j.job_id;
SELECT double_requests() AS requests_before;
CALL qf_run();
SELECT i.label, j.state, j.attempts, j.last_code, qf_message(j.last_message) AS last_message,
       j.finished_at IS NOT NULL AS has_finished_at, j.claimed_by IS NULL AS unclaimed
FROM qf_ids i JOIN zim_pin_job j USING (job_id) ORDER BY j.job_id;
-- failure rows: each with the type it asked for, and its job's Action and intent
SELECT i.label, f.conv_id, f.conv_type, f.sub_code, f.sub_message, f.action, f.pinned, f.silenced, f.mark, f.marked, f.job_state
FROM zim_pin_failure f JOIN qf_ids i USING (job_id)
ORDER BY f.job_id, f.conv_id, f.conv_type;
-- what the double now holds
SELECT qf_mutes('qs1') AS qs1_mutes, qf_mutes('qs2') AS qs2_mutes, qf_marks('qm1') AS qm1_marks, qf_marks('qm2') AS qm2_marks;
SELECT qf_convs('qd1') AS qd1_convs, qf_convs('qc1') AS qc1_convs, qf_convs('qc2') AS qc2_convs;
-- requests per Action: mutes in requests of one type, a delete and a clear
-- per conversation; the permanent failures were not retried
SELECT r->>'Action' AS action, r->>'Method' AS method, count(*) AS requests, sum((r->>'Convs')::int) AS convs
FROM jsonb_array_elements(double('State')->'Requests') r
WHERE r->>'Action' <> 'UserRegister'
GROUP BY 1, 2 ORDER BY 1;
-- one user's jobs of four Actions went out one Action after the other
SELECT qf_sent('qf_nobody') AS qf_nobody_sent;
DELETE FROM zim_pin_job;

-- ---- merging: SilenceConvNotification -----------------------------------
-- one user's 25 one-conversation mute jobs: 3 requests of one type
SELECT double('Reset')->'Code' AS reset;
SELECT register(VARIADIC ARRAY['qmu'] || ARRAY(SELECT 'qp' || i FROM generate_series(1, 25) i)) AS registered;
SELECT count(zim_silence_conv_notification_enqueue('qmu', ARRAY['qp' || i], 0, true)) AS enqueued
FROM generate_series(1, 25) i;
CALL qf_run();
SELECT qf_sizes('qmu', 'SilenceConvNotification') AS request_sizes;
SELECT state, attempts, last_code, last_message, count(*) FROM zim_pin_job GROUP BY 1, 2, 3, 4;
SELECT jsonb_array_length(double('State', '{"UserId": "qmu"}')->'Mutes') AS mutes;
SELECT count(*) AS failure_rows FROM zim_pin_job_failure;
DELETE FROM zim_pin_job;

-- per conversation the last job wins, unmutes go before mutes; muting
-- what is muted (660800051) is no row, even when it is all a request holds
SELECT register('qma', 'ma', 'mb', 'mc') AS registered;
SELECT * FROM zim_silence_conv_notification('qma', ARRAY['ma', 'mc'], 0, true);
SELECT register('qal') AS registered;
SELECT * FROM zim_silence_conv_notification('qal', ARRAY['mc'], 0, true);
SELECT double_requests() AS base \gset
SELECT zim_silence_conv_notification_enqueue('qma', ARRAY['ma'], 0, true) > 0 AS enqueued;
SELECT zim_silence_conv_notification_enqueue('qma', ARRAY['ma'], 0, false) > 0 AS enqueued;
SELECT zim_silence_conv_notification_enqueue('qma', ARRAY['mb'], 0, true) > 0 AS enqueued;
SELECT zim_silence_conv_notification_enqueue('qma', ARRAY['mc'], 0, true) > 0 AS enqueued;
SELECT zim_silence_conv_notification_enqueue('qal', ARRAY['mc'], 0, true) > 0 AS enqueued;
CALL qf_run();
SELECT qf_sent('qma', :base) AS qma_sent, qf_sent('qal', :base) AS qal_sent;
SELECT from_user_id, conv_ids, silenced, state, attempts, last_code, qf_message(last_message) AS last_message
FROM zim_pin_job ORDER BY job_id;
SELECT count(*) AS failure_rows FROM zim_pin_job_failure;
SELECT qf_mutes('qma') AS qma_mutes, qf_mutes('qal') AS qal_mutes;
DELETE FROM zim_pin_job;

-- ---- merging: SetConvMark -----------------------------------------------
-- 100 one-conversation jobs of one mark (different conversations): 1 request
SELECT double('Reset')->'Code' AS reset;
SELECT register('qmk') AS registered;
SELECT count(zim_set_conv_mark_enqueue('qmk', ARRAY['mg' || i], 2, 7, true)) AS enqueued
FROM generate_series(1, 100) i;
CALL qf_run();
SELECT qf_sent('qmk') AS qmk_sent;
SELECT state, attempts, last_code, last_message, count(*) FROM zim_pin_job GROUP BY 1, 2, 3, 4;
SELECT count(*) AS marked, bool_and(m->'Marks' = '[7]') AS all_mark_7
FROM jsonb_array_elements(double('State', '{"UserId": "qmk"}')->'Marks') m;
DELETE FROM zim_pin_job;

-- per (conversation, mark) the last job wins; cancels go before sets; a
-- request carries each conversation once a map, so two marks of one
-- conversation are two requests: set 3 and 5 on mx and 3 on my, cancel 3
-- on mz and mv, set then cancel 4 on mw = one request of the three cancels
-- (mz, mv, mw), then two of sets (mx and my, then mx)
SELECT double('Reset')->'Code' AS reset;
SELECT register('qmk') AS registered;
SELECT * FROM zim_set_conv_mark('qmk', ARRAY['mz', 'mv'], 2, 3, true);
SELECT * FROM zim_set_conv_mark('qmk', ARRAY['mw'], 2, 4, true);
SELECT double_requests() AS base \gset
SELECT zim_set_conv_mark_enqueue('qmk', ARRAY['mx'], 2, 3, true) > 0 AS enqueued;
SELECT zim_set_conv_mark_enqueue('qmk', ARRAY['mx'], 2, 5, true) > 0 AS enqueued;
SELECT zim_set_conv_mark_enqueue('qmk', ARRAY['my'], 2, 3, true) > 0 AS enqueued;
SELECT zim_set_conv_mark_enqueue('qmk', ARRAY['mz', 'mv'], 2, 3, false) > 0 AS enqueued;
SELECT zim_set_conv_mark_enqueue('qmk', ARRAY['mw'], 2, 4, true) > 0 AS enqueued;
SELECT zim_set_conv_mark_enqueue('qmk', ARRAY['mw'], 2, 4, false) > 0 AS enqueued;
CALL qf_run();
SELECT qf_sizes('qmk', 'SetConvMark', :base) AS request_sizes;
-- the cancels' request is the first
SELECT split_part(qf_sent('qmk', :base), ' ', 1) AS first_request;
SELECT conv_ids, mark, marked, state, last_code, qf_message(last_message) AS last_message
FROM zim_pin_job ORDER BY job_id;
SELECT qf_marks('qmk') AS qmk_marks;
DELETE FROM zim_pin_job;

-- ---- merging: DeleteConv and ClearConversationUnread --------------------
-- the same conversation deleted by 3 jobs is 1 request; the earlier jobs
-- leave it to the last; likewise cleared by 2 jobs
SELECT double('Reset')->'Code' AS reset;
SELECT register('qdd', 'dx', 'dy') AS registered;
SELECT double('Seed', '{"Conversations": [{"UserId": "qdd", "ConvId": "dx", "ConvType": 0},
                                          {"UserId": "qdd", "ConvId": "dy", "ConvType": 0, "Unread": 4}]}')->'Code' AS seeded;
SELECT count(zim_delete_conv_enqueue('qdd', ARRAY['dx'], 0)) AS enqueued FROM generate_series(1, 3);
SELECT count(zim_clear_conversation_unread_enqueue('qdd', ARRAY['dy'], ARRAY[0])) AS enqueued FROM generate_series(1, 2);
CALL qf_run();
SELECT qf_sent('qdd') AS qdd_sent;
SELECT action, conv_ids, state, attempts, last_code, qf_message(last_message) AS last_message
FROM zim_pin_job ORDER BY job_id;
SELECT qf_convs('qdd') AS qdd_convs;
DELETE FROM zim_pin_job;

-- ---- merging inside one job, and requests at each Action's limits -------
-- a conversation named twice in one job is sent once; 11 peers and a group
-- of one mute job are 2 + 1 requests; 150 + 60 groups of one mark in two
-- jobs are 3 requests of at most 100
SELECT double('Reset')->'Code' AS reset;
SELECT register(VARIADIC ARRAY['qin'] || ARRAY(SELECT 'ip' || i FROM generate_series(1, 11) i)) AS registered;
SELECT double('Seed', '{"Groups": {"ig": ["qin"]}}')->'Code' AS seeded;
SELECT zim_set_conv_mark_enqueue('qin', ARRAY['d1', 'd1'], 2, 5, true) > 0 AS enqueued;
CALL qf_run();
SELECT zim_silence_conv_notification_enqueue('qin', ARRAY['ip1', 'ip1'], 0, true) > 0 AS enqueued;
CALL qf_run();
SELECT zim_delete_conv_enqueue('qin', ARRAY['dd', 'dd'], ARRAY[0, 0]) > 0 AS enqueued;
CALL qf_run();
SELECT qf_sent('qin') AS qin_sent;
SELECT action, state, last_code, last_message FROM zim_pin_job ORDER BY job_id;
SELECT count(*) AS failure_rows FROM zim_pin_job_failure;
DELETE FROM zim_pin_job;
SELECT double_requests() AS base \gset
SELECT zim_silence_conv_notification_enqueue('qin',
         ARRAY(SELECT 'ip' || i FROM generate_series(1, 11) i) || ARRAY['ig'],
         array_fill(0, ARRAY[11]) || ARRAY[2], true) > 0 AS enqueued;
CALL qf_run();
SELECT qf_sizes('qin', 'SilenceConvNotification', :base) AS mute_sizes;
SELECT zim_set_conv_mark_enqueue('qin', ARRAY(SELECT 'ig' || i FROM generate_series(1, 150) i), 2, 8, true) > 0 AS enqueued;
SELECT zim_set_conv_mark_enqueue('qin', ARRAY(SELECT 'ig' || i FROM generate_series(151, 210) i), 2, 8, true) > 0 AS enqueued;
CALL qf_run();
SELECT qf_sizes('qin', 'SetConvMark', :base) AS mark_sizes;
SELECT action, state, last_code, last_message FROM zim_pin_job ORDER BY job_id;
SELECT count(*) AS failure_rows FROM zim_pin_job_failure;
SELECT qf_mutes('qin') = (SELECT string_agg(c, ' ' ORDER BY c) FROM unnest(ARRAY['ig/2'] || ARRAY(SELECT 'ip' || i || '/0' FROM generate_series(1, 11) i)) c) AS all_muted,
       jsonb_array_length(double('State', '{"UserId": "qin"}')->'Marks') AS marked;
DELETE FROM zim_pin_job;

-- a stored job of a new Action that cannot be sent (inserted by hand)
-- fails alone at its first attempt, unsent; the job behind it goes on
INSERT INTO zim_pin_job (from_user_id, conv_ids, conv_types, action, mark, marked)
VALUES ('qin', ARRAY['a'], ARRAY[5], 'SetConvMark', 3, true);
INSERT INTO zim_pin_job (from_user_id, conv_ids, conv_types, action, silenced)
VALUES ('qin', ARRAY['ip1', NULL], ARRAY[0, 0], 'SilenceConvNotification', false);
INSERT INTO zim_pin_job (from_user_id, conv_ids, conv_types, action)
VALUES ('qin', ARRAY['ip2'], ARRAY[0], 'DeleteConv');
SELECT state, message FROM zim_try($$INSERT INTO zim_pin_job (from_user_id, conv_ids, conv_types, action, mark, marked) VALUES ('qin', '{a}', '{0}', 'SetConvMark', 31, true)$$);
SELECT state, message FROM zim_try($$INSERT INTO zim_pin_job (from_user_id, conv_ids, conv_types, action, pinned) VALUES ('qin', '{a}', '{0}', 'DeleteConv', true)$$);
SELECT double_requests() AS base \gset
CALL qf_run();
SELECT action, state, attempts, last_message FROM zim_pin_job ORDER BY job_id;
SELECT action, conv_id, conv_type, sub_code, sub_message FROM zim_pin_failure ORDER BY job_id, conv_id;
SELECT qf_sent('qin', :base) AS qin_sent;
DELETE FROM zim_pin_job;

-- ---- order per user across Actions ---------------------------------------
-- pin, mute, pin, mark, delete, clear of one user: six sends in job order
-- (the pins are not merged over the mute); the clear comes after the
-- delete, so the conversation is gone and the clear is a failure row
SELECT double('Reset')->'Code' AS reset;
SELECT register('qo') AS registered;
SELECT double('Seed', '{"Groups": {"qgo": ["qo"]}}')->'Code' AS seeded;
SELECT zim_conv_pinned_enqueue('qo', ARRAY['qgo'], 2, true) > 0 AS enqueued;
SELECT zim_silence_conv_notification_enqueue('qo', ARRAY['qgo'], 2, true) > 0 AS enqueued;
SELECT zim_conv_pinned_enqueue('qo', ARRAY['qgo2'], 2, true) > 0 AS enqueued;
SELECT zim_set_conv_mark_enqueue('qo', ARRAY['qgo'], 2, 2, true) > 0 AS enqueued;
SELECT zim_delete_conv_enqueue('qo', ARRAY['qgo'], 2) > 0 AS enqueued;
SELECT zim_clear_conversation_unread_enqueue('qo', ARRAY['qgo'], 2) > 0 AS enqueued;
CALL qf_run();
SELECT qf_sent('qo') AS qo_sent;
SELECT action, state, attempts, last_code, last_message FROM zim_pin_job ORDER BY job_id;
SELECT action, conv_id, conv_type, sub_code, sub_message FROM zim_pin_failure ORDER BY job_id;
SELECT qf_pins('qo') AS pins, qf_mutes('qo') AS mutes, qf_marks('qo') AS marks, qf_convs('qo') AS convs;
DELETE FROM zim_pin_job;

-- a transient failure of a delete: the job is retried later, with its
-- attempt counted; the user's mute behind it waits, unsent, its attempt
-- not counted, until the delete has its answer
SELECT double('Reset')->'Code' AS reset;
SELECT register('qtr', 'tp') AS registered;
SELECT double('Fault', '{"Fault": "http503", "Count": 1, "Action": "DeleteConv", "Match": "qtr"}')->'Code' AS fault;
SELECT zim_delete_conv_enqueue('qtr', ARRAY['t1'], 0) > 0 AS enqueued;
SELECT zim_silence_conv_notification_enqueue('qtr', ARRAY['tp'], 0, true) > 0 AS enqueued;
SELECT zim_pin_run_jobs() AS finished;
SELECT zim_pin_run_jobs() AS finished_while_the_delete_backs_off;
SELECT action, state, attempts, last_code, last_message, next_attempt_at > clock_timestamp() AS backing_off,
       claimed_by IS NULL AS unclaimed
FROM zim_pin_job ORDER BY job_id;
SELECT qf_sent('qtr') AS qtr_sent;
UPDATE zim_pin_job SET next_attempt_at = clock_timestamp() WHERE action = 'DeleteConv';
CALL qf_run();
SELECT action, state, attempts, last_code, last_message FROM zim_pin_job ORDER BY job_id;
SELECT qf_sent('qtr') AS qtr_sent, qf_mutes('qtr') AS qtr_mutes;
DELETE FROM zim_pin_job;

-- ---- the backlog per Action ----------------------------------------------
-- requests are counted per job at the Action's size: ConvPinned 20,
-- SilenceConvNotification 10, SetConvMark 100, the others 1
SELECT double_requests() AS base \gset
SELECT zim_conv_pinned_enqueue('qbk', ARRAY(SELECT 'p' || i FROM generate_series(1, 25) i), 2, true) > 0 AS enqueued;
SELECT zim_conv_pinned_enqueue('qbk', ARRAY(SELECT 'p' || i FROM generate_series(1, 5) i), 2, false) > 0 AS enqueued;
SELECT zim_silence_conv_notification_enqueue('qbk', ARRAY(SELECT 's' || i FROM generate_series(1, 25) i), 0, true) > 0 AS enqueued;
SELECT zim_silence_conv_notification_enqueue('qbk', ARRAY['s1'], 2, false) > 0 AS enqueued;
SELECT zim_set_conv_mark_enqueue('qbk', ARRAY(SELECT 'm' || i FROM generate_series(1, 150) i), 2, 1, true) > 0 AS enqueued;
SELECT count(zim_delete_conv_enqueue('qbk', ARRAY['d1', 'd2'], 0)) AS enqueued FROM generate_series(1, 3);
SELECT zim_clear_conversation_unread_enqueue('qbk', ARRAY['c1', 'c2', 'c3'], ARRAY[0, 2, 0]) > 0 AS enqueued;
SELECT action, pending, oldest_pending_age > '0'::interval AS has_age, pending_requests, expected_drain_time
FROM zim_pin_backlog_by_action ORDER BY action;
SELECT pending, oldest_pending_age > '0'::interval AS has_age, pending_requests, expected_drain_time
FROM zim_pin_backlog;
SELECT double_requests() - :base AS requests_sent;
DELETE FROM zim_pin_job;
SELECT count(*) AS actions FROM zim_pin_backlog_by_action;
SELECT pending, oldest_pending_age, pending_requests, expected_drain_time FROM zim_pin_backlog;

-- ---- replay: zim_pin_retry_failed, per Action -----------------------------
-- a mute job and a mark job of a user not yet registered fail; later jobs
-- unmute rb (a mute job names it), pin rc (only a pin job names it), set
-- mark 7 on ra (another mark value) and cancel mark 6 on rb
SELECT double('Reset')->'Code' AS reset;
SELECT double('Seed', '{"Groups": {"ra": ["qr_u"], "rb": ["qr_u"], "rc": ["qr_u"]}}')->'Code' AS seeded;
SELECT zim_silence_conv_notification_enqueue('qr_u', ARRAY['ra', 'rb', 'rc'], 2, true) > 0 AS enqueued;
SELECT zim_set_conv_mark_enqueue('qr_u', ARRAY['ra', 'rb'], ARRAY[2, 2], 6, true) > 0 AS enqueued;
CALL qf_run();
SELECT action, state, last_code, count(f.*) AS failure_rows
FROM zim_pin_job j LEFT JOIN zim_pin_job_failure f USING (job_id)
GROUP BY j.job_id, 1, 2, 3 ORDER BY j.job_id;
SELECT zim_silence_conv_notification_enqueue('qr_u', ARRAY['rb'], 2, false) > 0 AS enqueued;
SELECT zim_conv_pinned_enqueue('qr_u', ARRAY['rc'], 2, true) > 0 AS enqueued;
SELECT zim_set_conv_mark_enqueue('qr_u', ARRAY['ra'], 2, 7, true) > 0 AS enqueued;
SELECT zim_set_conv_mark_enqueue('qr_u', ARRAY['rb'], 2, 6, false) > 0 AS enqueued;
SELECT register('qr_u') AS registered;
SELECT count(*) AS replayed FROM zim_pin_retry_failed(now() - interval '1 hour', 'qr_u');
-- the failed mute is replayed as a mute of ra and rc; the failed mark as
-- mark 6 of ra; each old job says which job replays it
SELECT action, pinned, silenced, mark, marked, conv_ids, conv_types, state
FROM zim_pin_job ORDER BY job_id;
SELECT o.action, o.retried_at IS NOT NULL AS retried, n.action AS replayed_by, n.conv_ids
FROM zim_pin_job o JOIN zim_pin_job n ON n.job_id = o.retried_by ORDER BY o.job_id;
SELECT count(*) AS replayed_again FROM zim_pin_retry_failed(now() - interval '1 hour', 'qr_u');
CALL qf_run();
SELECT action, state, last_code FROM zim_pin_job WHERE retried_at IS NULL ORDER BY job_id;
SELECT qf_mutes('qr_u') AS mutes, qf_pins('qr_u') AS pins, qf_marks('qr_u') AS marks;
DELETE FROM zim_pin_job;

-- ---- privileges -------------------------------------------------------
-- EXECUTE on every enqueue function is revoked from PUBLIC; they are
-- SECURITY DEFINER with a pinned search_path
SELECT p.oid::regprocedure AS function, has_function_privilege('public', p.oid, 'EXECUTE') AS public_can_execute,
       p.prosecdef AS security_definer, p.proconfig
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'zim_pin'
WHERE p.proname LIKE '%\_enqueue' OR p.proname = 'zim_pin_retry_failed'
ORDER BY 1::text;
SELECT has_table_privilege('public', 'zim_pin_backlog_by_action', 'SELECT') AS public_reads_backlog_by_action;
CREATE ROLE zim_qf_app NOLOGIN;
SET ROLE zim_qf_app;
SELECT state FROM zim_try($$SELECT zim_silence_conv_notification_enqueue('qf_u', ARRAY['a'], 0, true)$$);
SELECT state FROM zim_try($$SELECT zim_set_conv_mark_enqueue('qf_u', ARRAY['a'], 0, 1, true)$$);
SELECT state FROM zim_try($$SELECT zim_delete_conv_enqueue('qf_u', ARRAY['a'], ARRAY[0])$$);
SELECT state FROM zim_try($$SELECT zim_clear_conversation_unread_enqueue('qf_u', ARRAY['a'], 0)$$);
SELECT state FROM zim_try($$SELECT * FROM zim_pin_backlog_by_action$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION zim_delete_conv_enqueue(text, text[], integer[]) TO zim_qf_app;
SET ROLE zim_qf_app;
-- granted one form, the role enqueues through it (the table stays closed)
SELECT zim_delete_conv_enqueue('qf_u', ARRAY['a'], ARRAY[0]) > 0 AS enqueued;
SELECT state FROM zim_try($$SELECT zim_delete_conv_enqueue('qf_u', ARRAY['a'], 0)$$);
SELECT state FROM zim_try($$SELECT count(*) FROM zim_pin_job$$);
RESET ROLE;
SELECT from_user_id, action, conv_ids FROM zim_pin_job;
REVOKE ALL ON FUNCTION zim_delete_conv_enqueue(text, text[], integer[]) FROM zim_qf_app;
DROP ROLE zim_qf_app;
DELETE FROM zim_pin_job;

DROP PROCEDURE qf_run(integer);
DROP FUNCTION qf_sent(text, bigint), qf_sizes(text, text, bigint), qf_mutes(text),
    qf_marks(text), qf_convs(text), qf_pins(text), qf_message(text);
SELECT double('Reset')->'Code' AS reset;
